"""Every rule a decision considers, each with whether it applied and why: the ``rules`` list
of ``extauthz check --explain``. Pure: no I/O.

``consider(policy, facts, target)`` walks the policy's deny rules and bindings in file order
(and the Temporal ``permissions`` claim, when the policy honours it) and evaluates each one on
its own, exactly as the engine would (``extauthz.rules.engine``): its principal matcher, its
methods, its namespaces, its task queues and, for a deny rule, its ``unless``. Which of them
decides is ``extauthz.rules.rewalk``'s job; this module only says what each rule says.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from extauthz import methods
from extauthz.model import Role, Scope, Target
from extauthz.rules.categories import builtin_cluster_roles, builtin_roles, categories
from extauthz.rules.coverage import covers
from extauthz.rules.document import Binding, DenyRule, Policy, RoleDef
from extauthz.rules.engine import PERMISSIONS_RULE
from extauthz.rules.globs import NameSet
from extauthz.rules.matchers import Facts, Matcher
from extauthz.rules.slots import by_bits, role_names

CLUSTER_READ_RULE = "cluster_read_for_namespace_users"
DENIES = "denies"
WOULD_DENY = "would deny (dry-run)"
ALLOWS = "allows"
NO_EFFECT = "no effect"


@dataclass(frozen=True, slots=True)
class Considered:
    """One rule as evaluated for one call."""

    kind: str  # "deny" | "binding" | "permissions" | "option"
    index: int  # 1-based position among the policy's deny rules or bindings (0: the others)
    name: str
    applies: bool
    effect: str  # DENIES | WOULD_DENY | ALLOWS | NO_EFFECT
    why: tuple[str, ...]
    # bindings and permissions: the namespaces where it grants the method (in request order)
    grants_in: tuple[str, ...] = ()
    # a binding: whether it may name its namespace by id (``cluster: true`` on ``*``)
    cluster_wide: bool = False
    cluster: bool = False  # a granting binding with ``cluster: true``
    # a queue-restricted binding: the (queue, sticky) pairs it covers, in request order
    covered: tuple[tuple[str, bool], ...] = ()
    restricted: bool = False
    allow_by_id: bool = False

    @property
    def label(self) -> str:
        """``deny 1 'name'``, ``binding 3 'name'``, ``permissions`` or ``option 'name'``."""
        if self.kind == "permissions":
            return self.kind
        return f"{self.kind} {self.index} {self.name!r}" if self.index else \
            f"{self.kind} {self.name!r}"

    def line(self) -> str:
        """One line of text: the label, each check and its outcome, and the effect."""
        return f"{self.label}: {'; '.join(self.why)} → {self.effect}"

    def as_dict(self, *, decides: bool) -> dict[str, object]:
        """The JSON form (``decides``: this is the rule the decision names)."""
        return {"kind": self.kind, "index": self.index, "name": self.name,
                "applies": self.applies, "effect": self.effect, "why": list(self.why),
                "decides": decides, "line": self.line()}


@functools.cache
def _permission_tables(profile: str) -> tuple[tuple[frozenset[str], ...],
                                              tuple[frozenset[str], ...]]:
    """Built-in role bits → the namespace- and cluster-scoped paths they grant."""
    return by_bits(builtin_roles(profile)), by_bits(builtin_cluster_roles())


def consider(policy: Policy, facts: Facts, target: Target) -> list[Considered]:
    """Each deny rule, each binding, the ``permissions`` claim (when the policy honours it)
    and ``cluster_read_for_namespace_users`` (when it is on and the method is cluster-read),
    evaluated for this call, in that order."""
    perm_ns, perm_cluster = _permission_tables(policy.profile)
    out = [_deny(i, d, policy, facts, target) for i, d in enumerate(policy.deny, start=1)]
    out += [_binding(i, b, policy, facts, target) for i, b in enumerate(policy.bindings, start=1)]
    if policy.temporal_permissions:
        out.append(_permissions(facts, target, perm_ns, perm_cluster))
    if (policy.cluster_read_for_namespace_users and target.method.scope is Scope.CLUSTER
            and target.method.path in categories()["cluster-read"]):
        out.append(_cluster_read(policy, facts, perm_ns))
    return out


def _who(matcher: Matcher, facts: Facts) -> tuple[bool, str]:
    ok = matcher(facts)
    return ok, f"principal {'matches' if ok else 'does not match'} {matcher.describe()}"


def _names(names: tuple[str, ...]) -> str:
    return "[" + ", ".join(names) + "]"


def _in(names: tuple[str, ...], allowed: NameSet, what: str) -> tuple[tuple[str, ...], str]:
    """The ``names`` in ``allowed``, and a clause saying which match."""
    hit = tuple(n for n in names if n in allowed)
    miss = tuple(n for n in names if n not in allowed)
    if not names:
        return hit, f"no {what} named (its {what}: {allowed})"
    if not miss:
        return hit, f"{what} {_names(hit)} match"
    text = f"{what} {_names(miss)} do not match {_names(allowed.patterns)}"
    return hit, (f"{what} {_names(hit)} match, " + text) if hit else text


def _deny(index: int, rule: DenyRule, policy: Policy, facts: Facts, t: Target) -> Considered:
    path = t.method.path
    short = t.method.short
    who, why0 = _who(rule.matcher, facts)
    why = [why0]
    meets = path in rule.methods
    if meets:
        why.append(f"method {short} is one it refuses")
    elif (t.terminates_existing and path in methods.terminating_methods()
          and methods.TERMINATE_PATH in rule.methods):
        meets = True
        why.append(f"{short} terminates the running workflow of its id, and the rule refuses "
                   "TerminateWorkflowExecution")
    else:
        why.append(f"method {short} is not one it refuses")
    where = True
    if rule.namespaces is not None:
        if t.by_namespace_id:
            why.append("the request names its namespace by id: it could be any namespace")
        else:
            hit, clause = _in(t.namespaces, rule.namespaces, "namespaces")
            where = bool(hit)
            why.append(clause)
    if rule.task_queues is not None:
        hit, clause = _in(t.all_queues, rule.task_queues, "task queues")
        where = where and bool(hit)
        why.append(clause)
    applies = who and meets and where
    if applies and rule.unless is not None and rule.unless(facts):
        applies = False
        why.append(f"exempt: unless {rule.unless.describe()} holds")
    effect = NO_EFFECT
    if applies:
        effect = WOULD_DENY if rule.dry_run or policy.dry_run else DENIES
    return Considered("deny", index, rule.name, applies, effect, tuple(why))


def _roles_granting(b: Binding, roles: Mapping[str, RoleDef], path: str) -> tuple[str, ...]:
    """The binding's roles that list ``path`` (all of them when none lists it by name)."""
    named = tuple(n for n in b.roles if n in roles and path in roles[n].methods)
    return named or b.roles


