"""Route matching: (HTTP method, raw path) → the binding and its decoded variables, and the
query string decoded as Go's ``url.ParseQuery`` does. Pure: no I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from extauthz.httpapi.routes import Binding, RequestError, Route, all_bindings
from extauthz.model import Reason

JSON_MEDIA_TYPES = frozenset({"application/json", "application/json+no-payload-shorthand"})
_PRINTABLE_ASCII = re.compile(r"[!-\"$-~]*")  # printable ASCII but '#' (and no space)
_HEX = frozenset(b"0123456789abcdefABCDEF")
_MAX_QUERY_PAIRS = 1000


def ambiguous(a: Binding, b: Binding) -> bool:
    """Whether some request could match both bindings."""
    if a.verb != b.verb or len(a.segments) != len(b.segments):
        return False
    return all(x is None or y is None or x == y for x, y in zip(a.segments, b.segments,
                                                                strict=True))


class Router:
    """(HTTP method, path) → the binding and its variables. Build once; ``match`` is pure."""

    def __init__(self, bindings: Sequence[Binding]):
        self.bindings = tuple(bindings)
        self._by_shape: dict[tuple[str, int, str], list[Binding]] = {}
        for b in self.bindings:
            first = b.segments[0]
            assert first is not None
            self._by_shape.setdefault((b.verb, len(b.segments), first), []).append(b)
        self.first_segments = frozenset(b.segments[0] for b in self.bindings
                                        if b.segments[0] is not None)

    def looks_like_http_api(self, raw: str) -> bool:
        """Whether Envoy routes this path to the HTTP API (its first raw segment is one of the
        bindings' first literals)."""
        first = raw.partition("?")[0][1:].split("/", 1)[0]
        return first in self.first_segments

    def match(self, verb: str, raw: str) -> Route | None:
        """The route for a request, or None (no binding: deny as an unknown method).

        Raises:
            RequestError: the path or query cannot be decoded the way the server decodes it.
        """
        path, _, query = raw.partition("?")
        if not path.startswith("/") or not _PRINTABLE_ASCII.fullmatch(raw):
            return None  # '#', spaces, controls, raw non-ASCII: no client sends these
        raw_segments = path[1:].split("/")
        if raw_segments[0] not in self.first_segments:
            return None
        if any(s in ("", ".", "..") for s in raw_segments):
            return None  # Go's ServeMux redirects these (301) and acts on nothing
        segments = _unescape(path, "path", reason=Reason.UNKNOWN_METHOD).split("/")[1:]
        for b in self._by_shape.get((verb, len(segments), segments[0]), ()):
            params: list[tuple[tuple[str, ...], str]] = []
            variables = iter(b.variables)
            for want, got in zip(b.segments, segments, strict=True):
                if want is None:
                    params.append((next(variables), got))
                elif want != got:
                    break
            else:
                return Route(b, tuple(params), query)
        return None

@functools.cache
def router() -> Router:
    """The router over every HTTP binding of the installed temporalio. Built once per process.

    Raises:
        UnsupportedBindingError: a binding this package cannot reproduce exactly.
    """
    return Router(all_bindings())


# ---- decoding -------------------------------------------------------------------------------


def _unescape(text: str, what: str, *, plus: bool = False,
              reason: Reason = Reason.MALFORMED_BODY) -> str:
    """Go's ``url.PathUnescape`` (``plus``: ``QueryUnescape``): every ``%XX`` decoded, a bad
    escape is an error; the result must be UTF-8 (Temporal's names are)."""
    if "%" not in text and not (plus and "+" in text):
        return text
    data = text.encode("utf-8")
    out = bytearray()
    i = 0
    while i < len(data):
        c = data[i]
        if c == 0x25:  # %
            if i + 2 >= len(data) or data[i + 1] not in _HEX or data[i + 2] not in _HEX:
                raise RequestError(reason, f"bad percent-escape in the {what}")
            out.append(int(data[i + 1:i + 3], 16))
            i += 3
        elif plus and c == 0x2B:
            out.append(0x20)
            i += 1
        else:
            out.append(c)
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(reason, f"the {what} decodes to bytes that are not UTF-8") from None


def parse_query(query: str) -> list[tuple[str, list[str]]]:
    """Go's ``url.ParseQuery``: keys in first-seen order with their values; any error (a ``;``,
    a bad escape) refuses the request, as the server does (400)."""
    values: dict[str, list[str]] = {}
    pairs = 0
    for piece in query.split("&"):
        if ";" in piece:
            raise RequestError(Reason.MALFORMED_BODY, "a ';' in the query string (use '&')")
        if not piece:
            continue
        pairs += 1
        if pairs > _MAX_QUERY_PAIRS:
            raise RequestError(Reason.BODY_TOO_LARGE,
                               f"more than {_MAX_QUERY_PAIRS} query parameters")
        key, _, value = piece.partition("=")
        values.setdefault(_unescape(key, "query", plus=True), []).append(
            _unescape(value, "query", plus=True))
    return list(values.items())

def media_type(content_type: str) -> str:
    """The media type of a content-type header, lower-cased, without parameters."""
    return content_type.split(";", 1)[0].strip().lower()
