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
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from extauthz.auth.types import ASYMMETRIC_ALGORITHMS, ClaimMapping, IssuerConfig
from extauthz.claims import validate_regex

DEFAULT_LISTEN = "127.0.0.1:9191"
# above Envoy's max_request_bytes (4 MiB + 5) plus the CheckRequest's headers
DEFAULT_GRPC_MAX_RECEIVE_BYTES = 16 * 1024 * 1024

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration problem; the message names the source and the key."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``extauthz serve`` needs."""

    listen: str = DEFAULT_LISTEN
    issuers: tuple[IssuerConfig, ...] = ()
    max_message_bytes: int = 4 * 1024 * 1024
    grpc_max_receive_bytes: int = DEFAULT_GRPC_MAX_RECEIVE_BYTES
    shutdown_grace_seconds: float = 10.0
    token_cache_entries: int = 100_000
    negative_cache_seconds: float = 5.0
    subject_header: str = "x-temporal-authz-subject"
    source: str = "<defaults>"

    @property
    def host_port(self) -> tuple[str, int]:
        """``listen`` split into host and port."""
        return parse_host_port(self.listen, "listen", self.source)


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
    c = _Reader(r.data.get("claims", {}) or {}, r.key("claims"), r.source)
    r.used.add("claims")
    regex = c.get("permissions_regex", str, "") or None
    if regex is not None and (problem := validate_regex(regex)):
        raise c.error("permissions_regex", problem)
    mapping = ClaimMapping(
        permissions_claim=c.get("permissions_claim", str, "permissions"),
        permissions_regex=regex,
        subject_claim=c.get("subject_claim", str, "sub"),
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
    cfg = IssuerConfig(
        issuer=issuer,
        audiences=r.strings("audiences", ()),
        jwks_uris=jwks,
        algorithms=algorithms,
        leeway_seconds=r.get("leeway_seconds", float, d.leeway_seconds),
        max_token_bytes=r.positive("max_token_bytes", int, d.max_token_bytes),
        required_typ=r.get("required_typ", str, "") or None,
        refresh_interval_seconds=r.positive(
            "refresh_interval_seconds", float, d.refresh_interval_seconds),
        unknown_kid_refetch_seconds=r.positive(
            "unknown_kid_refetch_seconds", float, d.unknown_kid_refetch_seconds),
        fetch_timeout_seconds=r.positive("fetch_timeout_seconds", float, d.fetch_timeout_seconds),
        max_stale_seconds=r.positive("max_stale_seconds", float, d.max_stale_seconds),
        claims=_claims(r),
        allow_insecure_http=insecure,
    )
    if cfg.leeway_seconds < 0:
        raise r.error("leeway_seconds", "must be 0 or more")
    r.done()
    return cfg


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
        token_cache_entries=r.positive("token_cache_entries", int, d.token_cache_entries),
        negative_cache_seconds=r.get("negative_cache_seconds", float, d.negative_cache_seconds),
        subject_header=r.get("subject_header", str, d.subject_header).lower(),
        source=source,
    )
    r.done()
    parse_host_port(settings.listen, "listen", source)
    if settings.grpc_max_receive_bytes <= settings.max_message_bytes + 5:
        raise r.error("grpc_max_receive_bytes", "must exceed max_message_bytes + 5 (framing) "
                      "plus room for headers, or large workflow inputs are refused for size")
    return settings


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
    return dataclasses.replace(settings, **changes) if changes else settings


def require_issuers(settings: Settings) -> None:
    """`serve` needs at least one issuer: say how to configure one."""
    if not settings.issuers:
        raise ConfigError(
            f"{settings.source}: issuers: no token issuer configured; set "
            "TEMPORAL_AUTH_PROVIDER_URL (and TEMPORAL_AUTH_CLIENT_ID) or list `issuers` "
            "in the config file"
        )


