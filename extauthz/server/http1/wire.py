"""What the bounded HTTP/1.1 server and its request handler share: the limits, a parsed
request, the handler's signature and the byte framing of the server's own plain answers."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

# the largest gRPC message a Temporal frontend accepts (4 MiB) plus 5 bytes of gRPC framing
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024 + 5
STATUS_TEXT = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
               404: b"Not Found", 408: b"Request Timeout", 431: b"Request Header Fields Too Large",
               503: b"Service Unavailable"}
CLOSE = b"connection: close\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# (status line and headers without the final CRLF, body): the server adds the connection
# header and the blank line
Response = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Bounds on what one client may make the server hold or wait for."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Envoy's own default is 60 KiB of request headers; the check adds a few
    max_header_bytes: int = 96 * 1024
    max_headers: int = 128
    max_connections: int = 4096
    max_pipelined: int = 32
    request_timeout: float = 10.0
    # above Envoy's idle_timeout for the extauthz cluster (60 s in envoy/envoy-http.yaml), so
    # Envoy closes idle connections first and never sends on one the server is closing
    idle_timeout: float = 120.0
    write_high_water: int = 256 * 1024


# Not frozen: one is built per request on the hot path, and a frozen dataclass's __init__
# (object.__setattr__ per field) costs measurably more there.
@dataclass(slots=True)
class Request:
    """One complete request: header names lower-cased, repeated headers joined with ``,``;
    ``too_large``: the body exceeded ``max_body_bytes`` and was discarded (``body`` empty)."""

    method: str
    url: bytes
    headers: dict[str, str]
    body: bytes
    too_large: bool
    keep_alive: bool


# answers one request; the server drives the coroutine synchronously while it does not suspend
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def plain(status: int, text: str) -> Response:
    """A ``text/plain`` answer with ``text`` as the body."""
    body = text.encode()
    return (b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
            % (status, STATUS_TEXT.get(status, b"Error"), len(body)), body)
