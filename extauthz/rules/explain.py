"""Why a decision came out the way it did, as a JSON-ready dict. Pure: no I/O.

``explain(engine, decision)`` re-runs the engine on the decision's principal and target with a
trace and returns the steps: the principal as the policy sees it (subject, kind, groups,
scopes, client id, Temporal permissions), the deny rules and bindings the engine's index
holds for the method, per-namespace and per-queue outcomes, and the final decision with the
rule that decided.

``rules`` lists every rule of the policy considered for the call, in order: each deny rule,
each binding, the Temporal ``permissions`` claim (when the policy honours it) and
``cluster_read_for_namespace_users`` (when it is on and the method is cluster-read), each with
whether it applies, its effect, why (one clause per check) and a text ``line``; the one the
decision names has ``decides: true`` (``extauthz.rules.considered``). Which rule decides is
re-walked from those per-rule verdicts in the engine's order (``extauthz.rules.rewalk``); a
re-walk that disagreed with the engine would say so in ``note`` (the tests check it never
does). A decision made before the authorizer ran (no token, unreadable body, ...), or before
any rule (health check, missing namespace), lists no rules and is explained by its stage.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from extauthz.model import Decision, Principal, Reason, Target
from extauthz.rules.considered import Considered, consider
from extauthz.rules.engine import Engine, Step, role_names
from extauthz.rules.rewalk import Verdict, before_rules, verdict

_AUTHN = frozenset({
    Reason.MISSING_TOKEN, Reason.MALFORMED_AUTHORIZATION, Reason.MALFORMED_TOKEN,
    Reason.TOKEN_TOO_LARGE, Reason.UNKNOWN_ISSUER, Reason.UNKNOWN_KEY,
    Reason.DISALLOWED_ALGORITHM, Reason.BAD_SIGNATURE, Reason.TOKEN_EXPIRED,
    Reason.TOKEN_NOT_YET_VALID, Reason.TOKEN_ISSUED_IN_FUTURE, Reason.AUDIENCE_MISMATCH,
    Reason.ISSUER_MISMATCH, Reason.INVALID_CLAIMS, Reason.UNSUPPORTED_TOKEN_TYPE,
    Reason.UNSUPPORTED_CRITICAL_HEADER, Reason.KEYS_UNAVAILABLE,
})


def explain(engine: Engine, decision: Decision, *, policy_label: str | None = None
            ) -> dict[str, Any]:
    """A JSON-ready explanation of ``decision`` under ``engine``'s policy."""
    pol = engine.policy
    out: dict[str, Any] = {
        "policy": policy_label or pol.source,
        "profile": pol.profile,
        "decision": {
            "allowed": decision.allowed,
            "code": str(decision.reason),
            "rule": decision.rule,
            "dry_run": decision.dry_run,
        },
    }
    principal, target = decision.principal, decision.target
    if target is not None:
        out["request"] = {
            "method": target.method.short,
            "scope": target.method.scope.value,
            "access": target.method.access.value,
            "namespaces": list(target.namespaces),
            "task_queues": list(target.task_queues),
            "by_namespace_id": target.by_namespace_id,
        }
    if principal is None or target is None:
        stage = "authentication" if decision.reason in _AUTHN else "request"
        if decision.reason is Reason.HEALTH_CHECK:
            stage = "always-allowed"
        out["stage"] = stage
        out["steps"] = []
        out["rules"] = []
        return out
    facts = engine.facts(principal)
    out["principal"] = {
        "subject": principal.subject,
        "issuer": principal.issuer,
        "kind": facts.kind,
        "groups": sorted(facts.groups),
        "scopes": sorted(facts.scopes),
        "client_id": facts.client_id,
        "permissions": {
            **({"temporal-system": role_names(principal.system)} if principal.system else {}),
            **{ns: role_names(r) for ns, r in principal.namespaces.items()},
        },
    }
    trace: list[Step] = []
    again = engine.decide(principal, target, trace)
    out["stage"] = "authorization"
    out["steps"] = [asdict(s) for s in trace]
    rules, walked = considered(engine, principal, target)
    deciding = decided_by(rules, walked)
    out["rules"] = [r.as_dict(decides=r is deciding) for r in rules]
    if (walked.allowed, walked.reason, walked.rule, walked.dry_run) != (
            again.allowed, again.reason, again.rule, again.dry_run):
        out["note"] = (f"the rule-by-rule re-walk decides {walked.reason} (rule {walked.rule}); "
                       f"the engine decides {again.reason} (rule {again.rule})")
    if (again.allowed, again.reason) != (decision.allowed, decision.reason):
        # the decision came from another authorizer (e.g. the built-in default): say so
        out["note"] = (f"this policy would decide {again.reason} (rule {again.rule}); the "
                       "decision above came from the authorizer in force")
    return out


def considered(engine: Engine, principal: Principal, target: Target
               ) -> tuple[list[Considered], Verdict]:
    """Every rule of ``engine``'s policy considered for the call, and what they decide."""
    if before_rules(target) is not None:  # decided before any rule: none is considered
        return [], verdict(engine.policy, engine.facts(principal), target, [])
    facts = engine.facts(principal)
    rules = consider(engine.policy, facts, target)
    return rules, verdict(engine.policy, facts, target, rules)


def decided_by(rules: list[Considered], walked: Verdict) -> Considered | None:
    """The considered rule the verdict names (None: no rule, e.g. default deny)."""
    if walked.rule is None:
        return None
    if walked.reason is Reason.EXPLICIT_DENY:
        kinds: tuple[str, ...] = ("deny",)
    elif walked.rule.startswith("permissions"):
        kinds = ("permissions",)
    else:
        kinds = ("binding", "option")
    return next((r for r in rules if r.kind in kinds and r.applies
                 and (r.kind == "permissions" or r.name == walked.rule)), None)
