"""Typed configuration from a YAML file and/or the environment, validated up front.

Errors name the file, the key path and what to do, e.g.
``config.yaml: issuers[0].leeway_seconds: expected a number, got 'soon'``.

Environment (the names users already put in Temporal's Helm values):

- ``TEMPORAL_AUTH_PROVIDER_URL``: the OIDC issuer (discovery at
  ``<url>/.well-known/openid-configuration``); used when the file lists no ``issuers``.
- ``TEMPORAL_AUTH_CLIENT_ID``: the expected audience, unless ``EXTAUTHZ_AUDIENCE`` is set.
- ``EXTAUTHZ_AUDIENCE``: the expected audience(s), comma-separated.
- ``EXTAUTHZ_LISTEN``: ``host:port`` of the Check server (default ``127.0.0.1:9191``);
  overrides the file's ``listen``.
- ``EXTAUTHZ_ALLOW_INSECURE_ISSUER``: ``1`` allows an ``http://`` issuer (development only).
- ``EXTAUTHZ_POLICY_FILE``: the policy file (``docs/policy.md``); overrides ``policy_file``.
  ``EXTAUTHZ_POLICY_POLL_SECONDS`` overrides ``policy_poll_seconds``.
  Without one, decisions are Temporal's default authorizer's.
- ``EXTAUTHZ_METRICS_LISTEN``: ``host:port`` of the Prometheus ``/metrics`` server (``off`` or
  empty: no metrics server); overrides ``metrics_listen``.
- ``EXTAUTHZ_TLS_CERT_FILE`` / ``EXTAUTHZ_TLS_KEY_FILE`` / ``EXTAUTHZ_TLS_CLIENT_CA_FILE`` /
  ``EXTAUTHZ_TLS_REQUIRE_CLIENT_CERT``: override the ``tls`` block (serve TLS; with a client CA,
  require client certificates: mTLS between Envoy and this server). Files are re-read when they
  change (``extauthz.server.tls``).
- ``EXTAUTHZ_HEALTH_LISTEN``: ``host:port`` of a plaintext server with only ``grpc.health.v1``
  (for Kubernetes ``grpc:`` probes, which cannot present a client certificate); overrides
  ``health_listen``. Empty: health is served on ``listen`` only.
- ``EXTAUTHZ_TRANSPORT``: ``grpc`` (default), ``http`` or ``both``: Envoy's gRPC ext_authz
  protocol on ``listen``, its HTTP protocol on ``http_listen`` (``EXTAUTHZ_HTTP_LISTEN``,
  default ``127.0.0.1:9192``, checks under ``http_path_prefix``, default ``/check``), or both.
  The ``tls`` block applies to every Check listener (HTTPS with ``transport: http``).
- ``EXTAUTHZ_LOG_LEVEL`` / ``EXTAUTHZ_LOG_FORMAT`` / ``EXTAUTHZ_AUDIT_ALLOW_SAMPLE_RATE`` /
  ``EXTAUTHZ_WORKERS``: override ``log_level``, ``log_format``, ``audit_allow_sample_rate`` and
  ``workers``.
- ``EXTAUTHZ_TRACING_ENABLED`` (true/false) / ``EXTAUTHZ_TRACING_ENDPOINT`` /
  ``EXTAUTHZ_TRACING_HEADERS`` (``name=value,name=value``) / ``EXTAUTHZ_TRACING_SAMPLE_RATIO``:
  override the ``tracing`` block (OpenTelemetry spans per check, ``extauthz.obs.tracing``).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from extauthz.auth.keys import MAX_RSA_BITS, MIN_RSA_BITS
from extauthz.auth.types import ASYMMETRIC_ALGORITHMS, IssuerConfig
from extauthz.claims import ClaimMapping, validate_regex

DEFAULT_LISTEN = "127.0.0.1:9191"
DEFAULT_HTTP_LISTEN = "127.0.0.1:9192"
TRANSPORTS = ("grpc", "http", "both")
# above Envoy's max_request_bytes (4 MiB + 5) plus the CheckRequest's headers
DEFAULT_GRPC_MAX_RECEIVE_BYTES = 16 * 1024 * 1024

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration problem; the message names the source and the key."""


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """Server TLS from PEM files (``tls:``); no ``cert_file`` means plaintext (h2c)."""

    cert_file: str = ""
    key_file: str = ""
    # CA bundle that signs the clients' (Envoy's) certificates
    client_ca_file: str = ""
    # default: true when client_ca_file is set (mTLS), else false
    require_client_cert: bool = False

    @property
    def enabled(self) -> bool:
        """Whether the Check server serves TLS."""
        return bool(self.cert_file)


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


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``extauthz serve`` needs."""

    listen: str = DEFAULT_LISTEN
    issuers: tuple[IssuerConfig, ...] = ()
    max_message_bytes: int = 4 * 1024 * 1024
    grpc_max_receive_bytes: int = DEFAULT_GRPC_MAX_RECEIVE_BYTES
    shutdown_grace_seconds: float = 10.0
    shutdown_delay_seconds: float = 2.0
    token_cache_entries: int = 100_000
    negative_cache_seconds: float = 5.0
    subject_header: str = "x-temporal-authz-subject"
    # policy file (extauthz.rules); "" = Temporal's default authorizer. Relative paths in a
    # config file are relative to the config file's directory.
    policy_file: str = ""
    policy_poll_seconds: float = 2.0
    # observability (extauthz.obs): "" = no metrics server
    metrics_listen: str = ""
    metrics_namespace_labels: bool = False
    metrics_namespace_label_cap: int = 50
    metrics_subject_label_cap: int = 50
    log_level: str = "info"
    log_format: str = "auto"
    audit_allow_sample_rate: float = 0.01
    # worker processes on one port; 0 = one per CPU of the cgroup quota (extauthz.server.workers)
    workers: int = 0
    # server TLS / mTLS (extauthz.server.tls); a plaintext health-only port for probes
    tls: TLSSettings = TLSSettings()
    health_listen: str = ""
    # Envoy's gRPC ext_authz protocol on `listen`, its HTTP protocol on `http_listen`, or both
    transport: str = "grpc"
    http_listen: str = DEFAULT_HTTP_LISTEN
    http_path_prefix: str = "/check"
    tracing: TracingSettings = TracingSettings()
    source: str = "<defaults>"

    @property
    def host_port(self) -> tuple[str, int]:
        """``listen`` split into host and port."""
        return parse_host_port(self.listen, "listen", self.source)

    @property
    def serves_grpc(self) -> bool:
        """Whether the gRPC Check service listens (transport grpc or both)."""
        return self.transport != "http"

    @property
    def serves_http(self) -> bool:
        """Whether the HTTP ext_authz service listens (transport http or both)."""
        return self.transport != "grpc"


def parse_host_port(value: str, key: str, source: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) → (host, port), or a ConfigError naming the key."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{source}: {key}: expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


class _Reader:
    """Reads one mapping, remembering the key path for messages and rejecting unknown keys."""

    def __init__(self, data: object, path: str, source: str):
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: {path or '<top>'}: expected a mapping")
        self.data: Mapping[str, Any] = data
        self.path = path
        self.source = source
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.key(name)}: {problem}")

    def get(self, name: str, kind: type[T], default: T) -> T:
        self.used.add(name)
        if name not in self.data or self.data[name] is None:
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.error(name, f"expected {kind.__name__}, got {value!r}")
        return value

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        self.used.add(name)
        value = self.data.get(name)
        if value is None:
            return default
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(name, f"expected a list of strings, got {value!r}")
        return tuple(value)

    def positive(self, name: str, kind: type[T], default: T) -> T:
        value = self.get(name, kind, default)
        if isinstance(value, int | float) and value <= 0:
            raise self.error(name, f"must be greater than 0, got {value!r}")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            known = ", ".join(sorted(self.used))
            raise self.error(unknown[0], f"unknown key (known keys here: {known})")


def _claims(r: _Reader) -> ClaimMapping:
    raw = r.data.get("claims")
    c = _Reader({} if raw is None else raw, r.key("claims"), r.source)
    r.used.add("claims")
    regex = c.get("permissions_regex", str, "") or None
    if regex is not None and (problem := validate_regex(regex)):
        raise c.error("permissions_regex", problem)
    d = ClaimMapping()
    subject_claim = c.get("subject_claim", str, d.subject_claim)
    if not subject_claim:
        raise c.error("subject_claim", "must name a claim (default sub)")
    fallback = c.strings("subject_fallback", d.subject_fallback)
    for i, name in enumerate(fallback):
        if not name:
            raise c.error(f"subject_fallback[{i}]", "must name a claim, e.g. client_id or azp "
                          "(use [] to require the subject claim)")
    mapping = ClaimMapping(
        permissions_claim=c.get("permissions_claim", str, d.permissions_claim),
        permissions_regex=regex,
        subject_claim=subject_claim,
        subject_fallback=fallback,
    )
    c.done()
    return mapping


def _issuer(data: object, path: str, source: str) -> IssuerConfig:
    r = _Reader(data, path, source)
    d = IssuerConfig(issuer="")
    issuer = r.get("issuer", str, "")
    if not issuer:
        raise r.error("issuer", "required: the issuer URL exactly as tokens carry it in `iss`")
    insecure = r.get("allow_insecure_http", bool, False)
    _check_url(r, "issuer", issuer, insecure, allow_file=False)
    jwks = r.strings("jwks_uris", ())
    for i, uri in enumerate(jwks):
        _check_url(r, f"jwks_uris[{i}]", uri, insecure, allow_file=True)
    algorithms = r.strings("algorithms", d.algorithms)
    for alg in algorithms:
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise r.error("algorithms", f"{alg!r} is not allowed; use some of "
                          f"{', '.join(ASYMMETRIC_ALGORITHMS)} (never none or HS*)")
    refresh = r.positive("refresh_interval_seconds", float, d.refresh_interval_seconds)
    cfg = IssuerConfig(
        issuer=issuer,
        audiences=r.strings("audiences", ()),
        jwks_uris=jwks,
        algorithms=algorithms,
        leeway_seconds=r.get("leeway_seconds", float, d.leeway_seconds),
        max_token_bytes=r.positive("max_token_bytes", int, d.max_token_bytes),
        required_typ=r.get("required_typ", str, "") or None,
        refresh_interval_seconds=refresh,
        # an unset bound follows a refresh interval set outside the default bounds
        min_refresh_interval_seconds=r.positive(
            "min_refresh_interval_seconds", float, min(d.min_refresh_interval_seconds, refresh)),
        max_refresh_interval_seconds=r.positive(
            "max_refresh_interval_seconds", float, max(d.max_refresh_interval_seconds, refresh)),
        unknown_kid_refetch_seconds=r.positive(
            "unknown_kid_refetch_seconds", float, d.unknown_kid_refetch_seconds),
        fetch_timeout_seconds=r.positive("fetch_timeout_seconds", float, d.fetch_timeout_seconds),
        max_fetch_bytes=r.positive("max_fetch_bytes", int, d.max_fetch_bytes),
        max_stale_seconds=r.positive("max_stale_seconds", float, d.max_stale_seconds),
        min_rsa_bits=r.get("min_rsa_bits", int, d.min_rsa_bits),
        claims=_claims(r),
        allow_insecure_http=insecure,
    )
    if cfg.leeway_seconds < 0:
        raise r.error("leeway_seconds", "must be 0 or more")
    _check_refresh_bounds(r, cfg)
    if not MIN_RSA_BITS <= cfg.min_rsa_bits <= MAX_RSA_BITS:
        raise r.error("min_rsa_bits", f"must be between {MIN_RSA_BITS} and {MAX_RSA_BITS}, got "
                      f"{cfg.min_rsa_bits}; RSA keys under {MIN_RSA_BITS} bits are never "
                      "accepted (NIST SP 800-131A), whatever the configuration")
    r.done()
    return cfg


def _check_refresh_bounds(r: _Reader, cfg: IssuerConfig) -> None:
    """``min_refresh_interval_seconds <= refresh_interval_seconds <= max_...``.

    Only bounds set in the file can conflict (unset ones follow the interval); the error names
    the bound that was set.
    """
    low, mid, high = (cfg.min_refresh_interval_seconds, cfg.refresh_interval_seconds,
                      cfg.max_refresh_interval_seconds)
    if low > high:
        raise r.error("min_refresh_interval_seconds",
                      f"{low:g} is more than max_refresh_interval_seconds {high:g}")
    if mid < low:
        raise r.error("min_refresh_interval_seconds",
                      f"{low:g} is more than refresh_interval_seconds {mid:g}; the refresh "
                      f"interval must lie between min_refresh_interval_seconds and "
                      f"max_refresh_interval_seconds ({high:g})")
    if mid > high:
        raise r.error("max_refresh_interval_seconds",
                      f"{high:g} is less than refresh_interval_seconds {mid:g}; the refresh "
                      f"interval must lie between min_refresh_interval_seconds ({low:g}) and "
                      "max_refresh_interval_seconds")


def _check_url(r: _Reader, key: str, url: str, insecure: bool, allow_file: bool) -> None:
    if url.startswith("https://") or (allow_file and url.startswith("file://")):
        return
    if url.startswith("http://") and insecure:
        return
    hint = "https:// (or file:// for a local JWKS)" if allow_file else "https://"
    raise r.error(key, f"{url!r} must start with {hint}; plain http:// needs "
                  "allow_insecure_http: true (development only)")


def from_mapping(data: object, source: str) -> Settings:
    """Settings from a parsed YAML document."""
    r = _Reader(data if data is not None else {}, "", source)
    d = Settings()
    raw_issuers = r.data.get("issuers", []) or []
    r.used.add("issuers")
    if not isinstance(raw_issuers, list):
        raise r.error("issuers", "expected a list of issuers")
    issuers = tuple(_issuer(x, f"issuers[{i}]", source) for i, x in enumerate(raw_issuers))
    names = [i.issuer for i in issuers]
    if len(set(names)) != len(names):
        raise r.error("issuers", "the same issuer is listed twice")
    settings = Settings(
        listen=r.get("listen", str, d.listen),
        issuers=issuers,
        max_message_bytes=r.positive("max_message_bytes", int, d.max_message_bytes),
        grpc_max_receive_bytes=r.positive("grpc_max_receive_bytes", int,
                                          d.grpc_max_receive_bytes),
        shutdown_grace_seconds=r.positive("shutdown_grace_seconds", float,
                                          d.shutdown_grace_seconds),
        shutdown_delay_seconds=r.get("shutdown_delay_seconds", float, d.shutdown_delay_seconds),
        token_cache_entries=r.positive("token_cache_entries", int, d.token_cache_entries),
        negative_cache_seconds=r.get("negative_cache_seconds", float, d.negative_cache_seconds),
        subject_header=r.get("subject_header", str, d.subject_header).lower(),
        policy_file=_relative_to(r.get("policy_file", str, d.policy_file), source),
        policy_poll_seconds=r.positive("policy_poll_seconds", float, d.policy_poll_seconds),
        metrics_listen=r.get("metrics_listen", str, d.metrics_listen),
        metrics_namespace_labels=r.get("metrics_namespace_labels", bool,
                                       d.metrics_namespace_labels),
        metrics_namespace_label_cap=r.positive("metrics_namespace_label_cap", int,
                                               d.metrics_namespace_label_cap),
        metrics_subject_label_cap=r.get("metrics_subject_label_cap", int,
                                        d.metrics_subject_label_cap),
        log_level=r.get("log_level", str, d.log_level).lower(),
        log_format=r.get("log_format", str, d.log_format).lower(),
        audit_allow_sample_rate=r.get("audit_allow_sample_rate", float,
                                      d.audit_allow_sample_rate),
        workers=r.get("workers", int, d.workers),
        tls=_tls(r),
        health_listen=r.get("health_listen", str, d.health_listen),
        transport=r.get("transport", str, d.transport).lower(),
        http_listen=r.get("http_listen", str, d.http_listen),
        http_path_prefix=r.get("http_path_prefix", str, d.http_path_prefix),
        tracing=_tracing(r),
        source=source,
    )
    r.done()
    _check_observability(settings, source)
    parse_host_port(settings.listen, "listen", source)
    if settings.health_listen:
        parse_host_port(settings.health_listen, "health_listen", source)
    if settings.grpc_max_receive_bytes <= settings.max_message_bytes + 5:
        raise r.error("grpc_max_receive_bytes", "must exceed max_message_bytes + 5 (framing) "
                      "plus room for headers, or large workflow inputs are refused for size")
    return settings


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")


def _check_observability(settings: Settings, source: str) -> None:
    """Validate the observability and worker keys (messages name the key)."""
    if settings.metrics_listen:
        parse_host_port(settings.metrics_listen, "metrics_listen", source)
    if settings.log_level not in LOG_LEVELS:
        raise ConfigError(f"{source}: log_level: expected one of {', '.join(LOG_LEVELS)}, "
                          f"got {settings.log_level!r}")
    if settings.log_format not in LOG_FORMATS:
        raise ConfigError(f"{source}: log_format: expected one of {', '.join(LOG_FORMATS)}, "
                          f"got {settings.log_format!r}")
    if not 0.0 <= settings.audit_allow_sample_rate <= 1.0:
        raise ConfigError(f"{source}: audit_allow_sample_rate: expected a fraction between 0 "
                          f"and 1, got {settings.audit_allow_sample_rate!r}")
    if settings.metrics_subject_label_cap < 0:
        raise ConfigError(f"{source}: metrics_subject_label_cap: must be 0 (off) or more")
    if settings.workers < 0:
        raise ConfigError(f"{source}: workers: must be 0 (one per CPU) or more, "
                          f"got {settings.workers}")
    _check_transport(settings, source)


def _check_transport(settings: Settings, source: str) -> None:
    """``transport``, ``http_listen`` and ``http_path_prefix`` (messages name the key)."""
    if settings.transport not in TRANSPORTS:
        raise ConfigError(f"{source}: transport: expected one of {', '.join(TRANSPORTS)}, "
                          f"got {settings.transport!r}")
    if not settings.serves_http:
        return
    parse_host_port(settings.http_listen, "http_listen", source)
    prefix = settings.http_path_prefix
    if not prefix.startswith("/") or prefix.endswith("/") or prefix.startswith("/healthz"):
        raise ConfigError(f"{source}: http_path_prefix: expected a path like /check (starts "
                          f"with /, no trailing /, not /healthz), got {prefix!r}; it must "
                          "equal Envoy's http_service.path_prefix")


def _tls(r: _Reader) -> TLSSettings:
    raw = r.data.get("tls")
    r.used.add("tls")
    t = _Reader({} if raw is None else raw, r.key("tls"), r.source)
    ca = _relative_to(t.get("client_ca_file", str, ""), r.source)
    tls = TLSSettings(
        cert_file=_relative_to(t.get("cert_file", str, ""), r.source),
        key_file=_relative_to(t.get("key_file", str, ""), r.source),
        client_ca_file=ca,
        require_client_cert=t.get("require_client_cert", bool, bool(ca)),
    )
    t.done()
    check_tls(tls, r.key("tls"), r.source)
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


def _relative_to(path: str, source: str) -> str:
    """A path from a config file, resolved against the file's directory."""
    if not path or Path(path).is_absolute() or source.startswith("<"):
        return path
    return str(Path(source).parent / path)