def _binding(index: int, b: Binding, policy: Policy, facts: Facts, t: Target) -> Considered:
    path = t.method.path
    short = t.method.short
    who, why0 = _who(b.matcher, facts)
    why = [why0]
    cluster_scope = t.method.scope is Scope.CLUSTER
    granted = path in (b.cluster_methods if cluster_scope else b.methods)
    if granted:
        roles = _roles_granting(b, policy.roles, path)
        why.append(f"roles {_names(roles)} grant {short}"
                   + (" (cluster: true)" if cluster_scope else ""))
    elif cluster_scope and b.cluster:
        why.append(f"its roles do not grant the cluster-scoped {short}")
    elif cluster_scope:
        why.append(f"{short} is cluster-scoped and the binding has no cluster: true")
    else:
        why.append(f"its roles do not grant {short}")
    if cluster_scope:
        applies = who and granted
        return Considered("binding", index, b.name, applies, ALLOWS if applies else NO_EFFECT,
                          tuple(why))
    grants_in: tuple[str, ...] = ()
    if b.namespaces is None:
        why.append("it names no namespaces (cluster-only)")
    else:
        grants_in, clause = _in(t.namespaces, b.namespaces, "namespaces")
        if t.namespaces or not t.by_namespace_id:
            why.append(clause)
    cluster_wide = bool(b.cluster and b.namespaces is not None and b.namespaces.everything)
    if t.by_namespace_id:
        why.append("the request names its namespace by id: "
                   + ("a cluster: true binding on * may" if cluster_wide else
                      "only a cluster: true binding on * may (this is not one)"))
    restricted = b.task_queues is not None
    covered: list[tuple[str, bool]] = []
    queues_ok = True
    if b.task_queues is not None:
        named = [(q, False) for q in dict.fromkeys(x for x in t.task_queues if x)]
        named += [(q, True) for q in dict.fromkeys(x for x in t.sticky_queues if x)]
        covered = [(q, sticky) for q, sticky in named if covers(b, q, sticky)]
        missed = tuple(q for q, sticky in named if not covers(b, q, sticky))
        shown = tuple(q for q, _ in covered)
        text = f"restricted to task queues {_names(b.task_queues.patterns)}"
        if path in methods.BY_ID_METHODS and not b.allow_by_id:
            queues_ok = False
            why.append(f"{text}: a by-id call, and no allow_by_id")
        elif missed:
            queues_ok = False
            why.append(f"{text}: covers {_names(shown)}, not {_names(missed)}")
        elif named:
            why.append(f"{text}: covers every queue named {_names(shown)}")
        else:
            why.append(f"{text}: the call names no task queue")
    reach = bool(grants_in) or (t.by_namespace_id and not t.namespaces and cluster_wide)
    applies = who and granted and reach
    effect = ALLOWS if applies and queues_ok else NO_EFFECT
    return Considered("binding", index, b.name, applies, effect, tuple(why),
                      grants_in=grants_in if who and granted else (),
                      cluster_wide=cluster_wide and who and granted,
                      cluster=b.cluster and who and granted, covered=tuple(covered),
                      restricted=restricted, allow_by_id=b.allow_by_id)


