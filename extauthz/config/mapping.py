"""Settings from a YAML mapping: the config file's, or the environment turned into one.

``read_settings`` is the one reader of every key: ``from_mapping`` runs it on a file's document
over the defaults, ``extauthz.config.environment`` on the environment's mapping over the file's
settings, so a value gets the same validation wherever it comes from.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from extauthz.auth.types import IssuerConfig
from extauthz.config.blocks import check_settings, read_tls, read_tracing, relative_to
from extauthz.config.issuers import read_issuer
from extauthz.config.peer import read_peer_identity
from extauthz.config.settings import Settings
from extauthz.yamlread import Reader


def from_mapping(data: object, source: str) -> Settings:
    """Settings from a parsed YAML document."""
    base_dir = None if source.startswith("<") else Path(source).parent
    r = Reader(data if data is not None else {}, "", source)
    return read_settings(r, Settings(source=source), base_dir)


def read_settings(r: Reader, base: Settings, base_dir: Path | None) -> Settings:
    """``base`` with the keys of ``r`` on top, checked; ``base_dir`` resolves relative paths."""
    raw_issuers = r.raw("issuers")
    issuers = (base.issuers if raw_issuers is None
               else _issuers(r, raw_issuers or [], base_dir))
    values: dict[str, Any] = {
        "listen": r.get("listen", str, base.listen),
        "issuers": issuers,
        "max_message_bytes": r.positive("max_message_bytes", int, base.max_message_bytes),
        "grpc_max_receive_bytes": r.positive("grpc_max_receive_bytes", int,
                                             base.grpc_max_receive_bytes),
        "shutdown_grace_seconds": r.positive("shutdown_grace_seconds", float,
                                             base.shutdown_grace_seconds),
        "shutdown_delay_seconds": r.get("shutdown_delay_seconds", float,
                                        base.shutdown_delay_seconds),
        "token_cache_entries": r.positive("token_cache_entries", int, base.token_cache_entries),
        "negative_cache_seconds": r.get("negative_cache_seconds", float,
                                        base.negative_cache_seconds),
        "subject_header": r.get("subject_header", str, base.subject_header).lower(),
        "policy_file": relative_to(r.get("policy_file", str, base.policy_file), base_dir),
        "policy_poll_seconds": r.positive("policy_poll_seconds", float,
                                          base.policy_poll_seconds),
        "metrics_listen": r.get("metrics_listen", str, base.metrics_listen),
        "metrics_namespace_labels": r.get("metrics_namespace_labels", bool,
                                          base.metrics_namespace_labels),
        "metrics_namespace_label_cap": r.positive("metrics_namespace_label_cap", int,
                                                  base.metrics_namespace_label_cap),
        "metrics_subject_label_cap": r.get("metrics_subject_label_cap", int,
                                           base.metrics_subject_label_cap),
        "log_level": r.get("log_level", str, base.log_level).lower(),
        "log_format": r.get("log_format", str, base.log_format).lower(),
        "audit_allow_sample_rate": r.get("audit_allow_sample_rate", float,
                                         base.audit_allow_sample_rate),
        "workers": r.get("workers", int, base.workers),
        "tls": read_tls(r, base.tls, base_dir) if r.has("tls") else base.tls,
        "health_listen": r.get("health_listen", str, base.health_listen),
        "transport": r.get("transport", str, base.transport).lower(),
        "grpc_server": r.get("grpc_server", str, base.grpc_server).lower(),
        "http_listen": r.get("http_listen", str, base.http_listen),
        "http_path_prefix": r.get("http_path_prefix", str, base.http_path_prefix),
        "tracing": read_tracing(r, base.tracing) if r.has("tracing") else base.tracing,
        "peer_identity": (read_peer_identity(r, base.peer_identity) if r.has("peer_identity")
                          else base.peer_identity),
    }
    r.done()
    settings = dataclasses.replace(base, **values)
    check_settings(settings, r)
    return settings


def _issuers(r: Reader, raw: object, base_dir: Path | None) -> tuple[IssuerConfig, ...]:
    if not isinstance(raw, list):
        raise r.error("issuers", "expected a list of issuers")
    issuers = tuple(read_issuer(Reader(item, r.key(f"issuers[{i}]"), r.source, r.dialect),
                                base_dir)
                    for i, item in enumerate(raw))
    names = [i.issuer for i in issuers]
    if len(set(names)) != len(names):
        raise r.error("issuers", "the same issuer is listed twice")
    return issuers