def load(path: str | os.PathLike[str] | None = None,
         env: Mapping[str, str] | None = None) -> Settings:
    """Load settings: the YAML file (if any), then the environment on top."""
    env = os.environ if env is None else env
    if path is None:
        settings = Settings(source="<environment>")
    else:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from None
        settings = from_mapping(data, str(p))
    return apply_env(settings, env)


def apply_env(settings: Settings, env: Mapping[str, str]) -> Settings:
    """Overlay the environment variables documented in the module docstring."""
    changes: dict[str, Any] = {}
    if listen := env.get("EXTAUTHZ_LISTEN", "").strip():
        parse_host_port(listen, "EXTAUTHZ_LISTEN", "environment")
        changes["listen"] = listen
    if policy_file := env.get("EXTAUTHZ_POLICY_FILE", "").strip():
        changes["policy_file"] = policy_file
    if poll := env.get("EXTAUTHZ_POLICY_POLL_SECONDS", "").strip():
        try:
            changes["policy_poll_seconds"] = float(poll)
        except ValueError:
            raise ConfigError(f"environment: EXTAUTHZ_POLICY_POLL_SECONDS: expected a number "
                              f"of seconds, got {poll!r}") from None
        if changes["policy_poll_seconds"] <= 0:
            raise ConfigError("environment: EXTAUTHZ_POLICY_POLL_SECONDS: must be more than 0")
    if "EXTAUTHZ_METRICS_LISTEN" in env:
        metrics = env["EXTAUTHZ_METRICS_LISTEN"].strip()
        changes["metrics_listen"] = "" if metrics.lower() in ("", "off") else metrics
    if level := env.get("EXTAUTHZ_LOG_LEVEL", "").strip():
        changes["log_level"] = level.lower()
    if fmt := env.get("EXTAUTHZ_LOG_FORMAT", "").strip():
        changes["log_format"] = fmt.lower()
    if rate := env.get("EXTAUTHZ_AUDIT_ALLOW_SAMPLE_RATE", "").strip():
        try:
            changes["audit_allow_sample_rate"] = float(rate)
        except ValueError:
            raise ConfigError(f"environment: EXTAUTHZ_AUDIT_ALLOW_SAMPLE_RATE: expected a "
                              f"number, got {rate!r}") from None
    if workers := env.get("EXTAUTHZ_WORKERS", "").strip():
        if not workers.isdigit():
            raise ConfigError(f"environment: EXTAUTHZ_WORKERS: expected a whole number, "
                              f"got {workers!r}")
        changes["workers"] = int(workers)
    changes.update(_tls_env_changes(settings, env))
    if (tracing := _tracing_from_env(settings.tracing, env)) is not settings.tracing:
        changes["tracing"] = tracing
    if transport := env.get("EXTAUTHZ_TRANSPORT", "").strip():
        changes["transport"] = transport.lower()
    if http_listen := env.get("EXTAUTHZ_HTTP_LISTEN", "").strip():
        parse_host_port(http_listen, "EXTAUTHZ_HTTP_LISTEN", "environment")
        changes["http_listen"] = http_listen
    url = env.get("TEMPORAL_AUTH_PROVIDER_URL", "").strip()
    if url and not settings.issuers:
        audience = env.get("EXTAUTHZ_AUDIENCE", "").strip() or env.get(
            "TEMPORAL_AUTH_CLIENT_ID", "").strip()
        insecure = env.get("EXTAUTHZ_ALLOW_INSECURE_ISSUER", "") in ("1", "true", "yes")
        data = {
            "issuer": url,
            "audiences": [a.strip() for a in audience.split(",") if a.strip()],
            "allow_insecure_http": insecure,
        }
        changes["issuers"] = (_issuer(data, "TEMPORAL_AUTH_PROVIDER_URL", "environment"),)
    if not changes:
        return settings
    settings = dataclasses.replace(settings, **changes)
    _check_observability(settings, "environment")
    return settings


