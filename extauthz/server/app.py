"""``extauthz serve``: the grpc.aio server, its health, and a clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import grpc
import structlog
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from extauthz.auth.authenticator import Authenticator
from extauthz.config import Settings
from extauthz.pipeline import Pipeline
from extauthz.server.grpc_service import AuthorizationService
from extauthz.server.responses import ResponseBuilder

log = structlog.get_logger("extauthz.server")
AUTH_SERVICE = "envoy.service.auth.v3.Authorization"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Server:
    """The Check server: start, serve until told to stop, drain, stop."""

    def __init__(self, settings: Settings, authenticator: Authenticator | None = None):
        self.settings = settings
        self.authenticator = authenticator or Authenticator(
            settings.issuers,
            cache_max_entries=settings.token_cache_entries,
            negative_cache_seconds=settings.negative_cache_seconds,
        )
        self.pipeline = Pipeline(self.authenticator,
                                 max_message_bytes=settings.max_message_bytes)
        self.health = health.aio.HealthServicer()
        self._grpc = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", settings.grpc_max_receive_bytes),
            ("grpc.so_reuseport", 0),
        ])
        self._stopping = asyncio.Event()
        self.port = 0

    async def start(self) -> None:
        """Bind, start serving Check (health NOT_SERVING until keys are loaded)."""
        host, port = self.settings.host_port
        service = AuthorizationService(self.pipeline, ResponseBuilder(self.settings.subject_header))
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(service, self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        await self._set_health(_NOT_SERVING)
        self.port = self._grpc.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot listen on {host}:{port}")
        await self._grpc.start()
        await self.authenticator.start()
        log.info("listening", address=f"{host}:{self.port}",
                 issuers=[i.issuer for i in self.settings.issuers])

    async def _set_health(self, status: int) -> None:
        for name in ("", AUTH_SERVICE):
            await self.health.set(name, status)  # type: ignore[arg-type, unused-ignore]

    async def watch_readiness(self) -> None:
        """Report SERVING while every issuer has usable keys, NOT_SERVING otherwise."""
        current = _NOT_SERVING
        while not self._stopping.is_set():
            wanted = _SERVING if self.authenticator.ready() else _NOT_SERVING
            if wanted != current:
                await self._set_health(wanted)
                log.info("health", status="SERVING" if wanted == _SERVING else "NOT_SERVING")
                current = wanted
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 0.2)

    def request_stop(self) -> None:
        """Begin a graceful stop (signal handlers call this)."""
        self._stopping.set()

    async def stop(self) -> None:
        """NOT_SERVING first, then drain in-flight checks within the grace period."""
        self._stopping.set()
        await self._set_health(_NOT_SERVING)
        log.info("draining", grace_seconds=self.settings.shutdown_grace_seconds)
        await self._grpc.stop(self.settings.shutdown_grace_seconds)
        await self.authenticator.close()
        log.info("stopped")

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT, then stop cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        readiness = asyncio.create_task(self.watch_readiness())
        await self._stopping.wait()
        await readiness
        await self.stop()


def serve(settings: Settings) -> int:
    """Run the server in this process; returns the exit code."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(Server(settings).run())
    else:
        uvloop.run(Server(settings).run())
    return 0
