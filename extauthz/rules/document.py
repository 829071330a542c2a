"""Policy YAML → validated, compiled, frozen dataclasses. Pure: parsing only, no file watching.

Everything the engine needs per decision is computed here, once: role method sets
(frozensets of ``Method.path``), namespace/queue patterns (``NameSet``), claim paths (tuples),
and matchers. A ``PolicyError`` names the file, the key path and what to do, e.g.
``policy.yaml: bindings[2].roles[0]: unknown role 'writer'; known roles: admin, read, ...``.

Schema (``docs/policy.md`` documents every key):

.. code-block:: yaml

    version: 1
    profile: extended            # or temporal-compatible
    dry_run: false               # global: would-be denials are allowed and flagged
    options:
      temporal_permissions: true             # honour Temporal's `permissions` claim
      cluster_read_for_namespace_users: false  # Temporal issue #11639
    claims: {groups: [groups], scopes: [scope, scp], client_id: [client_id, azp]}
    principal_kind: {service: MATCHER}       # absent: the built-in rule
    roles: {NAME: {categories: [...], methods: [...], roles: [...], except: {...}}}
    bindings: [{name, match: MATCHER, roles, namespaces, task_queues?, sticky_task_queues?,
                allow_by_id?, cluster?}]
    deny: [{name, match: MATCHER, unless?: MATCHER, methods?, categories?, namespaces?,
            task_queues?, dry_run?, message?}]
"""

from __future__ import annotations

import hashlib
import types
from pathlib import Path

from extauthz.rules.compiled import (
    PROFILES,
    SYSTEM_NAMESPACE,
    Binding,
    DenyRule,
    Policy,
    PolicyError,
    RoleDef,
)
from extauthz.rules.read_matchers import claim_sources, matcher
from extauthz.rules.read_roles import roles_of
from extauthz.rules.read_rules import bindings_of, deny_rules_of
from extauthz.rules.reading import flag, reader, text
from extauthz.yamlread import read_bytes, read_yaml, show

__all__ = ["PROFILES", "SYSTEM_NAMESPACE", "Binding", "DenyRule", "Policy", "PolicyError",
           "RoleDef", "compile_policy", "load_bytes", "load_file", "temporal_compatible"]


def temporal_compatible(source: str = "<temporal-compatible>") -> Policy:
    """The policy equivalent to Temporal's default authorizer (no bindings, no deny rules)."""
    return compile_policy({"version": 1, "profile": "temporal-compatible"}, source)


def load_file(path: str | Path) -> Policy:
    """Read, parse, validate and compile a policy file; raises ``PolicyError``."""
    p = Path(path)
    return load_bytes(read_bytes(p, PolicyError, " the policy file"), str(p))


def load_bytes(raw: bytes, source: str) -> Policy:
    """Parse and compile policy YAML given as bytes."""
    data = read_yaml(raw, source, PolicyError)
    return compile_policy(data, source, hashlib.sha256(raw).hexdigest()[:16])


def compile_policy(data: object, source: str, digest: str = "") -> Policy:
    """Validate and compile a parsed policy document."""
    r = reader(data if data is not None else {}, "", source, "a mapping (the policy document)")
    version = r.raw("version")
    if version is not None and version != 1:
        raise r.error("version", f"unsupported version {show(version)}; this server reads 1")
    profile = text(r, "profile", "extended")
    if profile not in PROFILES:
        raise r.error("profile", f"{profile!r} is not a profile; use one of {', '.join(PROFILES)}")
    opts = reader(r.raw("options") or {}, "options", source)
    temporal_permissions = flag(opts, "temporal_permissions", True)
    cluster_read = flag(opts, "cluster_read_for_namespace_users", False)
    opts.done()
    sources = claim_sources(r)
    kind_rule = None
    if r.has("principal_kind"):
        pk = reader(r.raw("principal_kind"), "principal_kind", source)
        if not pk.has("service"):
            raise pk.error("service", "required: a matcher; principals it matches are `service`, "
                           "all others `human`")
        kind_rule = matcher(pk.raw("service"), pk.key("service"), source, allow_kind=False)
        pk.done()
    roles = roles_of(r, profile)
    names: set[str] = set()
    warnings: list[str] = []
    bindings = bindings_of(r, roles, names, warnings)
    deny = deny_rules_of(r, names)
    dry_run = flag(r, "dry_run", False)
    r.done()
    return Policy(
        source=source,
        digest=digest,
        profile=profile,
        dry_run=dry_run,
        temporal_permissions=temporal_permissions,
        cluster_read_for_namespace_users=cluster_read,
        claim_sources=sources,
        kind_rule=kind_rule,
        roles=types.MappingProxyType(roles),
        bindings=bindings,
        deny=deny,
        warnings=tuple(warnings),
    )
