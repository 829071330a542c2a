"""The ``tls`` and ``tracing`` blocks and the checks across keys, shared by file and environment.

Each reader takes the values already in force (``base``: the defaults for a file, the file's
settings for the environment) and returns them with the block's keys on top, checked.
Messages name the key path (and, from the environment, the variable: ``Reader.label``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from extauthz.config.settings import (
    GRPC_SERVERS,
    TRANSPORTS,
    Settings,
    TLSSettings,
    parse_host_port,
)
from extauthz.obs.tracing_config import TracingSettings, missing_module, otel_proto_clash
from extauthz.yamlread import ConfigError, Reader

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def relative_to(path: str, base_dir: Path | None) -> str:
    """A path from a config file, resolved against the file's directory (None: as given)."""
    if not path or base_dir is None or Path(path).is_absolute():
        return path
    return str(base_dir / path)


def read_tls(r: Reader, base: TLSSettings, base_dir: Path | None) -> TLSSettings:
    """The ``tls`` block under ``r`` on top of ``base``, checked."""
    t = r.child("tls")
    ca = relative_to(t.get("client_ca_file", str, base.client_ca_file), base_dir)
    tls = TLSSettings(
        cert_file=relative_to(t.get("cert_file", str, base.cert_file), base_dir),
        key_file=relative_to(t.get("key_file", str, base.key_file), base_dir),
        client_ca_file=ca,
        # a CA set here (where none was) asks for client certificates unless told otherwise
        require_client_cert=t.get("require_client_cert", bool, base.require_client_cert or (
            bool(ca) and not base.client_ca_file)),
    )
    t.done()
    check_tls(tls, r.label(r.key("tls")), r.source)
    return tls


def check_tls(tls: TLSSettings, key: str, source: str) -> None:
    """Reject incomplete TLS settings (the files themselves are read when the server starts)."""
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError(f"{source}: {key}: cert_file and key_file go together (PEM "
                          "certificate chain and its private key)")
    if (tls.client_ca_file or tls.require_client_cert) and not tls.cert_file:
        raise ConfigError(f"{source}: {key}: client_ca_file/require_client_cert need "
                          "cert_file and key_file (mTLS is TLS first)")
    if tls.require_client_cert and not tls.client_ca_file:
        raise ConfigError(f"{source}: {key}: require_client_cert needs client_ca_file, the CA "
                          "that signs the clients' certificates")


def read_tracing(r: Reader, base: TracingSettings) -> TracingSettings:
    """The ``tracing`` block under ``r`` on top of ``base``, checked."""
    t = r.child("tracing")
    headers = base.headers
    if t.has("headers"):
        raw = t.raw("headers")
        if not isinstance(raw, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
            raise t.error("headers", "expected a mapping of header name to string value")
        headers = tuple(raw.items())
    tracing = TracingSettings(
        enabled=t.get("enabled", bool, base.enabled),
        endpoint=t.get("endpoint", str, base.endpoint).strip(),
        headers=headers,
        sample_ratio=t.get("sample_ratio", float, base.sample_ratio),
    )
    t.done()
    check_tracing(tracing, t)
    return tracing


def check_tracing(tracing: TracingSettings, t: Reader) -> None:
    """Reject bad ``tracing`` settings, and ``enabled`` without the ``tracing`` extra."""
    endpoint = tracing.endpoint
    scheme, sep, rest = endpoint.partition("://")
    if endpoint and (scheme not in ("http", "https") or not sep or not rest.split("/")[0]):
        raise t.error("endpoint", "expected an http:// or https:// URL of an OTLP/HTTP "
                      f"receiver (e.g. http://collector:4318), got {endpoint!r}")
    if not 0.0 <= tracing.sample_ratio <= 1.0:
        raise t.error("sample_ratio", "expected a fraction between 0 and 1, got "
                      f"{tracing.sample_ratio!r}")
    for name, value in tracing.headers:
        if not name or not set(name) <= _TOKEN:
            raise t.error("headers", f"{name!r} is not a valid header name")
        if "\r" in value or "\n" in value:
            raise t.error(f"headers.{name}", "the value has a line break")
    if tracing.enabled:
        if module := missing_module():
            raise t.error("enabled", f"tracing needs the OpenTelemetry packages ({module} is "
                          "not installed): pip install 'temporal-extauthz[tracing]', or set "
                          "enabled: false")
        if problem := otel_proto_clash():
            raise t.error("enabled", problem)


def check_settings(settings: Settings, r: Reader) -> None:
    """The checks across keys, once every key is read (messages name the key)."""
    check_observability(settings, r)
    parse_host_port(settings.listen, r.label("listen"), r.source)
    if settings.health_listen:
        parse_host_port(settings.health_listen, r.label("health_listen"), r.source)
    if settings.grpc_max_receive_bytes <= settings.max_message_bytes + 5:
        raise r.error("grpc_max_receive_bytes", "must exceed max_message_bytes + 5 (framing) "
                      "plus room for headers, or large workflow inputs are refused for size")


def check_observability(settings: Settings, r: Reader) -> None:
    """Validate the observability and worker keys (messages name the key)."""
    if settings.metrics_listen:
        parse_host_port(settings.metrics_listen, r.label("metrics_listen"), r.source)
    if settings.log_level not in LOG_LEVELS:
        raise r.error("log_level", f"expected one of {', '.join(LOG_LEVELS)}, "
                      f"got {settings.log_level!r}")
    if settings.log_format not in LOG_FORMATS:
        raise r.error("log_format", f"expected one of {', '.join(LOG_FORMATS)}, "
                      f"got {settings.log_format!r}")
    if not 0.0 <= settings.audit_allow_sample_rate <= 1.0:
        raise r.error("audit_allow_sample_rate", "expected a fraction between 0 and 1, got "
                      f"{settings.audit_allow_sample_rate!r}")
    if settings.metrics_subject_label_cap < 0:
        raise r.error("metrics_subject_label_cap", "must be 0 (off) or more")
    if settings.workers < 0:
        raise r.error("workers", f"must be 0 (one per CPU) or more, got {settings.workers}")
    check_transport(settings, r)


def check_transport(settings: Settings, r: Reader) -> None:
    """``transport``, ``http_listen`` and ``http_path_prefix`` (messages name the key)."""
    if settings.transport not in TRANSPORTS:
        raise r.error("transport", f"expected one of {', '.join(TRANSPORTS)}, "
                      f"got {settings.transport!r}")
    if settings.grpc_server not in GRPC_SERVERS:
        raise r.error("grpc_server", f"expected one of {', '.join(GRPC_SERVERS)}, "
                      f"got {settings.grpc_server!r}")
    if not settings.serves_http:
        return
    parse_host_port(settings.http_listen, r.label("http_listen"), r.source)
    prefix = settings.http_path_prefix
    if not prefix.startswith("/") or prefix.endswith("/") or prefix.startswith("/healthz"):
        raise r.error("http_path_prefix", "expected a path like /check (starts with /, no "
                      f"trailing /, not /healthz), got {prefix!r}; it must equal Envoy's "
                      "http_service.path_prefix")
