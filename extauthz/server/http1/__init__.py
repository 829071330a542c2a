"""A small bounded HTTP/1.1 server (+ TLS) on ``httptools`` that knows nothing of what it serves:
each complete request goes to a handler coroutine (``wire.Handler``) that returns the answer's
bytes. ``server.http_service`` puts Envoy's HTTP ext_authz protocol on it.

Why our own rather than granian or uvicorn: measured on a 2-CPU machine
(``bench/http_servers.py``), server CPU per always-allow answer was ~17 µs here, ~73 µs with
uvicorn (httptools), ~114 µs with granian (RSGI). HTTP parsing stays in llhttp; this package
only bounds the connection:

- request line + headers ≤ ``max_header_bytes`` and ≤ ``max_headers`` (else 431, close);
- body ≤ ``max_body_bytes``; a bigger body is read and discarded, and the handler gets the
  request with ``too_large`` set (memory stays bounded);
- a started request must be complete within ``request_timeout``; an idle keep-alive connection
  is closed after ``idle_timeout``; a client that does not read its responses is closed after
  ``request_timeout`` of back-pressure;
- requests on one connection (pipelining) are answered in order; reading pauses while
  ``max_pipelined`` are waiting or the client is not reading;
- at most ``max_connections`` connections (more are answered 503 and closed);
- drain: stop accepting, close idle connections, answer in-flight requests with
  ``connection: close``, abort what is left after the grace period;
- TLS (``ssl_context``, from ``server.tls.ServerSSLContext``): each accepted connection is
  upgraded with ``loop.start_tls`` and the context current at that moment (rotated files reach
  new connections); a handshake counts as a connection and must end within
  ``request_timeout``; a refused one is logged ``http.tls_handshake_failed``.

Modules: ``wire`` (limits, request, handler signature, plain answers), ``connection`` (one
client connection), ``server`` (the listener).
"""

from extauthz.server.http1.connection import Connection
from extauthz.server.http1.server import Http1Server
from extauthz.server.http1.wire import (
    DEFAULT_MAX_BODY_BYTES,
    STATUS_TEXT,
    Handler,
    HttpLimits,
    Request,
    Response,
    plain,
)

__all__ = ["DEFAULT_MAX_BODY_BYTES", "STATUS_TEXT", "Connection", "Handler", "Http1Server",
           "HttpLimits", "Request", "Response", "plain"]
