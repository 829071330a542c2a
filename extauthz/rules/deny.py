"""Deny rules: whether one applies to a call (its namespaces, task queues and ``unless``),
and the ``explicit_deny`` decision it makes. Pure: no I/O.
"""

from __future__ import annotations

from extauthz.model import Decision, Principal, Reason, Target
from extauthz.rules.document import DenyRule
from extauthz.rules.matchers import Facts
from extauthz.rules.slots import Step
from extauthz.rules.slots import q as _q


def deny_applies(rule: DenyRule, facts: Facts, target: Target,
                 trace: list[Step] | None) -> bool:
    """Whether ``rule`` (its matcher already holds) applies to ``target``; traced."""
    where = True
    if rule.namespaces is not None:
        # a namespace named by id could be any namespace: every such rule applies
        where = target.by_namespace_id or any(
            ns in rule.namespaces for ns in target.namespaces)
    if where and rule.task_queues is not None:
        where = any(q in rule.task_queues for q in target.all_queues)
    applies = where
    exempt = applies and rule.unless is not None and rule.unless(facts)
    if trace is not None:
        detail = rule.matcher.describe()
        if rule.unless is not None:
            detail += f" unless {rule.unless.describe()}"
        outcome = "applies" if applies and not exempt else (
            "exempt (unless)" if exempt else "does not apply")
        trace.append(Step("deny-rule", rule.name, outcome, detail))
    return applies and not exempt


def explicit_deny(rule: DenyRule, principal: Principal, target: Target) -> Decision:
    """The denial ``rule`` makes of this call (``explicit_deny``, ``rule=`` its name)."""
    return Decision.deny(
        Reason.EXPLICIT_DENY,
        f"subject {_q(principal.subject)}: {target.method.short} is refused by deny rule "
        f"{_q(rule.name)}" + (f": {rule.message}" if rule.message else ""),
        principal=principal, target=target, rule=rule.name,
    )
