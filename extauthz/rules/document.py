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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from extauthz import methods
from extauthz.config import ConfigError
from extauthz.rules import categories as cat
from extauthz.rules.globs import GlobError, NameSet, compile_names
from extauthz.rules.matchers import (
    KINDS,
    ClaimPath,
    ClaimSources,
    Match,
    Matcher,
    PathError,
    as_text,
    parse_path,
)

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


def temporal_compatible(source: str = "<temporal-compatible>") -> Policy:
    """The policy equivalent to Temporal's default authorizer (no bindings, no deny rules)."""
    return compile_policy({"version": 1, "profile": "temporal-compatible"}, source)


# ---- reading ------------------------------------------------------------------------------


class _R:
    """One mapping being read: remembers the key path, rejects unknown keys."""

    def __init__(self, data: object, path: str, source: str, what: str = "a mapping"):
        if not isinstance(data, Mapping):
            raise PolicyError(f"{source}: {path or '<top>'}: expected {what}, got "
                              f"{_show(data)}")
        self.data: Mapping[str, Any] = data
        self.path = path
        self.source = source
        self.used: set[str] = set()

    def key(self, name: str | int) -> str:
        if isinstance(name, int):
            return f"{self.path}[{name}]"
        return f"{self.path}.{name}" if self.path else name

    def err(self, name: str, problem: str) -> PolicyError:
        return PolicyError(f"{self.source}: {self.key(name)}: {problem}")

    def has(self, name: str) -> bool:
        self.used.add(name)
        return self.data.get(name) is not None

    def raw(self, name: str) -> Any:
        self.used.add(name)
        return self.data.get(name)

    def str_(self, name: str, default: str = "", *, required: bool = False) -> str:
        v = self.raw(name)
        if v is None:
            if required:
                raise self.err(name, "required")
            return default
        if not isinstance(v, str):
            raise self.err(name, f"expected a string, got {_show(v)}")
        return v

    def bool_(self, name: str, default: bool) -> bool:
        v = self.raw(name)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.err(name, f"expected true or false, got {_show(v)}")
        return v

    def strings(self, name: str, *, required: bool = False, nonempty: bool = True
                ) -> tuple[str, ...] | None:
        v = self.raw(name)
        if v is None:
            if required:
                raise self.err(name, "required: a list of strings")
            return None
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list):
            raise self.err(name, f"expected a list of strings, got {_show(v)}")
        for i, item in enumerate(v):
            if not isinstance(item, str):
                raise PolicyError(f"{self.source}: {self.key(name)}[{i}]: expected a string, "
                                  f"got {_show(item)} (quote it)")
        if nonempty and not v:
            raise self.err(name, "an empty list matches nothing; list at least one value or "
                           "remove the key")
        return tuple(v)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used, key=str)
        if unknown:
            known = ", ".join(sorted(self.used))
            raise self.err(str(unknown[0]), f"unknown key; known keys here: {known}")