def _permissions(facts: Facts, t: Target, perm_ns: tuple[frozenset[str], ...],
                 perm_cluster: tuple[frozenset[str], ...]) -> Considered:
    p = facts.principal
    path = t.method.path
    short = t.method.short
    if t.method.scope is Scope.CLUSTER:
        ok = path in perm_cluster[int(p.system)]
        why = (f"temporal-system role {role_names(p.system)} "
               f"{'grants' if ok else 'does not grant'} {short}",)
        return Considered("permissions", 0, "permissions", ok, ALLOWS if ok else NO_EFFECT,
                          why, cluster_wide=ok)
    why_list: list[str] = []
    grants_in: list[str] = []
    has = bool(p.system or p.namespaces)
    for ns in t.namespaces:
        role = (int(p.system) | int(p.namespaces.get(ns, 0))) if has else 0
        ok = has and path in perm_ns[role]
        if ok:
            grants_in.append(ns)
        why_list.append(f"role {role_names(Role(role))} in {ns!r} "
                        f"{'grants' if ok else 'does not grant'} {short}")
    cluster_wide = bool(has and path in perm_ns[int(p.system)])
    if t.by_namespace_id:
        why_list.append(f"temporal-system role {role_names(p.system)} "
                        f"{'may' if cluster_wide else 'may not'} name a namespace by id")
    applies = bool(grants_in) or (t.by_namespace_id and not t.namespaces and cluster_wide)
    return Considered("permissions", 0, "permissions", applies,
                      ALLOWS if applies else NO_EFFECT, tuple(why_list) or ("no namespace",),
                      grants_in=tuple(grants_in), cluster_wide=cluster_wide)


def _cluster_read(policy: Policy, facts: Facts, perm_ns: tuple[frozenset[str], ...]
                  ) -> Considered:
    """``cluster_read_for_namespace_users``: a cluster-read method for anyone that some binding
    or permission gives a role in some namespace (``holder`` names the first such)."""
    holder = next((b.name for b in policy.bindings
                   if b.namespaces is not None and b.methods and b.matcher(facts)), "")
    p = facts.principal
    if not holder and policy.temporal_permissions:
        holder = next((f"{PERMISSIONS_RULE}:{ns}:{role_names(role)}"
                       for ns, role in p.namespaces.items() if perm_ns[role]), "")
    why = (f"a cluster-read method; {holder} gives a role in a namespace" if holder else
           "a cluster-read method; no binding or permission gives a role in any namespace",)
    return Considered("option", 0, CLUSTER_READ_RULE, bool(holder),
                      ALLOWS if holder else NO_EFFECT, why)
