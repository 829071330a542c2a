"""Tracing of checks with OpenTelemetry: optional (``tracing.enabled``, the ``tracing`` extra).

Off (the default), nothing of OpenTelemetry is imported: this module imports none of it, and a
check pays one attribute test in ``Telemetry.checked``. On, ``start_tracing`` loads
``extauthz.obs.tracing_otel`` and every check becomes one span ``extauthz.check``:

- its parent is the W3C ``traceparent`` (and ``tracestate``) of the request Envoy asks about
  (gRPC transport: the CheckRequest's headers; HTTP transport: Envoy forwards the two headers
  because ``allowed_headers`` lists them). Absent or malformed, the span is a root. The headers
  are read after the decision is made, so they can never change it;
- it starts when the check began and ends when the decision was made;
- its attributes are the allow-list of ``span_attributes``: method, namespace(s), decision,
  reason code, rule, principal kind, dry run, request id. Never the token, claims, the subject
  or any other header.

The W3C headers are parsed by ``extauthz.obs.tracecontext``; the span's name and attributes are
``extauthz.obs.spans``'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from extauthz.obs.tracing_config import TracingSettings, TracingUnavailable, otel_proto_clash

if TYPE_CHECKING:
    from extauthz.obs.tracing_otel import CheckTracer


def start_tracing(settings: TracingSettings, source: str = "<config>") -> CheckTracer | None:
    """The tracer of this process, or None when tracing is off (nothing imported then).

    ``TracingUnavailable`` (names ``source``) when OpenTelemetry cannot load.
    """
    if not settings.enabled:
        return None
    try:
        from extauthz.obs import tracing_otel
    except ImportError as exc:
        if problem := otel_proto_clash():
            raise TracingUnavailable(f"{source}: tracing.enabled: {problem}") from None
        raise TracingUnavailable(f"{source}: tracing.enabled: tracing needs the OpenTelemetry "
                                 "packages, which are not installed (pip install "
                                 f"'temporal-extauthz[tracing]'): {exc}") from None
    return tracing_otel.CheckTracer.start(settings)