def require_issuers(settings: Settings) -> None:
    """`serve` needs at least one issuer: say how to configure one."""
    if not settings.issuers:
        raise ConfigError(
            f"{settings.source}: issuers: no token issuer configured; set "
            "TEMPORAL_AUTH_PROVIDER_URL (and TEMPORAL_AUTH_CLIENT_ID) or list `issuers` "
            "in the config file"
        )




def _tls_env_changes(settings: Settings, env: Mapping[str, str]) -> dict[str, Any]:
    """``EXTAUTHZ_HEALTH_LISTEN`` and ``EXTAUTHZ_TLS_*`` as changes to ``settings``."""
    changes: dict[str, Any] = {}
    if "EXTAUTHZ_HEALTH_LISTEN" in env:
        health_listen = env["EXTAUTHZ_HEALTH_LISTEN"].strip()
        if health_listen:
            parse_host_port(health_listen, "EXTAUTHZ_HEALTH_LISTEN", "environment")
        changes["health_listen"] = health_listen
    if (tls := _tls_from_env(settings.tls, env)) is not settings.tls:
        changes["tls"] = tls
    return changes


def _tls_from_env(tls: TLSSettings, env: Mapping[str, str]) -> TLSSettings:
    """The ``tls`` block with the ``EXTAUTHZ_TLS_*`` variables on top (same object if none)."""
    names = {"cert_file": "EXTAUTHZ_TLS_CERT_FILE", "key_file": "EXTAUTHZ_TLS_KEY_FILE",
             "client_ca_file": "EXTAUTHZ_TLS_CLIENT_CA_FILE"}
    changes: dict[str, Any] = {}
    for field, var in names.items():
        if value := env.get(var, "").strip():
            changes[field] = value
    if "client_ca_file" in changes and not tls.client_ca_file:
        changes["require_client_cert"] = True
    if require := env.get("EXTAUTHZ_TLS_REQUIRE_CLIENT_CERT", "").strip().lower():
        if require not in ("1", "true", "yes", "0", "false", "no"):
            raise ConfigError("environment: EXTAUTHZ_TLS_REQUIRE_CLIENT_CERT: expected "
                              f"true or false, got {require!r}")
        changes["require_client_cert"] = require in ("1", "true", "yes")
    if not changes:
        return tls
    tls = dataclasses.replace(tls, **changes)
    check_tls(tls, "EXTAUTHZ_TLS_*", "environment")
    return tls


