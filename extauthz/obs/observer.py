"""The seam between the decision path and observability (metrics, audit log, tracing).

Adapters call ``observer.checked(...)`` once per check, after the decision (the ``Observer``
Protocol is in ``extauthz.interfaces``). The default ``NullObserver`` costs one method call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from extauthz import methods
from extauthz.model import CheckInput, Decision, Method
from extauthz.obs.audit import AuditLog
from extauthz.obs.metrics import Metrics

if TYPE_CHECKING:  # OpenTelemetry is imported only when tracing is enabled
    from extauthz.obs.tracing_otel import CheckTracer


class NullObserver:
    """Observes nothing."""

    def check_started(self) -> None:
        """Nothing."""

    def checked(self, req: CheckInput | None, decision: Decision, seconds: float) -> None:
        """Nothing."""


class Telemetry:
    """The server's observer: Prometheus metrics, the audit log and a span per check (each may
    be absent; ``tracer`` is None unless ``tracing.enabled``: then a check pays one test)."""

    __slots__ = ("_audit", "_lookup", "_metrics", "tracer")

    def __init__(self, metrics: Metrics | None = None, audit: AuditLog | None = None,
                 tracer: CheckTracer | None = None):
        self._metrics = metrics
        self._audit = audit
        self._lookup = methods.lookup
        self.tracer = tracer

    def check_started(self) -> None:
        """Count the check as in flight."""
        if self._metrics is not None:
            self._metrics.check_started()

    def checked(self, req: CheckInput | None, decision: Decision, seconds: float) -> None:
        """Count the decision, observe its latency, and audit it (denials, sampled allows)."""
        metrics = self._metrics
        if metrics is not None:
            metrics.check_finished()
            target = decision.target
            if target is not None:
                method: Method | None = target.method
            elif req is not None:
                # denials before the body was read (no token, ...) still name a known method
                entry = self._lookup(req.path)
                method = entry.method if entry is not None else None
            else:
                method = None
            # the path names an unknown_method denial (an RPC newer than this build)
            metrics.observe(decision, method, seconds,
                            req.path if method is None and req is not None else None)
        if self._audit is not None:
            self._audit.record(req, decision, seconds)
        if self.tracer is not None:
            self.tracer.record(req, decision, seconds)
