"""Why a decision came out the way it did, as a JSON-ready dict. Pure: no I/O.

``explain(engine, decision)`` re-runs the engine on the decision's principal and target with a
trace and returns the steps: the principal as the policy sees it (subject, kind, groups,
scopes, client id, Temporal permissions), every deny rule and binding considered for the
method, per-namespace and per-queue outcomes, and the final decision with the rule that
decided. A decision made before the authorizer ran (no token, unreadable body, ...) is explained
by its stage alone.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from extauthz.model import Decision, Reason
from extauthz.rules.engine import Engine, Step, role_names

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
    if (again.allowed, again.reason) != (decision.allowed, decision.reason):
        # the decision came from another authorizer (e.g. the built-in default): say so
        out["note"] = (f"this policy would decide {again.reason} (rule {again.rule}); the "
                       "decision above came from the authorizer in force")
    return out
