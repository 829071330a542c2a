"""The settings types of ``extauthz serve``: what the loader builds and the server reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from extauthz.auth.types import IssuerConfig
from extauthz.obs.tracing_config import TracingSettings
from extauthz.peers import PeerSettings
from extauthz.yamlread import ConfigError

DEFAULT_LISTEN = "127.0.0.1:9191"
DEFAULT_HTTP_LISTEN = "127.0.0.1:9192"
TRANSPORTS = ("grpc", "http", "both")
# the gRPC listener's implementation: h2 (extauthz.server.h2grpc, the default) or grpcio (grpc.aio)
GRPC_SERVERS = ("h2", "grpcio")
# above Envoy's max_request_bytes (4 MiB + 5) plus the CheckRequest's headers
DEFAULT_GRPC_MAX_RECEIVE_BYTES = 16 * 1024 * 1024


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
    grpc_server: str = "h2"
    http_listen: str = DEFAULT_HTTP_LISTEN
    http_path_prefix: str = "/check"
    tracing: TracingSettings = field(default_factory=TracingSettings)
    # the client certificate Envoy verified as a credential (config.peer; off by default)
    peer_identity: PeerSettings = field(default_factory=PeerSettings)
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
