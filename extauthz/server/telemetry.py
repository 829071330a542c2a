"""Wiring of telemetry from ``Settings`` into one server process (used by ``server.app``):
metrics, the audit log and the tracer.

- single process: metrics in the process's own registry, ``/metrics`` served here when
  ``metrics_listen`` is set;
- worker of ``serve --workers N``: metrics go to ``PROMETHEUS_MULTIPROC_DIR`` and the supervisor
  serves them (see ``extauthz.server.workers``); this process serves no HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import structlog

from extauthz.config import ConfigError, Settings, parse_host_port
from extauthz.interfaces import IssuerSource
from extauthz.obs import metrics as m
from extauthz.obs import tracing
from extauthz.obs.audit import AuditLog
from extauthz.obs.observer import Telemetry
from extauthz.obs.tracing_config import TracingSettings, TracingUnavailable

if TYPE_CHECKING:
    from extauthz.obs.tracing_otel import CheckTracer

log = structlog.get_logger("extauthz.obs")
SYNC_INTERVAL_SECONDS = 1.0


class Observability:
    """Metrics (when wanted), the audit log, and the observer the Check servicer calls."""

    def __init__(self, settings: Settings, *, worker: bool = False,
                 categories: m.Partition | None = None):
        self.settings = settings
        self.worker = worker
        wanted = bool(settings.metrics_listen) or m.multiprocess_dir() is not None
        self.metrics: m.Metrics | None = m.Metrics(m.MetricsOptions(
            namespace_labels=settings.metrics_namespace_labels,
            namespace_label_cap=settings.metrics_namespace_label_cap,
            subject_label_cap=settings.metrics_subject_label_cap,
        ), categories=categories) if wanted else None
        m.install(self.metrics)
        self.audit = AuditLog(settings.audit_allow_sample_rate, settings.log_format)
        self.observer = Telemetry(self.metrics, self.audit)
        self.metrics_port = 0
        self._http: Any = None

    def on_fetch(self, issuer: str, result: str) -> None:
        """The key stores' fetch callback."""
        if self.metrics is not None:
            self.metrics.jwks_fetched(issuer, result)

    def start_http(self) -> None:
        """Serve ``/metrics`` (single-process mode with ``metrics_listen`` only)."""
        if self.metrics is None or self.worker or not self.settings.metrics_listen:
            return
        host, port = parse_host_port(self.settings.metrics_listen, "metrics_listen",
                                     self.settings.source)
        self._http, self.metrics_port = m.serve_metrics(host, port, self.metrics.registry)
        log.info("metrics.listening", address=f"{host}:{self.metrics_port}")

    async def sync_loop(self, auth: IssuerSource, stopping: asyncio.Event) -> None:
        """Copy the authenticator's state into the metrics every second until ``stopping``."""
        if self.metrics is None:
            return
        while not stopping.is_set():
            try:
                self.metrics.sync_auth(auth)
            except Exception as exc:  # metrics must never take the server down
                log.error("metrics.sync_failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), SYNC_INTERVAL_SECONDS)
        with contextlib.suppress(Exception):
            self.metrics.sync_auth(auth)

    def close(self) -> None:
        """Stop the ``/metrics`` server."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if m.installed() is self.metrics:
            m.install(None)


def start_tracing(settings: TracingSettings, source: str = "<config>") -> CheckTracer | None:
    """``extauthz.obs.tracing.start_tracing``, its failure a ``ConfigError`` (same message)."""
    try:
        return tracing.start_tracing(settings, source)
    except TracingUnavailable as exc:
        raise ConfigError(str(exc)) from None
