"""Which considered rule decides: the engine's order of evaluation, re-walked over the rules
``extauthz.rules.considered`` evaluated one by one. Pure: no I/O.

The engine decides from indexes and gates for speed; this module decides again from the plain
per-rule verdicts, in the order the engine documents (always-allowed methods, missing
namespace, deny rules in file order, grants per reached namespace with task queues, dry-run).
``explain`` marks the rule it names, and the tests check that it agrees with the engine on
allowed, reason, rule and dry-run for generated policies, principals and calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from extauthz import methods
from extauthz.model import Reason, Role, Scope, Target
from extauthz.rules.considered import (
    CLUSTER_READ_RULE,
    DENIES,
    Considered,
)
from extauthz.rules.document import Policy
from extauthz.rules.engine import DRY_RUNNABLE, PERMISSIONS_RULE
from extauthz.rules.matchers import Facts
from extauthz.rules.slots import role_names


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the re-walk decides: as ``Decision``'s allowed, reason, rule and dry-run."""

    allowed: bool
    reason: Reason
    rule: str | None = None
    dry_run: bool = False


def before_rules(target: Target) -> Verdict | None:
    """The verdict of a call decided before any rule is considered, else None."""
    method = target.method
    if method.scope is Scope.HEALTH or method.path in methods.ALWAYS_ALLOWED:
        return Verdict(True, Reason.HEALTH_CHECK)
    if method.scope is Scope.NAMESPACE and not target.namespace and not target.by_namespace_id:
        return Verdict(False, Reason.MISSING_NAMESPACE)
    return None


def verdict(policy: Policy, facts: Facts, target: Target, rules: list[Considered]) -> Verdict:
    """The decision the considered ``rules`` make, in the engine's order."""
    early = before_rules(target)
    if early is not None:
        return early
    would: Verdict | None = None
    for r in rules:
        if r.kind == "deny" and r.applies:
            if r.effect == DENIES:
                return Verdict(False, Reason.EXPLICIT_DENY, r.name)
            would = would or Verdict(False, Reason.EXPLICIT_DENY, r.name)
    if target.method.scope is Scope.CLUSTER:
        result = _cluster(facts, rules)
    else:
        result = _namespaced(facts, target, rules)
    if not result.allowed and policy.dry_run and result.reason in DRY_RUNNABLE:
        would = would or result
    if would is not None and (result.allowed or policy.dry_run):
        return Verdict(True, would.reason, would.rule, dry_run=True)
    return result


def _cluster(facts: Facts, rules: list[Considered]) -> Verdict:
    for kind in ("binding", "permissions", "option"):
        for r in rules:
            if r.kind == kind and r.applies:
                if kind == "permissions":
                    system = role_names(facts.principal.system)
                    return Verdict(True, Reason.ALLOWED,
                                   f"{PERMISSIONS_RULE}:temporal-system:{system}")
                return Verdict(True, Reason.ALLOWED,
                               CLUSTER_READ_RULE if kind == "option" else r.name)
    return Verdict(False, Reason.PERMISSION_DENIED)


def _namespaced(facts: Facts, t: Target, rules: list[Considered]) -> Verdict:
    bindings = [r for r in rules if r.kind == "binding"]
    perm = next((r for r in rules if r.kind == "permissions"), None)
    if t.by_namespace_id and not (any(b.cluster_wide for b in bindings)
                                  or (perm is not None and perm.cluster_wide)):
        return Verdict(False, Reason.NAMESPACE_ID_ONLY)
    p = facts.principal
    has = perm is not None and bool(p.system or p.namespaces)
    named = [(q, False) for q in dict.fromkeys(x for x in t.task_queues if x)]
    named += [(q, True) for q in dict.fromkeys(x for x in t.sticky_queues if x)]
    first: str | None = None
    for ns in t.namespaces:
        granting = [b for b in bindings if ns in b.grants_in]
        permitted = perm is not None and ns in perm.grants_in
        if first is None:
            role = (int(p.system) | int(p.namespaces.get(ns, 0))) if has else 0
            first = granting[0].name if granting else (
                f"{PERMISSIONS_RULE}:{ns}:{role_names(Role(role))}")
        if not granting and not permitted:
            return Verdict(False, Reason.PERMISSION_DENIED)
        if permitted or any(not b.restricted for b in granting):
            continue
        refused = Verdict(False, Reason.TASK_QUEUE_DENIED, granting[0].name)
        if t.method.path in methods.BY_ID_METHODS and not any(b.allow_by_id for b in granting):
            return refused
        if any(not any(q in b.covered for b in granting) for q in named):
            return refused
    if first is None:
        first = next((b.name for b in bindings if b.cluster_wide), PERMISSIONS_RULE)
    return Verdict(True, Reason.ALLOWED, first)