def _show(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


# ---- compiling ----------------------------------------------------------------------------


def load_file(path: str | Path) -> Policy:
    """Read, parse, validate and compile a policy file; raises ``PolicyError``."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{p}: cannot read the policy file: {exc.strerror}") from None
    return load_bytes(raw, str(p))


def load_bytes(raw: bytes, source: str) -> Policy:
    """Parse and compile policy YAML given as bytes."""
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from None
    return compile_policy(data, source, hashlib.sha256(raw).hexdigest()[:16])


def compile_policy(data: object, source: str, digest: str = "") -> Policy:
    """Validate and compile a parsed policy document."""
    r = _R(data if data is not None else {}, "", source, "a mapping (the policy document)")
    version = r.raw("version")
    if version is not None and version != 1:
        raise r.err("version", f"unsupported version {_show(version)}; this server reads 1")
    profile = r.str_("profile", "extended")
    if profile not in PROFILES:
        raise r.err("profile", f"{profile!r} is not a profile; use one of {', '.join(PROFILES)}")
    opts = _R(r.raw("options") or {}, "options", source)
    temporal_permissions = opts.bool_("temporal_permissions", True)
    cluster_read = opts.bool_("cluster_read_for_namespace_users", False)
    opts.done()
    sources = _claim_sources(r)
    kind_rule = None
    if r.has("principal_kind"):
        pk = _R(r.raw("principal_kind"), "principal_kind", source)
        if not pk.has("service"):
            raise pk.err("service", "required: a matcher; principals it matches are `service`, "
                         "all others `human`")
        kind_rule = _matcher(pk.raw("service"), pk.key("service"), source, allow_kind=False)
        pk.done()
    roles = _roles(r, profile)
    names: set[str] = set()
    warnings: list[str] = []
    bindings = _bindings(r, roles, names, warnings)
    deny = _deny_rules(r, names)
    dry_run = r.bool_("dry_run", False)
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


def _paths(r: _R, name: str, default: tuple[ClaimPath, ...]) -> tuple[ClaimPath, ...]:
    values = r.strings(name)
    if values is None:
        return default
    out: list[ClaimPath] = []
    for i, v in enumerate(values):
        try:
            out.append(parse_path(v))
        except PathError as exc:
            raise PolicyError(f"{r.source}: {r.key(name)}[{i}]: {exc}") from None
    return tuple(out)


def _claim_sources(r: _R) -> ClaimSources:
    c = _R(r.raw("claims") or {}, "claims", r.source)
    d = ClaimSources()
    sources = ClaimSources(
        groups=_paths(c, "groups", d.groups),
        scopes=_paths(c, "scopes", d.scopes),
        client_id=_paths(c, "client_id", d.client_id),
    )
    c.done()
    return sources


_MATCH_KEYS = ("anyone", "groups", "scopes", "subject", "client_id", "issuer", "kind", "claims")


def _matcher(data: object, path: str, source: str, *, allow_kind: bool = True) -> Matcher:
    items = data if isinstance(data, list) else [data]
    if not items:
        raise PolicyError(f"{source}: {path}: an empty list matches no one; give at least one "
                          "alternative (e.g. `groups: [team]`)")
    alts = []
    for i, item in enumerate(items):
        alts.append(_match(item, f"{path}[{i}]" if isinstance(data, list) else path, source,
                           allow_kind))
    return Matcher(tuple(alts))


def _match(data: object, path: str, source: str, allow_kind: bool) -> Match:
    m = _R(data, path, source, "a mapping of conditions (groups, scopes, subject, client_id, "
           "issuer, kind, claims, anyone)")
    if not m.data:
        raise m.err("", "empty: say who; write `anyone: true` to match every authenticated "
                    "principal")

    def fs(name: str) -> frozenset[str] | None:
        v = m.strings(name)
        return None if v is None else frozenset(v)

    anyone = m.bool_("anyone", False)
    if m.has("anyone") and not anyone:
        raise m.err("anyone", "`anyone: false` means nothing; remove it")
    kind = m.str_("kind", "") or None
    if kind is not None:
        if not allow_kind:
            raise m.err("kind", "the principal_kind rule cannot itself test `kind`")
        if kind not in KINDS:
            raise m.err("kind", f"{kind!r}: use human or service")
    claims: list[tuple[ClaimPath, frozenset[str]]] = []
    if m.has("claims"):
        c = _R(m.raw("claims"), m.key("claims"), source, "a mapping of claim path → value(s)")
        for key, value in c.data.items():
            c.used.add(key)
            kp = c.key(str(key))
            if not isinstance(key, str):
                raise PolicyError(f"{source}: {kp}: claim paths are strings")
            try:
                cp = parse_path(key)
            except PathError as exc:
                raise PolicyError(f"{source}: {kp}: {exc}") from None
            values = value if isinstance(value, list) else [value]
            texts = [as_text(v) for v in values]
            if not values or any(t is None for t in texts):
                raise PolicyError(f"{source}: {kp}: expected a value or a list of values "
                                  "(strings, numbers, true/false)")
            claims.append((cp, frozenset(t for t in texts if t is not None)))
        if not claims:
            raise m.err("claims", "empty; name at least one claim path")
    out = Match(
        anyone=anyone,
        groups=fs("groups"),
        scopes=fs("scopes"),
        subjects=fs("subject"),
        client_ids=fs("client_id"),
        issuers=fs("issuer"),
        kind=kind,
        claims=tuple(claims),
    )
    m.done()
    if anyone and len(m.data) > 1:
        raise m.err("anyone", "`anyone: true` with other conditions is ambiguous; drop `anyone`")
    return out


def _methods(r: _R, name: str) -> frozenset[str]:
    values = r.strings(name) or ()
    out: set[str] = set()
    for i, v in enumerate(values):
        try:
            out |= cat.resolve_method(v)
        except cat.UnknownMethodError:
            hint = cat.suggest(v)
            did = f"; did you mean {', '.join(hint)}?" if hint else ""
            raise PolicyError(
                f"{r.source}: {r.key(name)}[{i}]: unknown method {v!r}{did} (write a method "
                "name like StartWorkflowExecution, Service/Method, or a full path)"
            ) from None
    return frozenset(out)


def _categories(r: _R, name: str) -> frozenset[str]:
    values = r.strings(name) or ()
    out: set[str] = set()
    cats = cat.categories()
    for i, v in enumerate(values):
        if v not in cats:
            raise PolicyError(f"{r.source}: {r.key(name)}[{i}]: unknown category {v!r}; "
                              f"known: {', '.join(cat.CATEGORY_NAMES)}")
        missing = cat.unreviewed() if v in cat.INTENT_NAMES else ()
        if missing:  # a newer temporalio: a method might belong here and would be left out
            raise PolicyError(f"{r.source}: {r.key(name)}[{i}]: category {v!r} is not "
                              "reviewed for methods of the installed temporalio: "
                              f"{', '.join(missing)}; add them to INTENT_REVIEW in "
                              "extauthz/rules/categories.py, or list methods instead")
        out |= cats[v]
    return frozenset(out)


def _roles(r: _R, profile: str) -> dict[str, RoleDef]:
    builtin = cat.builtin_roles(profile)
    roles: dict[str, RoleDef] = {
        n: RoleDef(n, builtin[n], builtin=True) for n in cat.BUILTIN_ROLE_NAMES
    }
    raw = r.raw("roles") or {}
    rr = _R(raw, "roles", r.source, "a mapping of role name → definition")
    for name in rr.data:
        rr.used.add(name)
        if not isinstance(name, str) or not name:
            raise rr.err(str(name), "role names are non-empty strings")
        if name in roles:
            raise rr.err(name, f"{name!r} is a built-in role and cannot be redefined; pick "
                         "another name")
        d = _R(rr.data[name], rr.key(name), r.source)
        grants = _categories(d, "categories") | _methods(d, "methods")
        for i, inner in enumerate(d.strings("roles") or ()):
            if inner not in builtin:
                raise PolicyError(f"{r.source}: {d.key('roles')}[{i}]: {inner!r}: a role can "
                                  f"include only built-in roles ({', '.join(builtin)})")
            grants |= builtin[inner]
        if d.has("except"):
            e = _R(d.raw("except"), d.key("except"), r.source)
            grants -= _categories(e, "categories") | _methods(e, "methods")
            e.done()
        description = d.str_("description")
        if not grants:
            raise d.err("", "grants no method; give `categories`, `methods` or `roles`")
        d.done()
        roles[name] = RoleDef(name, frozenset(grants), description=description)
    return roles


def _names(r: _R, name: str, *, namespace: bool) -> NameSet | None:
    values = r.strings(name)
    if values is None:
        return None
    for i, v in enumerate(values):
        if namespace and v == SYSTEM_NAMESPACE:
            raise PolicyError(f"{r.source}: {r.key(name)}[{i}]: {SYSTEM_NAMESPACE!r} is not a "
                              "namespace here; grant cluster-level roles with `cluster: true`")
        try:
            compile_names([v], namespace=namespace)
        except GlobError as exc:
            raise PolicyError(f"{r.source}: {r.key(name)}[{i}]: {exc}") from None
    return compile_names(values, namespace=namespace)


def _rule_name(r: _R, names: set[str]) -> str:
    name = r.str_("name", required=True)
    if not name.strip():
        raise r.err("name", "must not be empty")
    if name in names:
        raise r.err("name", f"{name!r} is used twice; binding and deny rule names are unique "
                    "(they appear in decisions, logs and metrics)")
    names.add(name)
    return name


def _list(r: _R, name: str) -> list[Any]:
    v = r.raw(name)
    if v is None:
        return []
    if not isinstance(v, list):
        raise r.err(name, "expected a list")
    return v


def _bindings(r: _R, roles: Mapping[str, RoleDef], names: set[str],
              warnings: list[str]) -> tuple[Binding, ...]:
    out: list[Binding] = []
    cluster_cat = cat.categories()["cluster"]
    cluster_read = cat.categories()["cluster-read"]
    builtin_cluster = cat.builtin_cluster_roles()
    for i, item in enumerate(_list(r, "bindings")):
        b = _R(item, f"bindings[{i}]", r.source)
        name = _rule_name(b, names)
        if not b.has("match"):
            raise b.err("match", "required: who this binding is for (e.g. `groups: [team]`)")
        matcher = _matcher(b.raw("match"), b.key("match"), r.source)
        role_names = b.strings("roles", required=True) or ()
        for j, rn in enumerate(role_names):
            if rn not in roles:
                raise PolicyError(f"{r.source}: {b.key('roles')}[{j}]: unknown role {rn!r}; "
                                  f"known roles: {', '.join(sorted(roles))} (define it under "
                                  "`roles`)")
        cluster = b.bool_("cluster", False)
        namespaces = _names(b, "namespaces", namespace=True)
        if namespaces is None and not cluster:
            raise b.err("namespaces", "required: namespace names or patterns (`*` for all); "
                        "or `cluster: true` for a cluster-level binding")
        queues = _names(b, "task_queues", namespace=False)
        granted: frozenset[str] = frozenset().union(*(roles[n].methods for n in role_names))
        ns_methods = granted - cluster_cat
        if cluster:
            cl = granted & cluster_cat
            for n in role_names:
                if roles[n].builtin:
                    cl |= builtin_cluster[n]
        else:
            cl = granted & cluster_read
        if namespaces is None:
            ns_methods = frozenset()
        # `[]` is meaningful here: no sticky queue beyond what task_queues covers
        sticky = (compile_names([]) if b.raw("sticky_task_queues") == []
                  else _names(b, "sticky_task_queues", namespace=False))
        allow_by_id = b.bool_("allow_by_id", False)
        if queues is None:
            for key in ("sticky_task_queues", "allow_by_id"):
                if b.has(key):
                    raise b.err(key, "only means something with `task_queues` (a binding "
                                "without `task_queues` already covers every queue)")
        else:
            # methods the queue restriction cannot bind: they name no queue of their own (a
            # task token is not signed: it can be built for any task of the namespace)
            free = sorted(methods.table()[p].method.short for p in ns_methods
                          if p not in methods.queue_bound_methods()
                          and (allow_by_id or p not in methods.BY_ID_METHODS))
            if free:
                warnings.append(
                    f"{r.source}: {b.key('task_queues')}: binding {name!r} restricts task "
                    f"queues, but {len(free)} of its methods name no queue of the work they "
                    f"act on and reach every workflow of its namespaces (task tokens "
                    f"included: they are not signed): {', '.join(free)}")
        out.append(Binding(
            name=name, matcher=matcher, roles=tuple(role_names), namespaces=namespaces,
            task_queues=queues, cluster=cluster, methods=ns_methods, cluster_methods=cl,
            sticky_task_queues=sticky, allow_by_id=allow_by_id,
        ))
        b.str_("description")
        b.done()
    return tuple(out)


def _deny_rules(r: _R, names: set[str]) -> tuple[DenyRule, ...]:
    out: list[DenyRule] = []
    for i, item in enumerate(_list(r, "deny")):
        d = _R(item, f"deny[{i}]", r.source)
        name = _rule_name(d, names)
        if not d.has("match"):
            raise d.err("match", "required: who this rule refuses (e.g. `groups: [team]`)")
        matcher = _matcher(d.raw("match"), d.key("match"), r.source)
        paths = _methods(d, "methods") | _categories(d, "categories")
        if not paths:
            raise d.err("methods", "a deny rule needs `methods` and/or `categories`")
        out.append(DenyRule(
            name=name,
            matcher=matcher,
            methods=paths,
            namespaces=_names(d, "namespaces", namespace=True),
            task_queues=_names(d, "task_queues", namespace=False),
            unless=(_matcher(d.raw("unless"), d.key("unless"), r.source)
                    if d.has("unless") else None),
            dry_run=d.bool_("dry_run", False),
            message=d.str_("message"),
        ))
        d.str_("description")
        d.done()
    return tuple(out)
