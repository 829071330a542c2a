"""The bare baselines: an always-allow server per transport, deciding nothing.

- ``--transport grpc`` (default): a grpc.aio ``Authorization/Check`` server built the way
  extauthz's is (grpc.aio, uvloop when installed, the generated servicer, so the CheckRequest is
  parsed as in the real server, plus the gRPC health service Envoy's health checks call); every
  Check gets a pre-built OK.
- ``--transport http``: Envoy's HTTP ext_authz protocol on an asyncio Protocol + httptools
  (llhttp) server, the base extauthz's HTTP adapter is built on, with uvloop; every request
  (checks and ``GET /healthz`` alike) is parsed to its end and gets a pre-built
  ``200``, keep-alive.

Run: ``python -m bench.baseline --listen 127.0.0.1:PORT [--transport http]``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

_OK = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))


class AlwaysAllow(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Allows every check."""

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        """OK, whatever was asked."""
        return _OK


_HTTP_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
_HTTP_CLOSE = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class _HttpAllow(asyncio.Protocol):
    """One connection: llhttp parses; every complete request gets the pre-built 200."""

    def __init__(self) -> None:
        import httptools

        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._error = httptools.HttpParserError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except self._error:
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        if self.transport is None:
            return
        if self.parser.should_keep_alive():
            self.transport.write(_HTTP_OK)
        else:
            self.transport.write(_HTTP_CLOSE)
            self.transport.close()


async def serve_http(listen: str) -> None:
    """Serve the HTTP always-allow until SIGTERM/SIGINT."""
    host, _, port = listen.rpartition(":")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_HttpAllow, host, int(port), backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


async def serve(listen: str) -> None:
    """Serve until SIGTERM/SIGINT."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 8 * 1024 * 1024),
                                      ("grpc.so_reuseport", 0)])
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(AlwaysAllow(), server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    for name in ("", "envoy.service.auth.v3.Authorization"):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)  # type: ignore[arg-type, unused-ignore]
    if server.add_insecure_port(listen) == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--transport", choices=("grpc", "http"), default="grpc")
    args = ap.parse_args()
    main_coro = serve(args.listen) if args.transport == "grpc" else serve_http(args.listen)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coro)
    else:
        uvloop.run(main_coro)


if __name__ == "__main__":
    main()
