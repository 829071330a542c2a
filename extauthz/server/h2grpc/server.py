"""The listener of the hand-framed unary gRPC server, its routes, and a graceful drain.

Routes map a gRPC path to ``handler(message bytes) -> coroutine of response bytes``; a handler
signals a non-OK status by raising ``GrpcError``. ``services`` builds the two this project
serves: Envoy's ``Authorization/Check`` and ``grpc.health.v1.Health/Check``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from extauthz.server.h2grpc import frames as f
from extauthz.server.h2grpc.connection import Connection
from extauthz.server.h2grpc.tls import Accepted

Handler = Callable[[bytes], Coroutine[Any, Any, bytes]]


@dataclass(frozen=True, slots=True)
class H2Limits:
    """What one connection may ask of the server."""

    max_message: int = 16 * 1024 * 1024  # bytes of one request message
    max_streams: int = 1000  # concurrent calls per connection (SETTINGS_MAX_CONCURRENT_STREAMS)
    stream_window: int = 1024 * 1024  # our initial per-stream receive window
    connection_window: int = 16 * 1024 * 1024  # our connection receive window
    max_frame: int = f.DEFAULT_FRAME  # largest frame we accept (we advertise the default)
    max_header_list: int = 16 * 1024  # SETTINGS_MAX_HEADER_LIST_SIZE
    # bytes of request bodies held for calls not yet answered, all connections together:
    # past it a stream gets RESOURCE_EXHAUSTED (otherwise max_streams x max_message each)
    max_buffered: int = 64 * 1024 * 1024
    handshake_timeout: float = 10.0  # seconds for a TLS handshake, then the HTTP/2 preface
    # open connections per process (as the HTTP/1.1 listener): past it a new one is closed at
    # once, so a peer cannot exhaust the file descriptors (Envoy then sees a refused check: 503)
    max_connections: int = 4096


class H2GrpcServer:
    """Unary gRPC over HTTP/2 on asyncio: h2c with prior knowledge, or TLS with ALPN ``h2``."""

    def __init__(self, routes: dict[bytes, Handler], limits: H2Limits | None = None,
                 ssl_context: Callable[[], ssl.SSLContext] | None = None):
        self.routes = routes
        self.limits = limits or H2Limits()
        # TLS: the context for each new connection (``tls.with_h2_alpn``: follows the files)
        self.ssl_context = ssl_context
        self.connections: set[Connection] = set()
        self.handshakes: set[asyncio.Task[None]] = set()
        self.draining = False
        self.buffered = 0  # bytes of request bodies held by open streams (limits.max_buffered)
        self._server: asyncio.Server | None = None
        self._idle = asyncio.Event()
        self.settings_frame_values = {
            f.MAX_CONCURRENT_STREAMS: self.limits.max_streams,
            f.INITIAL_WINDOW_SIZE: self.limits.stream_window,
            f.MAX_HEADER_LIST_SIZE: self.limits.max_header_list,
            f.ENABLE_PUSH: 0,
        }

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen; returns the bound port."""
        loop = asyncio.get_running_loop()
        context = self.ssl_context
        factory: Callable[[], asyncio.Protocol] = (
            (lambda: Connection(self)) if context is None
            else (lambda: Accepted(self, context, self.limits.handshake_timeout)))
        self._server = await loop.create_server(factory, host, port, backlog=1024,
                                                reuse_port=reuse_port or None)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    def connection_closed(self) -> None:
        if not self.connections:
            self._idle.set()

    async def drain(self, grace: float) -> None:
        """Stop accepting; GOAWAY every connection (two phases); wait up to ``grace`` seconds
        for calls in flight, then close what remains."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for task in list(self.handshakes):
            task.cancel()
        for conn in list(self.connections):
            conn.drain()
        if self.connections:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

