"""The environment overlay: a table of variable → key path, read like the config file.

``apply_env`` turns the variables that are set into the config file's mapping shape (each
value parsed from text by its ``Kind``) and reads it with the file's reader on top of the
settings so far, so a value gets the file's validation; a message names the variable and the
key, e.g. ``environment: EXTAUTHZ_LOG_LEVEL: log_level: expected one of debug, ...``.

The variables (the names users already put in Temporal's Helm values):

- ``TEMPORAL_AUTH_PROVIDER_URL``: the OIDC issuer (discovery at
  ``<url>/.well-known/openid-configuration``); used when the file lists no ``issuers``.
- ``TEMPORAL_AUTH_CLIENT_ID``: the expected audience, unless ``EXTAUTHZ_AUDIENCE`` is set.
- ``EXTAUTHZ_AUDIENCE``: the expected audience(s), comma-separated.
- ``EXTAUTHZ_ISSUER_CA_FILE``: a PEM bundle of the CAs trusted for that issuer's discovery and
  JWKS fetches (a private CA), its ``ca_file``; unset, the system's trust store.
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
- ``EXTAUTHZ_GRPC_SERVER``: ``h2`` (default: the hand-framed server, ``extauthz.server.h2grpc``)
  or ``grpcio`` (grpc.aio): the implementation of the gRPC listener; overrides ``grpc_server``.
- ``EXTAUTHZ_LOG_LEVEL`` / ``EXTAUTHZ_LOG_FORMAT`` / ``EXTAUTHZ_AUDIT_ALLOW_SAMPLE_RATE`` /
  ``EXTAUTHZ_WORKERS``: override ``log_level``, ``log_format``, ``audit_allow_sample_rate`` and
  ``workers``.
- ``EXTAUTHZ_TRACING_ENABLED`` (true/false) / ``EXTAUTHZ_TRACING_ENDPOINT`` /
  ``EXTAUTHZ_TRACING_HEADERS`` (``name=value,name=value``) / ``EXTAUTHZ_TRACING_SAMPLE_RATIO``:
  override the ``tracing`` block (OpenTelemetry spans per check, ``extauthz.obs.tracing``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from extauthz.config.mapping import read_settings
from extauthz.config.settings import Settings, parse_host_port
from extauthz.yamlread import ConfigError, Dialect, Reader

SOURCE = "environment"
_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


@dataclass(frozen=True, slots=True)
class Kind:
    """How a variable's text becomes the value the file would hold (or an error naming it)."""

    parse: Callable[[str, str], object]  # (variable, stripped text) → value


def _text(_var: str, value: str) -> object:
    return value


def _host_port(var: str, value: str) -> object:
    if value:
        parse_host_port(value, var, SOURCE)
    return value


def _listen_or_off(_var: str, value: str) -> object:
    return "" if value.lower() == "off" else value


def _whole(var: str, value: str) -> object:
    if not value.isdigit():
        raise ConfigError(f"{SOURCE}: {var}: expected a whole number, got {value!r}")
    return int(value)


def _number(expected: str) -> Kind:
    def parse(var: str, value: str) -> object:
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{SOURCE}: {var}: expected {expected}, got {value!r}") from None
    return Kind(parse)


def _bool(var: str, value: str) -> object:
    value = value.lower()
    if value not in _TRUE + _FALSE:
        raise ConfigError(f"{SOURCE}: {var}: expected true or false, got {value!r}")
    return value in _TRUE


def _headers(var: str, value: str) -> object:
    pairs: dict[str, str] = {}
    for item in value.split(","):
        name, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"{SOURCE}: {var}: expected name=value,name=value (a value is "
                              "never shown here)")
        pairs[name.strip()] = text.strip()
    return pairs


def _list(_var: str, value: str) -> object:
    return [a.strip() for a in value.split(",") if a.strip()]


TEXT, HOST_PORT, LISTEN_OR_OFF = Kind(_text), Kind(_host_port), Kind(_listen_or_off)
WHOLE, BOOL, HEADERS, LIST = Kind(_whole), Kind(_bool), Kind(_headers), Kind(_list)


@dataclass(frozen=True, slots=True)
class Variable:
    """One variable: the key path it sets and how its text is read."""

    name: str
    path: tuple[str, ...]
    kind: Kind = TEXT
    # set but empty still sets the key ("" = off); otherwise an empty variable is unset
    empty_sets: bool = False


