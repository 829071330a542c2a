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

Parsing follows W3C Trace Context (level 1, with its rules for later versions): lower-case hex
only, version ``ff`` invalid, all-zero ids invalid, version ``00`` exactly 55 characters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from extauthz import methods
from extauthz.model import Decision
from extauthz.obs.metrics import result_of
from extauthz.obs.tracing_config import TracingSettings, TracingUnavailable, otel_proto_clash
from extauthz.pipeline import CheckInput

if TYPE_CHECKING:
    from extauthz.obs.tracing_otel import CheckTracer

SPAN_NAME = "extauthz.check"
SERVICE_NAME = "temporal-extauthz"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACES_PATH = "/v1/traces"
# header values longer than this are not parsed at all (tracestate's own limit is 32 members
# of at most 256 + 256 characters; propagators are asked to keep it under 512)
MAX_HEADER_CHARS = 8192
MAX_TRACESTATE_MEMBERS = 32
_MAX_PATH_CHARS = 160
_MAX_REQUEST_ID_CHARS = 128

_TRACEPARENT = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^,]*)?", re.ASCII)
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16
# W3C tracestate list-member: key "=" value
_TRACESTATE_MEMBER = re.compile(
    r"([a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
    r"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])", re.ASCII)

Attributes = dict[str, str | bool | Sequence[str]]


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A valid ``traceparent``: the caller's trace and the id of its span (our parent)."""

    trace_id: int
    span_id: int
    flags: int

    @property
    def sampled(self) -> bool:
        """The caller recorded its span (flag bit 0)."""
        return bool(self.flags & 0x01)


def parse_traceparent(value: str | None) -> TraceParent | None:
    """``version-traceid-parentid-flags`` → TraceParent, or None when absent or invalid."""
    if not value or len(value) > MAX_HEADER_CHARS:
        return None
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE_ID or span_id == _ZERO_SPAN_ID:
        return None
    return TraceParent(int(trace_id, 16), int(span_id, 16), int(flags, 16))


def parse_tracestate(value: str | None) -> tuple[tuple[str, str], ...]:
    """``key=value,...`` → the members in order; () when absent or invalid (then the whole
    header is dropped, as the W3C spec allows: the trace itself continues)."""
    if not value or len(value) > MAX_HEADER_CHARS:
        return ()
    members: dict[str, str] = {}
    for raw in value.split(","):
        member = raw.strip(" \t")
        if not member:
            continue
        match = _TRACESTATE_MEMBER.fullmatch(member)
        if match is None or match.group(1) in members:
            return ()
        members[match.group(1)] = match.group(2)
    if len(members) > MAX_TRACESTATE_MEMBERS:
        return ()
    return tuple(members.items())


def span_attributes(req: CheckInput | None, decision: Decision) -> Attributes:
    """What a check's span carries: an allow-list, nothing secret (no token, no claims)."""
    attrs: Attributes = {
        "extauthz.decision": result_of(decision),
        "extauthz.reason": str(decision.reason),
        "extauthz.dry_run": decision.dry_run,
    }
    target = decision.target
    if target is not None:
        attrs["extauthz.method"] = target.method.short
        if target.namespace:
            attrs["temporal.namespace"] = target.namespace
        others = tuple(ns for ns in target.namespaces if ns != target.namespace)
        if others:
            attrs["temporal.other_namespaces"] = others
    elif req is not None:
        # denials before the body was read (no token, ...) still name a known method
        entry = methods.lookup(req.path)
        attrs["extauthz.method"] = (entry.method.short if entry is not None
                                    else req.path[:_MAX_PATH_CHARS])
    if decision.rule is not None:
        attrs["extauthz.rule"] = decision.rule
    if decision.principal is not None:
        attrs["extauthz.principal.kind"] = decision.principal.kind
    if req is not None and (request_id := req.headers.get("x-request-id")):
        attrs["extauthz.request_id"] = request_id[:_MAX_REQUEST_ID_CHARS]
    return attrs


def traces_url(endpoint: str) -> str | None:
    """The OTLP/HTTP URL to POST spans to: a URL without a path gets ``/v1/traces``; ""
    → None (the exporter's ``OTEL_EXPORTER_OTLP_*`` variables, else localhost:4318)."""
    if not endpoint:
        return None
    scheme, sep, rest = endpoint.partition("://")
    if sep and "/" not in rest.rstrip("/"):
        return f"{scheme}://{rest.rstrip('/')}{TRACES_PATH}"
    return endpoint


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
