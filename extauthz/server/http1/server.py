"""The bounded HTTP/1.1 listener: accept (plain or TLS), cap connections, expire deadlines,
drain. What a request means is the handler's business (``http1.wire.Handler``)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Iterable, Mapping
from typing import cast

import structlog

from extauthz.server.http1.connection import Connection
from extauthz.server.http1.wire import Handler, HttpLimits
from extauthz.server.tlsaccept import start_tls_now

log = structlog.get_logger("extauthz.http")


class Http1Server:
    """One HTTP/1.1 listener answering every request with ``handler``. ``start`` binds;
    ``drain`` stops gracefully."""

    def __init__(
        self,
        handler: Handler,
        *,
        limits: HttpLimits | None = None,
        ssl_context: Callable[[], ssl.SSLContext] | None = None,
        known_headers: Iterable[str] = (),
    ):
        self.handler = handler
        self.limits = limits or HttpLimits()
        # TLS: the context for a connection accepted now (server.tls.ServerSSLContext.current)
        self.ssl_context = ssl_context
        # lower-case header names expected on most requests: parsed without decoding each time
        self.header_names: Mapping[bytes, str] = {
            name.encode("ascii"): name for name in known_headers}
        self.handshakes: set[asyncio.Task[None]] = set()
        self.connections: set[Connection] = set()
        self.draining = False
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen on ``host:port`` (0: any free port); returns the port."""
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.Protocol] = (
            (lambda: Connection(self)) if self.ssl_context is None else (lambda: _Accepted(self)))
        self._server = await loop.create_server(
            factory, host, port, reuse_port=reuse_port or None, backlog=1024)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._sweeper = asyncio.create_task(self._sweep())
        return self.port

    async def _sweep(self) -> None:
        """Close connections past their deadline (one timer for all connections)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.25)
            now = loop.time()
            for conn in [c for c in self.connections if c.deadline <= now]:
                conn.expired()

    def stop_accepting(self) -> None:
        """Close the listening socket (connections already open keep being served)."""
        if self._server is not None:
            self._server.close()

    async def drain(self, grace: float) -> None:
        """Stop accepting; close idle connections now and busy ones after their current
        request; abort whatever is still open after ``grace`` seconds."""
        self.draining = True
        self.stop_accepting()
        for task in list(self.handshakes):
            task.cancel()
        for conn in list(self.connections):
            conn.close_if_idle()
        if self.connections:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        for conn in list(self.connections):
            conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            await self._server.wait_closed()

    def accept_tls(self, transport: asyncio.Transport) -> None:
        """A new TCP connection to the TLS listener: hand it to the TLS layer now, with the
        current context, and serve it once the handshake is done. Handshakes in progress count
        against ``max_connections`` and must finish within ``request_timeout``."""
        if self.draining or len(self.connections) + len(self.handshakes) >= \
                self.limits.max_connections:
            transport.abort()  # no plaintext answer a TLS client could read
            return
        assert self.ssl_context is not None
        conn = Connection(self)

        def ready(tls: asyncio.Transport) -> None:
            if conn.closing:  # lost between the handshake and now
                tls.abort()
                return
            conn.connection_made(tls)

        start_tls_now(transport, conn, self.ssl_context(), self.limits.request_timeout,
                      self.handshakes, log, "http.tls_handshake_failed", ready)

    def forget(self, conn: Connection) -> None:
        """A connection closed."""
        self.connections.discard(conn)
        if not self.connections:
            self._idle.set()


class _Accepted(asyncio.Protocol):
    """A TCP connection to the TLS listener until ``start_tls`` takes it over."""

    def __init__(self, server: Http1Server):
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.server.accept_tls(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:  # pragma: no cover
        pass  # never called: accept_tls gives the socket to the TLS layer in connection_made
