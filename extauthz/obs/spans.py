"""What one check's span is: its name, its service, its attributes, and where it is sent.

Pure: no OpenTelemetry import (``extauthz.obs.tracing_otel`` turns these into a span).
"""

from __future__ import annotations

from collections.abc import Sequence

from extauthz import methods
from extauthz.model import CheckInput, Decision
from extauthz.obs.metrics import result_of

SPAN_NAME = "extauthz.check"
SERVICE_NAME = "temporal-extauthz"
TRACES_PATH = "/v1/traces"
_MAX_PATH_CHARS = 160
_MAX_REQUEST_ID_CHARS = 128

Attributes = dict[str, str | bool | Sequence[str]]


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
