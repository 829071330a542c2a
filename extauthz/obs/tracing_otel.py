"""The OpenTelemetry half of ``extauthz.obs.tracing``: imported only when tracing is enabled.

One ``TracerProvider`` per server process (each worker of ``serve --workers N`` has its own),
not installed as the global one. Spans leave through the SDK's ``BatchSpanProcessor`` (a
background thread; when its queue is full spans are dropped, a check never waits) and the
OTLP/HTTP protobuf exporter (no second gRPC stack in the process). Sampling is parent-based:
a caller's sampled flag is followed, root spans are kept with probability ``sample_ratio``.
"""

from __future__ import annotations

import time
from importlib import metadata

import structlog
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from extauthz.model import CheckInput, Decision
from extauthz.obs.metrics import RESULT_ERROR
from extauthz.obs.spans import SERVICE_NAME, SPAN_NAME, span_attributes, traces_url
from extauthz.obs.tracecontext import TRACEPARENT, TRACESTATE, parse_traceparent, parse_tracestate
from extauthz.obs.tracing_config import TracingSettings

log = structlog.get_logger("extauthz.tracing")
# the exporter's timeout per batch: bounds how long a shutdown waits for a dead collector
EXPORT_TIMEOUT_SECONDS = 5.0


class CheckTracer:
    """Records one span per check (``record``); ``shutdown`` flushes what is queued."""

    __slots__ = ("_failed", "_provider", "_tracer")

    def __init__(self, provider: TracerProvider):
        self._provider = provider
        self._tracer = provider.get_tracer("extauthz")
        self._failed = False

    @classmethod
    def start(cls, settings: TracingSettings,
              exporter: SpanExporter | None = None) -> CheckTracer:
        """A tracer exporting over OTLP/HTTP to ``settings.endpoint`` (or ``exporter``)."""
        if exporter is None:
            exporter = OTLPSpanExporter(
                endpoint=traces_url(settings.endpoint),
                headers=dict(settings.headers) if settings.headers else None,
                timeout=EXPORT_TIMEOUT_SECONDS,
            )
        provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
            resource=Resource.create({"service.name": SERVICE_NAME,
                                      "service.version": _version()}),
            shutdown_on_exit=False,
        )
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    def record(self, req: CheckInput | None, decision: Decision, seconds: float) -> None:
        """One finished span for one check: it began ``seconds`` ago and ends now. Never
        raises (the response is built after this returns)."""
        try:
            end = time.time_ns()
            attributes = span_attributes(req, decision)
            span = self._tracer.start_span(
                SPAN_NAME, context=_parent(req), kind=SpanKind.SERVER,
                attributes=attributes, start_time=end - int(seconds * 1e9))
            if attributes["extauthz.decision"] == RESULT_ERROR:
                span.set_status(Status(StatusCode.ERROR, str(decision.reason)))
            span.end(end_time=end)
        except Exception as exc:  # tracing must never fail a check
            if not self._failed:
                self._failed = True
                log.error("tracing.record_failed", error=type(exc).__name__)

    def flush(self, timeout_seconds: float = 10.0) -> bool:
        """Export what is queued now (tests, shutdown)."""
        return self._provider.force_flush(int(timeout_seconds * 1000))

    def shutdown(self) -> None:
        """Flush and stop the export thread."""
        self._provider.shutdown()


_ROOT = Context()


def _parent(req: CheckInput | None) -> Context:
    """The caller's span from ``traceparent``/``tracestate``; an empty context (a root span)
    when absent or invalid."""
    if req is None:
        return _ROOT
    headers = req.headers
    parent = parse_traceparent(headers.get(TRACEPARENT))
    if parent is None:
        return _ROOT
    state = parse_tracestate(headers.get(TRACESTATE))
    span_context = SpanContext(
        trace_id=parent.trace_id, span_id=parent.span_id, is_remote=True,
        trace_flags=TraceFlags(parent.flags & TraceFlags.SAMPLED),
        trace_state=TraceState(list(state)) if state else None)
    return set_span_in_context(NonRecordingSpan(span_context), _ROOT)


def _version() -> str:
    try:
        return metadata.version("temporal-extauthz")
    except metadata.PackageNotFoundError:
        return "unknown"
