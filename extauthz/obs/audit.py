"""The audit log: one structured event per denied check and a sample of allowed ones.

Events are JSON lines on stdout (a readable console rendering when stdout is a TTY), written
through their own structlog pipeline so the server's ``log_level`` never silences them.

What an event carries, and what it never carries: the request id (Envoy's ``x-request-id``),
the subject, principal kind and issuer, the method, namespace(s) and task queue(s), the
decision, reason code, rule, latency and the client's ``client-name``/``client-version``
headers. Header values are read by name from that short list only: ``authorization``,
``authorization-extras`` and every other header never reach the log, and neither do claims.
The one exception is a label: ``email`` and ``display_name`` of the Web UI's ID token (sent in
``authorization-extras``), once the pipeline has verified it and found it names the access
token's issuer and subject (``Decision.display``); the ID token itself is never logged.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from typing import Any, TextIO

import structlog

from extauthz.model import CheckInput, Decision, clip
from extauthz.obs.metrics import result_of

AUDIT_EVENT = "authz.decision"
_MAX_HEADER_CHARS = 128


def _use_console(fmt: str, stream: TextIO) -> bool:
    if fmt == "console":
        return True
    if fmt == "json":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class AuditLog:
    """Writes audit events; ``record`` decides whether a decision is logged."""

    def __init__(
        self,
        allow_sample_rate: float = 0.0,
        fmt: str = "auto",
        stream: TextIO | None = None,
        rng: Callable[[], float] = random.random,
    ):
        if not 0.0 <= allow_sample_rate <= 1.0:
            raise ValueError("allow_sample_rate must be between 0 and 1")
        self.allow_sample_rate = allow_sample_rate
        self._rng = rng
        out = stream if stream is not None else sys.stdout
        renderer: structlog.types.Processor = (
            structlog.dev.ConsoleRenderer(colors=False) if _use_console(fmt, out)
            else structlog.processors.JSONRenderer()
        )
        self._log: Any = structlog.wrap_logger(
            structlog.WriteLogger(out),  # one write per line (workers share stdout)
            processors=[
                structlog.contextvars.merge_contextvars,  # e.g. `worker` under --workers N
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                renderer,
            ],
            wrapper_class=structlog.BoundLogger,
            cache_logger_on_first_use=True,
        )

    def wants(self, decision: Decision) -> bool:
        """Denials always; allowed checks with probability ``allow_sample_rate``."""
        if not decision.allowed:
            return True
        rate = self.allow_sample_rate
        return rate >= 1.0 or (rate > 0.0 and self._rng() < rate)

    def record(self, req: CheckInput | None, decision: Decision, seconds: float) -> None:
        """Log the decision if it is a denial or falls in the allowed sample."""
        if self.wants(decision):
            self._log.info(AUDIT_EVENT, **event_fields(req, decision, seconds))


def _header(req: CheckInput | None, name: str) -> str | None:
    if req is None:
        return None
    value = req.headers.get(name)
    return value[:_MAX_HEADER_CHARS] if value else None


def event_fields(req: CheckInput | None, decision: Decision, seconds: float) -> dict[str, Any]:
    """The fields of one audit event (an allow-list: nothing else is ever logged)."""
    principal = decision.principal
    target = decision.target
    display = decision.display or {}
    if target is not None:
        method: str | None = target.method.short
    elif req is not None:
        method = req.path[:160]
    else:
        method = None
    return {
        "request_id": _header(req, "x-request-id"),
        "decision": result_of(decision),
        "reason": str(decision.reason),
        "message": decision.message,
        "status": decision.status,
        "rule": decision.rule,
        "dry_run": decision.dry_run,
        "subject": principal.subject if principal else None,
        "email": display.get("email"),
        "display_name": display.get("name") or display.get("preferred_username"),
        "principal_kind": principal.kind if principal else None,
        "issuer": principal.issuer if principal else None,
        # the client certificate's identity (peer_identity), whether it or a token named the
        # principal: who called from which workload
        "peer": principal.peer.name if principal and principal.peer else None,
        "method": method,
        "namespaces": _shown(target.namespaces) if target else [],
        "task_queues": _shown(target.all_queues) if target else [],
        "latency_ms": round(seconds * 1000.0, 3),
        "client_name": _header(req, "client-name"),
        "client_version": _header(req, "client-version"),
    }


_MAX_SHOWN_VALUES = 32


def _shown(values: tuple[str, ...]) -> list[str]:
    """Values for an audit line: each cut to ``MAX_SHOWN_CHARS``, at most 32 (then ``…``)."""
    out = [clip(v) for v in values[:_MAX_SHOWN_VALUES]]
    if len(values) > _MAX_SHOWN_VALUES:
        out.append(f"… {len(values) - _MAX_SHOWN_VALUES} more")
    return out
