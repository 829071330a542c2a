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
            return _allowed(principal, target, required, "the cluster")
        return _denied(principal, target, "the cluster")
    if target.by_namespace_id and not target.namespace:
        if principal.system >= required:
            return _allowed(principal, target, required, "a namespace named by id")
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
    where = ", ".join(quote(ns) for ns in target.namespaces)
    return _allowed(principal, target, required, f"namespace {where}")


def missing_namespace(target: Target, principal: Principal | None = None) -> Decision:
    """The denial for a namespace-scoped call whose body names no namespace."""
    return Decision.deny(
        Reason.MISSING_NAMESPACE,
        f"{target.method.short} needs a namespace in the request; it was empty "
        "(calls that name their namespace only through a task token must set `namespace`)",
        principal=principal,
        target=target,
    )


def _allowed(principal: Principal, target: Target, required: Role, where: str) -> Decision:
    return Decision.allow(
        Reason.ALLOWED,
        f"subject {quote(principal.subject)} has {_role_name(required)} on {where}",
        principal,
        target,
        rule="temporal-default",
    )


def _denied(principal: Principal, target: Target, where: str) -> Decision:
    return Decision.deny(
        Reason.PERMISSION_DENIED,
        f"subject {quote(principal.subject)} has no role that allows {target.method.short} "
        f"in {where}",
        principal=principal,
        target=target,
        rule="temporal-default",
    )


def _role_name(role: Role) -> str:
    return {Role.READER: "read", Role.WRITER: "write", Role.ADMIN: "admin"}.get(role, str(role))
