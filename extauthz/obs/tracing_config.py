"""Tracing settings (the ``tracing:`` block) and the probes of the OpenTelemetry install.

The settings type lives with the tracing it configures; ``extauthz.config`` reads and checks
it. Nothing here imports OpenTelemetry unless asked (``otel_proto_clash``) or raises a config
error: ``TracingUnavailable`` is this package's own, converted by the server's wiring.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
from dataclasses import dataclass

# what `tracing.enabled` needs (the `tracing` extra); found, not imported, when loading config
TRACING_MODULES = ("opentelemetry.sdk.trace",
                   "opentelemetry.exporter.otlp.proto.http.trace_exporter")


class TracingUnavailable(Exception):
    """Tracing is enabled but OpenTelemetry cannot load; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """OpenTelemetry spans per check (``tracing:``, ``extauthz.obs.tracing``); off by default."""

    enabled: bool = False
    # OTLP/HTTP (protobuf) URL; one without a path gets /v1/traces. "" = the exporter's own
    # OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, else http://localhost:4318/v1/traces
    endpoint: str = ""
    # sent with every export (e.g. a collector's API key): never printed
    headers: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)
    # probability of keeping a root span; a caller's sampled flag is always followed
    sample_ratio: float = 1.0


def missing_module() -> str | None:
    """The first of ``TRACING_MODULES`` that is not installed (found, not imported)."""
    for module in TRACING_MODULES:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return module
    return None


def otel_proto_clash() -> str | None:
    """Why the OTLP exporter cannot load, when another package overwrote its protobuf modules.

    ``xds-protos`` (the Envoy API, a core dependency) ships an old copy of
    ``opentelemetry/proto`` into the same folder as ``opentelemetry-proto``; whichever pip
    installs last wins, and the old copy lacks what the exporter imports. Only called with
    tracing enabled: it imports one generated protobuf module.
    """
    try:
        from opentelemetry.proto.common.v1 import common_pb2
    except ImportError:
        return None  # not installed at all: the find_spec check reports that
    if hasattr(common_pb2, "InstrumentationScope"):
        return None
    try:
        version = importlib.metadata.version("opentelemetry-proto")
    except importlib.metadata.PackageNotFoundError:
        version = "<the opentelemetry-sdk version>"
    return ("the installed opentelemetry/proto modules are the old copy that xds-protos ships, "
            "not opentelemetry-proto's (pip installed xds-protos last); put them back with: "
            f"pip install --no-deps --force-reinstall opentelemetry-proto=={version}")
