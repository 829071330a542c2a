"""TLS for the hand-framed listener: each accepted TCP connection is upgraded with
``loop.start_tls`` and the context current at that moment (``server.tls.ServerSSLContext``:
rotated files reach new connections), with ALPN ``h2``; the HTTP/2 connection starts once the
handshake is done. A handshake that fails or stalls past ``timeout`` closes the connection.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

import structlog

from extauthz.server.coroutines import resume, step
from extauthz.server.h2grpc.connection import Connection

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
        upgrade = asyncio.get_running_loop().start_tls(
            raw, conn, self.context(), server_side=True, ssl_handshake_timeout=self.timeout)
        try:
            finished, waiting = step(upgrade)
        except Exception as exc:  # pragma: no cover (a closed transport)
            log.info("h2grpc.tls_handshake_failed", error=type(exc).__name__)
            raw.abort()
            return
        if finished:  # pragma: no cover (start_tls always waits for the handshake)
            raw.abort()
            return
        task = asyncio.get_running_loop().create_task(self._handshake(conn, upgrade, waiting))
        self.server.handshakes.add(task)
        task.add_done_callback(self.server.handshakes.discard)

    async def _handshake(self, conn: Connection,
                         upgrade: Coroutine[Any, Any, asyncio.Transport | None],
                         waiting: Any) -> None:
        try:
            tls = await resume(upgrade, waiting)
        except asyncio.CancelledError:
            upgrade.close()
            raise
        except Exception as exc:  # refused certificate, timeout, reset: start_tls closed it
            log.info("h2grpc.tls_handshake_failed", error=type(exc).__name__,
                     reason=getattr(exc, "reason", None) or str(exc)[:200])
            return
        if tls is None:
            return
        if tls.get_extra_info("ssl_object").selected_alpn_protocol() not in (None, *ALPN):
            tls.abort()  # pragma: no cover (the context offers h2 only)
            return
        conn.connection_made(tls)

    def data_received(self, data: bytes) -> None:  # pragma: no cover
        pass  # never called: the TLS layer owns the socket from connection_made on
