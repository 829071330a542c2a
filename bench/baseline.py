"""The bare baseline: an always-allow grpc.aio ``Authorization/Check`` server.

What the bench compares extauthz with, built the same way (grpc.aio, uvloop when installed, the
generated servicer, so the CheckRequest is parsed as in the real server, plus the gRPC health
service Envoy's health checks call) but deciding nothing: every Check gets a pre-built OK.

Run: ``python -m bench.baseline --listen 127.0.0.1:PORT``.
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
    listen = ap.parse_args().listen
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(listen))
    else:
        uvloop.run(serve(listen))


if __name__ == "__main__":
    main()
