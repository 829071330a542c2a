"""Loading the settings of ``extauthz serve``: the YAML file (if any), then the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from extauthz.config.environment import apply_env
from extauthz.config.mapping import from_mapping
from extauthz.config.settings import Settings
from extauthz.yamlread import ConfigError, read_bytes, read_yaml


def load(path: str | os.PathLike[str] | None = None,
         env: Mapping[str, str] | None = None) -> Settings:
    """Load settings: the YAML file (if any), then the environment on top."""
    env = os.environ if env is None else env
    if path is None:
        settings = Settings(source="<environment>")
    else:
        p = Path(path)
        text = read_bytes(p, ConfigError, "").decode("utf-8")
        settings = from_mapping(read_yaml(text, str(p)), str(p))
    return apply_env(settings, env)


def require_issuers(settings: Settings) -> None:
    """`serve` needs at least one issuer: say how to configure one."""
    if not settings.issuers:
        raise ConfigError(
            f"{settings.source}: issuers: no token issuer configured; set "
            "TEMPORAL_AUTH_PROVIDER_URL (and TEMPORAL_AUTH_CLIENT_ID) or list `issuers` "
            "in the config file"
        )