# in the order they are read; a key set by an earlier variable is not set again
VARIABLES = (
    Variable("EXTAUTHZ_LISTEN", ("listen",), HOST_PORT),
    Variable("EXTAUTHZ_POLICY_FILE", ("policy_file",)),
    Variable("EXTAUTHZ_POLICY_POLL_SECONDS", ("policy_poll_seconds",),
             _number("a number of seconds")),
    Variable("EXTAUTHZ_METRICS_LISTEN", ("metrics_listen",), LISTEN_OR_OFF, empty_sets=True),
    Variable("EXTAUTHZ_LOG_LEVEL", ("log_level",)),
    Variable("EXTAUTHZ_LOG_FORMAT", ("log_format",)),
    Variable("EXTAUTHZ_AUDIT_ALLOW_SAMPLE_RATE", ("audit_allow_sample_rate",),
             _number("a number")),
    Variable("EXTAUTHZ_WORKERS", ("workers",), WHOLE),
    Variable("EXTAUTHZ_HEALTH_LISTEN", ("health_listen",), HOST_PORT, empty_sets=True),
    Variable("EXTAUTHZ_TLS_CERT_FILE", ("tls", "cert_file")),
    Variable("EXTAUTHZ_TLS_KEY_FILE", ("tls", "key_file")),
    Variable("EXTAUTHZ_TLS_CLIENT_CA_FILE", ("tls", "client_ca_file")),
    Variable("EXTAUTHZ_TLS_REQUIRE_CLIENT_CERT", ("tls", "require_client_cert"), BOOL),
    Variable("EXTAUTHZ_TRACING_ENABLED", ("tracing", "enabled"), BOOL),
    Variable("EXTAUTHZ_TRACING_ENDPOINT", ("tracing", "endpoint"), empty_sets=True),
    Variable("EXTAUTHZ_TRACING_HEADERS", ("tracing", "headers"), HEADERS),
    Variable("EXTAUTHZ_TRACING_SAMPLE_RATIO", ("tracing", "sample_ratio"),
             _number("a number between 0 and 1")),
    Variable("EXTAUTHZ_TRANSPORT", ("transport",)),
    Variable("EXTAUTHZ_GRPC_SERVER", ("grpc_server",)),
    Variable("EXTAUTHZ_HTTP_LISTEN", ("http_listen",), HOST_PORT),
)
# the one issuer the environment can name; read only when the file lists none
ISSUER_URL = "TEMPORAL_AUTH_PROVIDER_URL"
ISSUER_CA_FILE = "EXTAUTHZ_ISSUER_CA_FILE"
ISSUER_VARIABLES = (
    Variable(ISSUER_URL, ("issuer",)),
    Variable("EXTAUTHZ_AUDIENCE", ("audiences",), LIST),
    Variable("TEMPORAL_AUTH_CLIENT_ID", ("audiences",), LIST),
    Variable(ISSUER_CA_FILE, ("ca_file",)),
)
# not stripped or lower-cased: exactly 1, true or yes allows http://, anything else does not
INSECURE_ISSUER = "EXTAUTHZ_ALLOW_INSECURE_ISSUER"
# what a check across a block's keys names when the environment set some of them
BLOCK_LABELS = {"tls": "EXTAUTHZ_TLS_*", "tracing": "EXTAUTHZ_TRACING_*",
                "issuers": ISSUER_URL}


def _overlay(variables: tuple[Variable, ...], env: Mapping[str, str], prefix: str,
             labels: dict[str, str]) -> dict[str, Any]:
    """The set variables as a nested mapping; ``labels``: key path → variable."""
    data: dict[str, Any] = {}
    for var in variables:
        if var.name not in env:
            continue
        text = env[var.name].strip()
        if not text and not var.empty_sets:
            continue
        *parents, leaf = var.path
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        if leaf in node:
            continue
        node[leaf] = var.kind.parse(var.name, text)
        labels[prefix + ".".join(var.path)] = var.name
        if parents:
            labels.setdefault(parents[0], BLOCK_LABELS[parents[0]])
    return data


def environment_mapping(settings: Settings, env: Mapping[str, str]
                        ) -> tuple[dict[str, Any], dict[str, str]]:
    """The environment as the config file's mapping, and each key path's variable."""
    labels: dict[str, str] = {}
    data = _overlay(VARIABLES, env, "", labels)
    if env.get(ISSUER_CA_FILE, "").strip() and (
            settings.issuers or not env.get(ISSUER_URL, "").strip()):
        # silently ignored, it would leave every issuer on the system store: the opposite
        # of what the operator asked for (the chart's oidc.caBundle beside config issuers)
        why = ("the config file lists issuers" if settings.issuers
               else f"{ISSUER_URL} is not set")
        raise ConfigError(f"{SOURCE}: {ISSUER_CA_FILE}: it is the ca_file of the {ISSUER_URL} "
                          f"issuer, which is not used ({why}), so no issuer would trust it; "
                          "set ca_file on the issuers of the config file (issuers[].ca_file), "
                          "or unset it")
    if env.get(ISSUER_URL, "").strip() and not settings.issuers:
        issuer = _overlay(ISSUER_VARIABLES, env, "issuers[0].", labels)
        issuer["allow_insecure_http"] = env.get(INSECURE_ISSUER, "") in _TRUE
        labels["issuers"] = BLOCK_LABELS["issuers"]
        labels["issuers[0].allow_insecure_http"] = INSECURE_ISSUER
        data["issuers"] = [issuer]
    return data, labels


def apply_env(settings: Settings, env: Mapping[str, str]) -> Settings:
    """``settings`` with the variables of ``env`` on top, validated like the file."""
    data, labels = environment_mapping(settings, env)
    if not data:
        return settings
    return read_settings(Reader(data, "", SOURCE, Dialect(labels=labels)), settings, None)