# what `tracing.enabled` needs (the `tracing` extra); found, not imported, when loading config
TRACING_MODULES = ("opentelemetry.sdk.trace",
                   "opentelemetry.exporter.otlp.proto.http.trace_exporter")
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _tracing(r: _Reader) -> TracingSettings:
    raw = r.data.get("tracing")
    r.used.add("tracing")
    t = _Reader({} if raw is None else raw, r.key("tracing"), r.source)
    d = TracingSettings()
    raw_headers = t.data.get("headers")
    t.used.add("headers")
    if raw_headers is None:
        raw_headers = {}
    if not isinstance(raw_headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw_headers.items()):
        raise t.error("headers", "expected a mapping of header name to string value")
    tracing = TracingSettings(
        enabled=t.get("enabled", bool, d.enabled),
        endpoint=t.get("endpoint", str, d.endpoint).strip(),
        headers=tuple(raw_headers.items()),
        sample_ratio=t.get("sample_ratio", float, d.sample_ratio),
    )
    t.done()
    check_tracing(tracing, r.key("tracing"), r.source)
    return tracing


def check_tracing(tracing: TracingSettings, key: str, source: str) -> None:
    """Reject bad ``tracing`` settings, and ``enabled`` without the ``tracing`` extra."""
    endpoint = tracing.endpoint
    scheme, sep, rest = endpoint.partition("://")
    if endpoint and (scheme not in ("http", "https") or not sep or not rest.split("/")[0]):
        raise ConfigError(f"{source}: {key}.endpoint: expected an http:// or https:// URL of "
                          f"an OTLP/HTTP receiver (e.g. http://collector:4318), got {endpoint!r}")
    if not 0.0 <= tracing.sample_ratio <= 1.0:
        raise ConfigError(f"{source}: {key}.sample_ratio: expected a fraction between 0 and 1, "
                          f"got {tracing.sample_ratio!r}")
    for name, value in tracing.headers:
        if not name or not set(name) <= _TOKEN:
            raise ConfigError(f"{source}: {key}.headers: {name!r} is not a valid header name")
        if "\r" in value or "\n" in value:
            raise ConfigError(f"{source}: {key}.headers.{name}: the value has a line break")
    if tracing.enabled:
        for module in TRACING_MODULES:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                raise ConfigError(
                    f"{source}: {key}.enabled: tracing needs the OpenTelemetry packages "
                    f"({module} is not installed): pip install 'temporal-extauthz[tracing]', "
                    "or set enabled: false")
        if problem := otel_proto_clash():
            raise ConfigError(f"{source}: {key}.enabled: {problem}")


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
        return None  # not installed at all: the find_spec check above reports that
    if hasattr(common_pb2, "InstrumentationScope"):
        return None
    try:
        version = importlib.metadata.version("opentelemetry-proto")
    except importlib.metadata.PackageNotFoundError:
        version = "<the opentelemetry-sdk version>"
    return ("the installed opentelemetry/proto modules are the old copy that xds-protos ships, "
            "not opentelemetry-proto's (pip installed xds-protos last); put them back with: "
            f"pip install --no-deps --force-reinstall opentelemetry-proto=={version}")


