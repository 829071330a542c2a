"""Helpers for the policy-engine unit tests: policies from YAML text, principals from claims,
targets through the real body scanner."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any

import yaml

from extauthz.claims import ClaimMapper, ClaimMapping
from extauthz.model import Decision, Principal, Target
from extauthz.rules.document import Policy, compile_policy
from extauthz.rules.engine import Engine
from extauthz.rules.tabletest import build_target

_MAPPER = ClaimMapper(ClaimMapping())


def policy(text: str, source: str = "test.yaml") -> Policy:
    """Compile a policy from YAML text."""
    return compile_policy(yaml.safe_load(textwrap.dedent(text)), source)


def engine(text: str) -> Engine:
    """An engine for a policy given as YAML text."""
    return Engine(policy(text))


def principal(**claims: Any) -> Principal:
    """A principal as Temporal's claim mapper builds it from ``claims``."""
    return _MAPPER.principal(claims, str(claims.get("iss", "")))


def target(method: str, request: Mapping[str, Any] | None = None, **fields: Any) -> Target:
    """The Target the server sees for ``method`` with a protobuf-JSON request."""
    t = build_target(method, {**(request or {}), **fields})
    assert isinstance(t, Target), t
    return t


def decide(e: Engine, claims: Mapping[str, Any], method: str,
           request: Mapping[str, Any] | None = None, **fields: Any) -> Decision:
    """One decision, end to end from claims and a request."""
    return e(principal(**claims), target(method, request, **fields))
