"""Phase 1, attributes: what the request is, read without a token check or a body scan.

The method (an exact gRPC path, or a route of Temporal's HTTP API mapped to its gRPC method),
the refusals that need neither token nor body (unknown method or route, not a POST, a
truncated body, the wrong content-type), the health check's allow, and the one bearer token.
Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import NamedTuple

from extauthz import httpapi, methods
from extauthz.model import (
    STATUS_UNAUTHENTICATED,
    CheckInput,
    Decision,
    Method,
    PeerEvidence,
    Reason,
    Target,
)
from extauthz.model import quote as q
from extauthz.peers import PeerSettings

PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"
# the Temporal Web UI forwards the user's ID token here (the access token is in authorization)
EXTRAS_HEADER = "authorization-extras"
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9_\-.=]+)")
_MAX_PATH_IN_MESSAGE = 160
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,20}/[A-Za-z0-9!#$&^_.+-]{1,27}")


class Call(NamedTuple):
    """A request to judge: its method is known, its shape passed, it carries one token.

    A named tuple, not a frozen dataclass: one is built per check, and a frozen dataclass's
    ``__init__`` costs about 0.25 µs more (a few per cent of a cached check).
    """

    method: Method
    entry: methods.MethodEntry
    token: str
    # the HTTP API route for a call of Temporal's HTTP API; None for a gRPC call
    route: httpapi.Route | None = None
    # the verified client certificate (peer_identity on); ``token`` is "" when it is the only
    # credential
    peer: PeerEvidence | None = None


def read(req: CheckInput, router: httpapi.Router | None, max_body_bytes: int,
         peers: PeerSettings | None = None) -> Call | Decision:
    """The call to judge, or the decision that ends the check before authentication.

    ``router`` is None when the HTTP API is off; ``max_body_bytes`` bounds an HTTP API body;
    ``peers``: the peer_identity settings when on: the client certificate (``req.peer``) is a
    credential if its listener counts.
    """
    entry = methods.lookup(req.path)
    if entry is None or req.method != "POST":
        if entry is None and router is not None:
            return _read_http_api(req, router, max_body_bytes, peers)
        return unknown_method(req.path, req.method)
    if req.path in methods.ALWAYS_ALLOWED:  # == entry.method.path: the lookup is exact
        return Decision.allow(
            Reason.HEALTH_CHECK, f"{entry.method.short} is always allowed",
            target=Target(entry.method),
        )
    refused = precheck(req)
    if refused is not None:
        return refused
    return _with_token(entry, req, None, peers)


def _read_http_api(req: CheckInput, router: httpapi.Router,
                   max_body_bytes: int, peers: PeerSettings | None) -> Call | Decision:
    """A call of Temporal's HTTP API: the same reading as a gRPC call, for its gRPC method."""
    try:
        route = router.match(req.method, req.path)
    except httpapi.RequestError as exc:
        return Decision.deny(exc.reason, exc.message)
    if route is None:
        if router.looks_like_http_api(req.path):
            return unknown_route(req.path, req.method)
        return unknown_method(req.path, req.method)
    method = route.entry.method
    if method.path in methods.ALWAYS_ALLOWED:
        return Decision.allow(Reason.HEALTH_CHECK, f"{method.short} is always allowed",
                              target=Target(method))
    refused = precheck_http(req, max_body_bytes)
    if refused is not None:
        return replace(refused, target=Target(method))
    return _with_token(route.entry, req, route, peers)


def _with_token(entry: methods.MethodEntry, req: CheckInput,
                route: httpapi.Route | None, peers: PeerSettings | None) -> Call | Decision:
    header = req.headers.get("authorization")
    peer = req.peer if peers is not None and req.peer is not None and peers.counts(
        req.peer.listener) else None
    if peer is not None and (header is None or not header.strip()):
        return Call(entry.method, entry, "", route, peer)  # the certificate alone
    token = bearer_token(header)
    if isinstance(token, Decision):
        if peers is not None and token.reason is Reason.MISSING_TOKEN:
            return Decision.deny(Reason.MISSING_TOKEN, NO_CREDENTIAL,
                                 status=STATUS_UNAUTHENTICATED, target=Target(entry.method))
        return replace(token, target=Target(entry.method))
    return Call(entry.method, entry, token, route, peer)


NO_CREDENTIAL = ("no authorization header and no client certificate: send "
                 "`authorization: Bearer <access token>` or connect with a client certificate")


def precheck(req: CheckInput) -> Decision | None:
    """Refusals that need no token and no body scan: a truncated body, not gRPC."""
    if req.headers.get(PARTIAL_BODY_HEADER, "").strip().lower() == "true":
        return Decision.deny(
            Reason.PARTIAL_BODY,
            "the request body reached the authorizer truncated; it is over Envoy's "
            "max_request_bytes (send a smaller message)",
        )
    content_type = req.headers.get("content-type", "")
    if content_type == "application/grpc" or content_type.startswith(
        ("application/grpc+", "application/grpc;")
    ):
        return None
    shown = content_type.split(";", 1)[0].strip()[:48]
    # echo only what looks like a media type: a misplaced credential must not reach the logs
    what = f"content-type {q(shown)}" if _MEDIA_TYPE.fullmatch(shown) else "the content-type"
    return Decision.deny(Reason.UNSUPPORTED_PROTOCOL,
                         f"{what} is not gRPC (application/grpc)")