def _tracing_from_env(tracing: TracingSettings, env: Mapping[str, str]) -> TracingSettings:
    """The ``tracing`` block with ``EXTAUTHZ_TRACING_*`` on top (same object if none)."""
    changes: dict[str, Any] = {}
    if enabled := env.get("EXTAUTHZ_TRACING_ENABLED", "").strip().lower():
        if enabled not in ("1", "true", "yes", "0", "false", "no"):
            raise ConfigError("environment: EXTAUTHZ_TRACING_ENABLED: expected true or false, "
                              f"got {enabled!r}")
        changes["enabled"] = enabled in ("1", "true", "yes")
    if "EXTAUTHZ_TRACING_ENDPOINT" in env:
        changes["endpoint"] = env["EXTAUTHZ_TRACING_ENDPOINT"].strip()
    if headers := env.get("EXTAUTHZ_TRACING_HEADERS", "").strip():
        pairs = []
        for item in headers.split(","):
            name, sep, value = item.partition("=")
            if not sep:
                raise ConfigError("environment: EXTAUTHZ_TRACING_HEADERS: expected "
                                  "name=value,name=value (a value is never shown here)")
            pairs.append((name.strip(), value.strip()))
        changes["headers"] = tuple(pairs)
    if ratio := env.get("EXTAUTHZ_TRACING_SAMPLE_RATIO", "").strip():
        try:
            changes["sample_ratio"] = float(ratio)
        except ValueError:
            raise ConfigError("environment: EXTAUTHZ_TRACING_SAMPLE_RATIO: expected a number "
                              f"between 0 and 1, got {ratio!r}") from None
    if not changes:
        return tracing
    tracing = dataclasses.replace(tracing, **changes)
    check_tracing(tracing, "EXTAUTHZ_TRACING_*", "environment")
    return tracing
