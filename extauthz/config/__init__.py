"""Typed configuration of ``extauthz serve`` from a YAML file and/or the environment.

Validated up front; errors name the file, the key path and what to do, e.g.
``config.yaml: issuers[0].leeway_seconds: expected float, got 'soon'``. The modules:

- ``settings``: the settings types (``Settings``, ``TLSSettings``; ``TracingSettings`` is
  ``extauthz.obs.tracing_config``'s);
- ``mapping``: the one reader of every key (``from_mapping``), with ``issuers`` and ``blocks``
  (``tls``, ``tracing``, the checks across keys); the reading mechanism is ``extauthz.yamlread``,
  shared with the policy loader;
- ``environment``: the table of variables (documented there) read as the same mapping;
- ``loader``: ``load`` (file, then environment) and ``require_issuers``.
"""

from __future__ import annotations

from extauthz.config.blocks import LOG_FORMATS, LOG_LEVELS, check_tls
from extauthz.config.environment import apply_env
from extauthz.config.loader import load, require_issuers
from extauthz.config.mapping import from_mapping
from extauthz.config.settings import (
    DEFAULT_GRPC_MAX_RECEIVE_BYTES,
    DEFAULT_HTTP_LISTEN,
    DEFAULT_LISTEN,
    TRANSPORTS,
    Settings,
    TLSSettings,
    parse_host_port,
)
from extauthz.obs.tracing_config import TracingSettings
from extauthz.yamlread import ConfigError

__all__ = [
    "DEFAULT_GRPC_MAX_RECEIVE_BYTES",
    "DEFAULT_HTTP_LISTEN",
    "DEFAULT_LISTEN",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "TRANSPORTS",
    "ConfigError",
    "Settings",
    "TLSSettings",
    "TracingSettings",
    "apply_env",
    "check_tls",
    "from_mapping",
    "load",
    "parse_host_port",
    "require_issuers",
]
