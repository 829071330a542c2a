"""Phase 4, authorize: a principal and a target → the decision. Pure: no I/O.

A namespace-scoped call that names no namespace is refused here, whatever the authorizer;
everything else is the authorizer's (Temporal's default ``extauthz.policy.authorize`` or a
policy engine).
"""

from __future__ import annotations

from extauthz.interfaces import Authorizer
from extauthz.model import Decision, Method, Principal, Scope, Target
from extauthz.policy import missing_namespace


def decide(method: Method, principal: Principal, target: Target,
           authorizer: Authorizer) -> Decision:
    """Whether ``principal`` may call ``method`` on ``target``."""
    if method.scope is Scope.NAMESPACE and not (target.namespace or target.by_namespace_id):
        return missing_namespace(target, principal)
    return authorizer(principal, target)
