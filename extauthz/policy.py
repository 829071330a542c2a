"""Temporal-compatible authorization: a pure function of (principal, target). No I/O.

Temporal's default authorizer (``common/authorization/default_authorizer.go``): health checks
and GetSystemInfo are always allowed; no claims is deny; cluster scope uses only the system
role; namespace scope uses system | namespace role; allow iff the role value is at least the
required one (Reader=2 for ReadOnly, Writer=4 for Write, Admin=8 otherwise). Roles are compared
as numbers, so ``worker`` (1) alone grants nothing.

Beyond Temporal (never weaker): every namespace a request reaches (cross-namespace commands,
multi-operations) must pass, an empty namespace on a namespace-scoped method is a deny, and a
namespace named only by id needs the system role.
"""

from __future__ import annotations

from extauthz.model import (
    REQUIRED_ROLE,
    Decision,
    Principal,
    Reason,
    Role,
    Scope,
    Target,
    quote,
)


def authorize(principal: Principal, target: Target) -> Decision:
    """Decide one call the way Temporal's default authorizer would (or stricter)."""
    method = target.method
    required = REQUIRED_ROLE[method.access]
    if method.scope is Scope.HEALTH:
        return Decision.allow(Reason.HEALTH_CHECK, "health check", principal, target)
    if method.scope is Scope.CLUSTER:
        if principal.system >= required:
            return _allowed(principal, target, required, cluster=True)
        return _denied(principal, target, _CLUSTER)
    if target.by_namespace_id and not target.namespace:
        if principal.system >= required:
            return _allowed(principal, target, required, cluster=True)
        return Decision.deny(
            Reason.NAMESPACE_ID_ONLY,
            f"subject {quote(principal.subject)}: {method.short} names the namespace by id; "
            "only a system (temporal-system) role may do that - send the namespace name",
            principal=principal,
            target=target,
        )
    if not target.namespace:
        return missing_namespace(target, principal)
    if target.by_namespace_id and principal.system < required:
        return Decision.deny(
            Reason.NAMESPACE_ID_ONLY,
            f"subject {quote(principal.subject)}: {method.short} names a namespace id; only a "
            "system (temporal-system) role may do that",
            principal=principal,
            target=target,
        )
    for namespace in target.namespaces:
        if principal.role_in(namespace) < required:
            return _denied(principal, target, f"namespace {quote(namespace)}")
    return _allowed(principal, target, required, cluster=False)


def missing_namespace(target: Target, principal: Principal | None = None) -> Decision:
    """The denial for a namespace-scoped call whose body names no namespace."""
    return Decision.deny(
        Reason.MISSING_NAMESPACE,
        f"{target.method.short} needs a namespace in the request; it was empty "
        "(calls that name their namespace only through a task token must set `namespace`)",
        principal=principal,
        target=target,
    )


def _allowed(principal: Principal, target: Target, required: Role, *, cluster: bool) -> Decision:
    # a constant message: allows are hot, and logs carry subject and namespace as fields
    return Decision.allow(Reason.ALLOWED, _ALLOW_MESSAGE[cluster][required],
                          principal, target, rule="temporal-default")


def _denied(principal: Principal, target: Target, where: str) -> Decision:
    return Decision.deny(
        Reason.PERMISSION_DENIED,
        f"subject {quote(principal.subject)} has no role that allows {target.method.short} "
        f"in {where}",
        principal=principal,
        target=target,
        rule="temporal-default",
    )


_CLUSTER = "the cluster"
_ROLE_NAMES = {Role.READER: "read", Role.WRITER: "write", Role.ADMIN: "admin"}
_ALLOW_MESSAGE = {
    cluster: {
        role: f"a {'system' if cluster else 'system or namespace'} role of {name} or more"
        for role, name in _ROLE_NAMES.items()
    }
    for cluster in (True, False)
}
