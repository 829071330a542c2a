"""``extauthz serve``: the grpc.aio server, its health, and a clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import grpc
import structlog
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from extauthz import methods
from extauthz.auth.authenticator import Authenticator
from extauthz.config import Settings, parse_host_port
from extauthz.interfaces import Authorizer
from extauthz.obs.metrics import category
from extauthz.pipeline import Pipeline
from extauthz.policy import authorize as temporal_default
from extauthz.rules import categories as rules_categories
from extauthz.rules.reload import PolicyHolder, PolicyStatus, metrics_listener
from extauthz.server.grpc_service import AuthorizationService
from extauthz.server.h2grpc import services as h2_services
from extauthz.server.h2grpc.server import H2GrpcServer, H2Limits
from extauthz.server.h2grpc.tls import with_h2_alpn
from extauthz.server.http1 import HttpLimits
from extauthz.server.http_service import ENVOY_MAX_REQUEST_BYTES, HttpCheckServer
from extauthz.server.responses import HttpResponses, ResponseBuilder
from extauthz.server.telemetry import Observability, start_tracing
from extauthz.server.tls import CertificateFiles, ServerSSLContext, server_credentials

log = structlog.get_logger("extauthz.server")
AUTH_SERVICE = "envoy.service.auth.v3.Authorization"
# SERVING while the policy file on disk is the policy in force; NOT_SERVING after a failed
# reload (the previous policy keeps deciding). Absent without a policy file.
POLICY_HEALTH_SERVICE = "extauthz.policy"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WORKER_READY_WAIT_SECONDS = 5.0


class Server:
    """The Check server: start, serve until told to stop, drain, stop."""

    def __init__(self, settings: Settings, authenticator: Authenticator | None = None,
                 *, worker: bool = False):
        self.settings = settings
        # worker: one of `serve --workers N` (shared port, metrics served by the supervisor)
        self.worker = worker
        # the metrics' category label uses the policy engine's partition of the methods
        self.obs = Observability(settings, worker=worker, categories=rules_categories.categories())
        # a span per check (tracing.enabled); off, nothing of OpenTelemetry is imported
        self.obs.observer.tracer = start_tracing(settings.tracing, settings.source)
        self.authenticator = authenticator or Authenticator(
            settings.issuers,
            cache_max_entries=settings.token_cache_entries,
            negative_cache_seconds=settings.negative_cache_seconds,
            on_fetch=self.obs.on_fetch,
        )
        # the policy file (extauthz.rules), else Temporal's default authorizer
        self.policy = (PolicyHolder(settings.policy_file, on_reload=metrics_listener)
                       if settings.policy_file else None)
        authorizer: Authorizer = self.policy if self.policy is not None else temporal_default
        self.pipeline = Pipeline(self.authenticator, authorizer,
                                 max_message_bytes=settings.max_message_bytes,
                                 peers=settings.peer_identity)
        self.health = health.aio.HealthServicer()
        self._grpc = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", settings.grpc_max_receive_bytes),
            ("grpc.so_reuseport", 1 if worker else 0),
        ])
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Future[None]] = set()
        self.port = 0
        # TLS (mTLS with a client CA): credentials that follow the files (server.tls)
        self.tls_files: CertificateFiles | None = None
        # a plaintext health-only server for Kubernetes grpc probes (they cannot do mTLS)
        self._health_grpc: grpc.aio.Server | None = None
        self.health_port = 0
        # Envoy's HTTP ext_authz protocol (transport http|both): same pipeline, same observer
        self.http: HttpCheckServer | None = None
        self.http_port = 0
        # the HTTP listener's TLS: an ssl.SSLContext per set of files (server.tls)
        self.http_tls: ServerSSLContext | None = None
        self.serving = False
        # grpc_server: h2 — the hand-framed gRPC listener instead of grpc.aio's (same routes)
        self.h2: H2GrpcServer | None = None
        self.health_status: dict[str, int] = {}  # what the h2 listener's Health/Check reads

    async def start(self) -> None:
        """Bind, start serving Check (health NOT_SERVING until keys are loaded)."""
        host, port = self.settings.host_port
        service = AuthorizationService(self.pipeline, ResponseBuilder(self.settings.subject_header),
                                       observer=self.obs.observer)
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(service, self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        await self._set_health(_NOT_SERVING)
        if self.policy is not None:
            await self._set_policy_health(self.policy.status)
            self.policy.subscribe(self._on_policy_status)
        # build the method table (~160 ms) and the metric categories now, not in the first
        # Check (that showed up as a 200 ms p99 outlier per worker)
        for entry in methods.table().values():
            category(entry.method, rules_categories.categories())
        self.obs.start_http()
        if self.worker:
            # a worker joins the shared port only once it can decide (or after a bounded
            # wait), so the kernel never hands a connection to a worker without keys
            await self.authenticator.start()
            await self.authenticator.wait_ready(WORKER_READY_WAIT_SECONDS)
        if self.settings.serves_grpc and self.settings.grpc_server == "h2":
            await self._start_h2(service, host, port)
        elif self.settings.serves_grpc:
            if self.settings.tls.enabled:
                credentials, self.tls_files = server_credentials(self.settings.tls)
                self.port = self._grpc.add_secure_port(f"{host}:{port}", credentials)
            else:
                self.port = self._grpc.add_insecure_port(f"{host}:{port}")
            if self.port == 0:
                raise OSError(f"cannot listen on {host}:{port}")
        if self.settings.health_listen:
            await self._start_health_server()
        if self.settings.serves_grpc and self.h2 is None:
            await self._grpc.start()
        if self.settings.serves_http:
            await self._start_http()
        await self.authenticator.start()
        log.info("listening", address=f"{host}:{self.port}" if self.port else None,
                 http=f"{self.settings.http_listen}" if self.http else None,
                 transport=self.settings.transport,
                 tls=("mtls" if self.settings.tls.require_client_cert else "tls")
                 if self.settings.tls.enabled else "off",
                 health=f"{self.settings.health_listen}" or "on listen",
                 issuers=[i.issuer for i in self.settings.issuers],
                 # the API the method table was built from (version skew: `extauthz api-diff`)
                 temporal_api=_temporal_api())

    async def _start_h2(self, service: AuthorizationService, host: str, port: int) -> None:
        """Listen with the hand-framed server (``extauthz.server.h2grpc``): Check and health."""
        ssl_context = None
        if self.settings.tls.enabled:
            # the same files and semantics as grpcio's listener, ALPN h2; a new connection gets
            # the files current at its accept (rotation)
            holder = ServerSSLContext(self.settings.tls)
            self.tls_files = holder.files
            ssl_context = with_h2_alpn(holder.current)
        limits = H2Limits(max_message=self.settings.grpc_max_receive_bytes)
        self.h2 = H2GrpcServer(h2_services.routes(service, self.health_status.get), limits,
                               ssl_context)
        self.port = await self.h2.start(host, port, reuse_port=self.worker)

    async def _start_health_server(self) -> None:
        """Serve only ``grpc.health.v1`` (the same statuses) in plaintext on ``health_listen``."""
        host, port = parse_host_port(self.settings.health_listen, "health_listen",
                                     self.settings.source)
        self._health_grpc = grpc.aio.server(
            options=[("grpc.so_reuseport", 1 if self.worker else 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_grpc)
        self.health_port = self._health_grpc.add_insecure_port(f"{host}:{port}")
        if self.health_port == 0:
            raise OSError(f"cannot listen on {host}:{port} (health_listen)")
        await self._health_grpc.start()

    async def _start_http(self) -> None:
        """Listen for Envoy's HTTP ext_authz protocol on ``http_listen``."""
        host, port = parse_host_port(self.settings.http_listen, "http_listen",
                                     self.settings.source)
        limits = HttpLimits(max_body_bytes=max(ENVOY_MAX_REQUEST_BYTES,
                                               self.settings.max_message_bytes + 5))
        if self.settings.tls.enabled:
            # the same `tls:` files and semantics as the gRPC port; probes use health_listen
            self.http_tls = ServerSSLContext(self.settings.tls)
        self.http = HttpCheckServer(
            self.pipeline, HttpResponses(self.settings.subject_header),
            observer=self.obs.observer, limits=limits,
            path_prefix=self.settings.http_path_prefix, serving=lambda: self.serving,
            ssl_context=self.http_tls.current if self.http_tls is not None else None)
        self.http_port = await self.http.start(host, port, reuse_port=self.worker)

    def _on_policy_status(self, status: PolicyStatus) -> None:
        task = asyncio.ensure_future(self._set_policy_health(status))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _set_policy_health(self, status: PolicyStatus) -> None:
        self.health_status[POLICY_HEALTH_SERVICE] = _SERVING if status.ok else _NOT_SERVING
        await self.health.set(  # type: ignore[arg-type, unused-ignore]
            POLICY_HEALTH_SERVICE, _SERVING if status.ok else _NOT_SERVING)

    async def _set_health(self, status: int) -> None:
        self.serving = status == _SERVING  # the HTTP transport's /healthz
        for name in ("", AUTH_SERVICE):
            self.health_status[name] = status
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
        """NOT_SERVING first; keep answering for ``shutdown_delay_seconds`` so Envoy's health
        checks move traffic away; then refuse new calls and drain in-flight ones within the
        grace period."""
        self._stopping.set()
        await self._set_health(_NOT_SERVING)
        log.info("draining", delay_seconds=self.settings.shutdown_delay_seconds,
                 grace_seconds=self.settings.shutdown_grace_seconds)
        await asyncio.sleep(self.settings.shutdown_delay_seconds)
        grace = self.settings.shutdown_grace_seconds
        await asyncio.gather(
            self.h2.drain(grace) if self.h2 is not None else self._grpc.stop(grace),
            *([self.http.drain(grace)] if self.http is not None else []))
        if self._health_grpc is not None:
            await self._health_grpc.stop(0)
        await self.authenticator.close()
        self.obs.close()
        if (tracer := self.obs.observer.tracer) is not None:
            await asyncio.to_thread(tracer.shutdown)  # flush queued spans (bounded by a timeout)
        log.info("stopped")

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT, then stop cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        readiness = asyncio.create_task(self.watch_readiness())
        policy_watch = None
        if self.policy is not None:
            self.policy.install_sighup(loop)
            policy_watch = asyncio.create_task(
                self.policy.watch(self.settings.policy_poll_seconds, self._stopping))
        metrics_sync = asyncio.create_task(self.obs.sync_loop(self.authenticator, self._stopping))
        await self._stopping.wait()
        await readiness
        if policy_watch is not None:
            await policy_watch
        await metrics_sync
        await self.stop()


async def _serve(settings: Settings, worker: bool = False) -> None:
    # built inside the running loop: grpc.aio binds to the loop current at construction
    await Server(settings, worker=worker).run()


def serve(settings: Settings, *, worker: bool = False) -> int:
    """Run the server in this process (uvloop when installed); returns the exit code.

    ``worker``: this process is one of ``serve --workers N`` (see ``server.workers``).
    """
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(settings, worker))
    else:
        uvloop.run(_serve(settings, worker))
    return 0


def _temporal_api() -> str:
    """``temporalio <version>, <n> methods``: what the method table was built from."""
    from importlib.metadata import version

    from extauthz import methods

    return f"temporalio {version('temporalio')}, {len(methods.table())} methods"
