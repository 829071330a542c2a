"""The compiled policy: what ``extauthz.rules.document`` builds and the engine decides with.

Immutable; a reload builds a new ``Policy``. ``PolicyError`` is every policy problem (a
``ConfigError``, so the CLI reports it like a config file's).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field

from extauthz.rules.globs import NameSet
from extauthz.rules.matchers import ClaimSources, Matcher
from extauthz.yamlread import ConfigError

PROFILES = ("extended", "temporal-compatible")
SYSTEM_NAMESPACE = "temporal-system"


class PolicyError(ConfigError, ValueError):
    """An invalid policy; the message names the file, the key path and what to do."""


@dataclass(frozen=True, slots=True)
class RoleDef:
    """A role: the method paths it grants (namespace- and cluster-scoped)."""

    name: str
    methods: frozenset[str]
    builtin: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class Binding:
    """Principals matching ``matcher`` get ``roles`` on ``namespaces`` (and queues)."""

    name: str
    matcher: Matcher
    roles: tuple[str, ...]
    namespaces: NameSet | None  # None: no namespace (a cluster-only binding)
    task_queues: NameSet | None  # None: every queue
    cluster: bool
    methods: frozenset[str]  # namespace-scoped paths granted on `namespaces`
    cluster_methods: frozenset[str]  # cluster-scoped paths granted
    # with task_queues: the worker's own sticky queues it may name (None: the SDKs' generated
    # shape, ``sticky.sdk_sticky_name``; an empty set: only names task_queues covers)
    sticky_task_queues: NameSet | None = None
    # with task_queues: also grant the by-id activity completions and heartbeats, which name
    # no queue (off: a queue-restricted grant must not reach other queues' activities)
    allow_by_id: bool = False


@dataclass(frozen=True, slots=True)
class DenyRule:
    """Principals matching ``matcher`` are refused ``methods`` (beats any allow)."""

    name: str
    matcher: Matcher
    methods: frozenset[str]
    namespaces: NameSet | None  # None: wherever (cluster calls included)
    task_queues: NameSet | None  # None: regardless of queues
    unless: Matcher | None = None  # principals matching this are exempt
    dry_run: bool = False
    message: str = ""


@dataclass(frozen=True, slots=True)
class Policy:
    """A loaded, compiled policy. Immutable: reload builds a new one."""

    source: str
    digest: str
    profile: str = "extended"
    dry_run: bool = False
    temporal_permissions: bool = True
    cluster_read_for_namespace_users: bool = False
    claim_sources: ClaimSources = field(default_factory=ClaimSources)
    kind_rule: Matcher | None = None
    roles: Mapping[str, RoleDef] = field(default_factory=lambda: types.MappingProxyType({}))
    bindings: tuple[Binding, ...] = ()
    deny: tuple[DenyRule, ...] = ()
    # what `extauthz validate` warns about: legal, but probably not what the author meant
    warnings: tuple[str, ...] = ()