def precheck_http(req: CheckInput, max_body_bytes: int) -> Decision | None:
    """Refusals of an HTTP API call that need no token: a truncated or oversized body, a body
    that is not JSON (the server would read any content-type as JSON, and a form body can turn
    a POST into a GET there)."""
    if req.headers.get(PARTIAL_BODY_HEADER, "").strip().lower() == "true":
        return Decision.deny(
            Reason.PARTIAL_BODY,
            "the request body reached the authorizer truncated; it is over Envoy's "
            "max_request_bytes (send a smaller body)",
        )
    if len(req.body) > max_body_bytes:
        return Decision.deny(Reason.BODY_TOO_LARGE,
                             f"the JSON body is over {max_body_bytes} bytes")
    content_type = req.headers.get("content-type", "")
    media = httpapi.media_type(content_type)
    if media in httpapi.JSON_MEDIA_TYPES or not (media or req.body):
        return None
    if content_type.startswith("application/grpc"):
        return Decision.deny(Reason.UNSUPPORTED_PROTOCOL,
                             "a gRPC call on a path of Temporal's HTTP API")
    shown = content_type.split(";", 1)[0].strip()[:48]
    what = f"content-type {q(shown)}" if _MEDIA_TYPE.fullmatch(shown) else "the content-type"
    return Decision.deny(Reason.UNSUPPORTED_PROTOCOL,
                         f"{what} is not JSON: Temporal's HTTP API takes application/json")


def unknown_route(path: str, method: str) -> Decision:
    """The denial for a request on an HTTP API prefix that matches no route."""
    return Decision.deny(
        Reason.UNKNOWN_METHOD,
        f"{q(method[:16])} {q(path[:_MAX_PATH_IN_MESSAGE])} is not a route of Temporal's HTTP "
        "API (paths and methods must match exactly: no trailing '/', '//', '.' or '..')",
    )


def unknown_method(path: str, method: str = "POST") -> Decision:
    """The denial for a path that is not exactly a known Temporal method."""
    shown = q(path[:_MAX_PATH_IN_MESSAGE])
    if method != "POST":
        return Decision.deny(
            Reason.UNKNOWN_METHOD, f"HTTP method {q(method[:16])} is not a gRPC call ({shown})"
        )
    return Decision.deny(
        Reason.UNKNOWN_METHOD,
        f"{shown} is not a known Temporal gRPC method (paths must match exactly)",
    )


def bearer_token(header: str | None) -> str | Decision:
    """The token of exactly one ``authorization: Bearer <jwt>`` header, or a 401 denial."""
    # memoised for well-formed headers (a header string hashes and compares in C; the regex
    # over a ~1 KB token was ~2 µs of every check); bounded, cleared when full
    token = _TOKEN_OF_HEADER.get(header) if header is not None else None
    if token is not None:
        return token
    found = _bearer_token(header)
    if isinstance(found, str) and header is not None:
        if len(_TOKEN_OF_HEADER) >= _TOKEN_OF_HEADER_ENTRIES:
            _TOKEN_OF_HEADER.clear()
        _TOKEN_OF_HEADER[header] = found
    return found


def extras_token(header: str) -> str | None:
    """The ID token of ``authorization-extras``: the bare JWT the Web UI sends (a ``Bearer``
    prefix is tolerated), or None when the value is not one token."""
    value = header.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].lstrip(" ")
    return value if _JWT_CHARS.fullmatch(value) else None


_JWT_CHARS = re.compile(r"[A-Za-z0-9_\-.=]+")
_TOKEN_OF_HEADER: dict[str, str] = {}
_TOKEN_OF_HEADER_ENTRIES = 1024


def _bearer_token(header: str | None) -> str | Decision:
    if header is None or not header.strip():
        return Decision.deny(
            Reason.MISSING_TOKEN,
            "no authorization header: send `authorization: Bearer <access token>`",
            status=STATUS_UNAUTHENTICATED,
        )
    if "," in header:
        return Decision.deny(
            Reason.MALFORMED_AUTHORIZATION,
            "more than one authorization value: send exactly one `Bearer <token>`",
            status=STATUS_UNAUTHENTICATED,
        )
    match = _BEARER.fullmatch(header.strip())
    if match is None:
        return Decision.deny(
            Reason.MALFORMED_AUTHORIZATION,
            "authorization must be `Bearer <token>` with a single JWT",
            status=STATUS_UNAUTHENTICATED,
        )
    return match.group(1)
