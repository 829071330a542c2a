"""The environment overlay: a table of variables read with the config file's reader."""

from __future__ import annotations

import re

import pytest

from extauthz.config import ConfigError, Settings, apply_env, environment
from extauthz.config.environment import ISSUER_VARIABLES, VARIABLES


@pytest.mark.parametrize(("env", "message"), [
    ({"EXTAUTHZ_LOG_LEVEL": "loud"},
     "environment: EXTAUTHZ_LOG_LEVEL: log_level: expected one of"),
    ({"EXTAUTHZ_TRACING_ENDPOINT": "collector:4318"},
     "environment: EXTAUTHZ_TRACING_ENDPOINT: tracing.endpoint: expected an http://"),
    ({"EXTAUTHZ_POLICY_POLL_SECONDS": "0"},
     "environment: EXTAUTHZ_POLICY_POLL_SECONDS: policy_poll_seconds: must be greater than 0"),
    ({"EXTAUTHZ_TRANSPORT": "rest"},
     "environment: EXTAUTHZ_TRANSPORT: transport: expected one of grpc, http, both"),
])
def test_a_variable_gets_the_files_validation_and_is_named(env: dict[str, str],
                                                           message: str) -> None:
    """A bad value fails the check the file's key has; the message names variable and key."""
    with pytest.raises(ConfigError) as info:
        apply_env(Settings(), env)
    assert str(info.value).startswith(message), info.value


def test_every_documented_variable_is_in_the_table() -> None:
    """The module docstring and the table list the same variables."""
    documented = set(re.findall(r"``([A-Z_]+_[A-Z_]+)``", environment.__doc__ or ""))
    table = {v.name for v in VARIABLES + ISSUER_VARIABLES} | {"EXTAUTHZ_ALLOW_INSECURE_ISSUER"}
    assert documented == table


def test_unset_and_empty_variables_change_nothing() -> None:
    """No variable (or empty ones that do not mean "off") returns the settings as they were."""
    s = Settings(listen="127.0.0.1:1")
    assert apply_env(s, {}) is s
    assert apply_env(s, {"EXTAUTHZ_LISTEN": " ", "EXTAUTHZ_WORKERS": ""}) is s
