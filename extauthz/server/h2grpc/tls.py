"""TLS for the hand-framed listener: each accepted TCP connection is upgraded with
``loop.start_tls`` and the context current at that moment (``server.tls.ServerSSLContext``:
rotated files reach new connections), with ALPN ``h2``; the HTTP/2 connection starts once the
handshake is done. A handshake that fails or stalls past ``timeout`` closes the connection.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import structlog

from extauthz.server.h2grpc.connection import Connection
from extauthz.server.tlsaccept import start_tls_now

if TYPE_CHECKING:
    from extauthz.server.h2grpc.server import H2GrpcServer

log = structlog.get_logger("extauthz.h2grpc")
ALPN = ("h2",)


def with_h2_alpn(make: Callable[[], ssl.SSLContext]) -> Callable[[], ssl.SSLContext]:
    """``make`` (the project's server context, following its files) with ALPN ``h2``; the
    ALPN is set once per distinct context."""
    seen: set[int] = set()

    def current() -> ssl.SSLContext:
        ctx = make()
        if id(ctx) not in seen:
            ctx.set_alpn_protocols(list(ALPN))
            seen.add(id(ctx))
        return ctx

    return current


class Accepted(asyncio.Protocol):
    """A TCP connection to the TLS listener until ``start_tls`` takes it over."""

    def __init__(self, server: H2GrpcServer, context: Callable[[], ssl.SSLContext],
                 timeout: float):
        self.server = server
        self.context = context
        self.timeout = timeout

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Hand the socket to the TLS layer now (before the loop reads the ClientHello)."""
        raw = cast(asyncio.Transport, transport)
        if self.server.draining:
            raw.abort()
            return
        conn = Connection(self.server)

        def ready(tls: asyncio.Transport) -> None:
            if tls.get_extra_info("ssl_object").selected_alpn_protocol() not in (None, *ALPN):
                tls.abort()  # pragma: no cover (the context offers h2 only)
                return
            conn.connection_made(tls)

        start_tls_now(raw, conn, self.context(), self.timeout, self.server.handshakes, log,
                      "h2grpc.tls_handshake_failed", ready)

    def data_received(self, data: bytes) -> None:  # pragma: no cover
        pass  # never called: the TLS layer owns the socket from connection_made on
