"""Temporal's default authorizer, ported: (principal, target) → decision."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extauthz import methods, policy
from extauthz.model import (
    STATUS_FORBIDDEN,
    Access,
    Method,
    Principal,
    Reason,
    Role,
    Scope,
    Target,
)

NS = "default"


def method(name: str) -> Method:
    """A method by ``Service/Name`` (or full path)."""
    entry = methods.by_name(name)
    assert entry is not None, name
    return entry.method


START = method("WorkflowService/StartWorkflowExecution")  # Namespace / Write
DESCRIBE_WF = method("WorkflowService/DescribeWorkflowExecution")  # Namespace / ReadOnly
UPDATE_NS = method("WorkflowService/UpdateNamespace")  # Namespace / Admin
LIST_NS = method("WorkflowService/ListNamespaces")  # Cluster / ReadOnly
LIST_CLUSTERS = method("OperatorService/ListClusters")  # Cluster / Admin
ADMIN_DESCRIBE_CLUSTER = method(f"/{methods.ADMIN_SERVICE}/DescribeCluster")  # Cluster / Admin
DESCRIBE_NS = method("WorkflowService/DescribeNamespace")  # Namespace / ReadOnly, id field
DELETE_NS = method("OperatorService/DeleteNamespace")  # Namespace / Admin, namespace_id field
HEALTH = method("/grpc.health.v1.Health/Check")


def who(system: Role = Role.NONE, **namespaces: Role) -> Principal:
    """A principal with a system role and per-namespace roles."""
    return Principal(subject="alice", system=system, namespaces=namespaces)


NONE = who()
SYS_ADMIN, SYS_WRITER, SYS_READER = who(Role.ADMIN), who(Role.WRITER), who(Role.READER)
NS_ADMIN, NS_WRITER, NS_READER = who(default=Role.ADMIN), who(default=Role.WRITER), who(
    default=Role.READER)
NS_WORKER = who(default=Role.WORKER)
NS_WORKER_READER = who(default=Role.WORKER | Role.READER)
OTHER_ADMIN = who(bar=Role.ADMIN)
CASE_ADMIN = who(Default=Role.ADMIN)
SYS_WORKER = who(Role.WORKER)


def at(m: Method, namespace: str = NS, **kw: object) -> Target:
    """A target of ``m`` in ``namespace``."""
    return Target(m, namespace=namespace, **kw)  # type: ignore[arg-type]


# The default authorizer's table (temporal common/authorization/default_authorizer_test.go),
# extended with worker, cluster-scope and case cases.
CASES = [
    ("none/start", NONE, at(START), False),
    ("none/describe", NONE, at(DESCRIBE_WF), False),
    ("none/list-namespaces", NONE, at(LIST_NS, ""), False),
    ("ns-reader/start", NS_READER, at(START), False),
    ("ns-writer/start", NS_WRITER, at(START), True),
    ("ns-admin/start", NS_ADMIN, at(START), True),
    ("ns-reader/describe", NS_READER, at(DESCRIBE_WF), True),
    ("ns-writer/describe", NS_WRITER, at(DESCRIBE_WF), True),
    ("ns-admin/describe", NS_ADMIN, at(DESCRIBE_WF), True),
    ("ns-reader/update-ns", NS_READER, at(UPDATE_NS), False),
    ("ns-writer/update-ns", NS_WRITER, at(UPDATE_NS), False),
    ("ns-admin/update-ns", NS_ADMIN, at(UPDATE_NS), True),
    ("sys-reader/start", SYS_READER, at(START), False),
    ("sys-writer/start", SYS_WRITER, at(START), True),
    ("sys-admin/start", SYS_ADMIN, at(START), True),
    ("sys-reader/describe", SYS_READER, at(DESCRIBE_WF), True),
    ("sys-writer/update-ns", SYS_WRITER, at(UPDATE_NS), False),
    ("sys-admin/update-ns", SYS_ADMIN, at(UPDATE_NS), True),
    ("other-ns-admin/start", OTHER_ADMIN, at(START), False),
    ("other-ns-admin/describe", OTHER_ADMIN, at(DESCRIBE_WF), False),
    ("case-mismatch/describe", CASE_ADMIN, at(DESCRIBE_WF), False),
    ("case-match/describe", CASE_ADMIN, at(DESCRIBE_WF, "Default"), True),
    ("worker/describe", NS_WORKER, at(DESCRIBE_WF), False),
    ("worker/start", NS_WORKER, at(START), False),
    ("sys-worker/describe", SYS_WORKER, at(DESCRIBE_WF), False),
    ("worker+reader/describe", NS_WORKER_READER, at(DESCRIBE_WF), True),
    ("worker+reader/start", NS_WORKER_READER, at(START), False),
    ("sys-reader+ns-writer/start", who(Role.READER, default=Role.WRITER), at(START), True),
    # cluster scope: only the system role counts
    ("ns-admin/list-namespaces", NS_ADMIN, at(LIST_NS, ""), False),
    ("ns-admin-with-ns/list-namespaces", NS_ADMIN, at(LIST_NS), False),
    ("sys-reader/list-namespaces", SYS_READER, at(LIST_NS, ""), True),
    ("sys-worker/list-namespaces", SYS_WORKER, at(LIST_NS, ""), False),
    ("ns-admin/list-clusters", NS_ADMIN, at(LIST_CLUSTERS, ""), False),
    ("sys-writer/list-clusters", SYS_WRITER, at(LIST_CLUSTERS, ""), False),
    ("sys-admin/list-clusters", SYS_ADMIN, at(LIST_CLUSTERS, ""), True),
    ("ns-admin/admin-service", NS_ADMIN, at(ADMIN_DESCRIBE_CLUSTER), False),
    ("sys-writer/admin-service", SYS_WRITER, at(ADMIN_DESCRIBE_CLUSTER, ""), False),
    ("sys-admin/admin-service", SYS_ADMIN, at(ADMIN_DESCRIBE_CLUSTER, ""), True),
    ("none/health", NONE, at(HEALTH, ""), True),
]


@pytest.mark.parametrize(("principal", "target", "allowed"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_default_authorizer_table(principal: Principal, target: Target, allowed: bool) -> None:
    """Each (role, call) pair decides as Temporal's default authorizer does."""
    decision = policy.authorize(principal, target)
    assert decision.allowed is allowed
    if allowed:
        assert decision.reason in (Reason.ALLOWED, Reason.HEALTH_CHECK)
        assert decision.status == 200
    else:
        assert decision.reason is Reason.PERMISSION_DENIED
        assert decision.status == STATUS_FORBIDDEN
    assert decision.principal is principal and decision.target is target


def test_describe_namespace_by_id_needs_the_system_role() -> None:
    """DescribeNamespace{id} without a name: a namespace admin is denied, a system reader not."""
    target = at(DESCRIBE_NS, "", by_namespace_id=True)
    denied = policy.authorize(NS_ADMIN, target)
    assert (denied.allowed, denied.reason) == (False, Reason.NAMESPACE_ID_ONLY)
    assert "DescribeNamespace" in denied.message
    assert policy.authorize(SYS_READER, target).allowed
    assert not policy.authorize(SYS_WORKER, target).allowed


def test_delete_namespace_by_id_needs_system_admin() -> None:
    """OperatorService DeleteNamespace{namespace_id}: system admin only."""
    target = at(DELETE_NS, "", by_namespace_id=True)
    assert policy.authorize(SYS_ADMIN, target).allowed
    assert policy.authorize(SYS_WRITER, target).reason is Reason.NAMESPACE_ID_ONLY
    assert policy.authorize(who(default=Role.ADMIN), target).reason is Reason.NAMESPACE_ID_ONLY


def test_name_and_id_together_still_need_the_system_role() -> None:
    """A name plus an id (which the server may prefer) is judged by the id: system role."""
    target = at(DESCRIBE_NS, NS, by_namespace_id=True)
    assert policy.authorize(NS_ADMIN, target).reason is Reason.NAMESPACE_ID_ONLY
    assert policy.authorize(SYS_READER, target).allowed


@pytest.mark.parametrize("principal", [NONE, NS_ADMIN, SYS_ADMIN, who(**{"": Role.ADMIN})])
def test_empty_namespace_is_missing_namespace(principal: Principal) -> None:
    """A namespace-scoped call with an empty namespace is denied for everyone, admins too."""
    decision = policy.authorize(principal, at(START, ""))
    assert (decision.allowed, decision.reason) == (False, Reason.MISSING_NAMESPACE)
    assert "StartWorkflowExecution" in decision.message


def test_empty_namespace_with_only_other_targets_is_missing_namespace() -> None:
    """Cross-namespace targets do not stand in for the request's own namespace."""
    decision = policy.authorize(SYS_ADMIN, at(START, "", other_namespaces=("default",)))
    assert decision.reason is Reason.MISSING_NAMESPACE


def test_every_cross_namespace_target_must_pass() -> None:
    """Writer on the request's namespace but not on a command's target namespace: denied."""
    target = at(START, NS, other_namespaces=("payments",))
    denied = policy.authorize(NS_WRITER, target)
    assert (denied.allowed, denied.reason) == (False, Reason.PERMISSION_DENIED)
    assert '"payments"' in denied.message
    assert not policy.authorize(who(default=Role.WRITER, payments=Role.READER), target).allowed
    allowed = policy.authorize(who(default=Role.WRITER, payments=Role.WRITER), target)
    assert allowed.allowed


def test_empty_cross_namespace_entries_are_ignored() -> None:
    """An empty nested namespace (the server's own namespace) adds no target."""
    assert policy.authorize(NS_WRITER, at(START, NS, other_namespaces=("", NS))).allowed


def test_denial_message_names_subject_method_and_namespace() -> None:
    """A denial says who, which method and which namespace, with the subject quoted."""
    p = Principal(subject='mallory "x"\n', namespaces={"a": Role.READER})
    decision = policy.authorize(p, at(START, "team-b"))
    assert '"mallory \\"x\\"\\n"' in decision.message
    assert "WorkflowService/StartWorkflowExecution" in decision.message
    assert '"team-b"' in decision.message
    assert "\n" not in decision.message


def test_decision_messages_never_contain_claims_or_tokens() -> None:
    """Claims (which may hold token material) are never echoed in a decision message."""
    secret = "eyJhbGciOiJSUzI1NiJ9.secret-token-material.sig"
    p = Principal(subject="svc", namespaces={NS: Role.ADMIN},
                  claims={"access_token": secret, "permissions": [f"{NS}:admin"]})
    for target in (at(START), at(START, "other"), at(LIST_NS, ""), at(START, ""),
                   at(DESCRIBE_NS, "", by_namespace_id=True)):
        assert secret not in policy.authorize(p, target).message


def test_allow_message_names_the_role_level_and_scope() -> None:
    """An allow is a constant message naming the role level that sufficed and its scope."""
    decision = policy.authorize(NS_WRITER, at(START))
    assert decision.message == "a system or namespace role of write or more"
    assert decision.rule == "temporal-default"
    assert policy.authorize(SYS_READER, at(LIST_NS, "")).message == (
        "a system role of read or more")


# --- property: the policy equals a straightforward reading of the rules ----------------------

NEEDED = {Access.READ_ONLY: 2, Access.WRITE: 4, Access.ADMIN: 8}


def reference_allows(p: Principal, t: Target) -> bool:
    """Temporal's default-authorizer rules (docs/architecture.md), written out independently
    of extauthz.policy."""
    m = t.method
    if m.scope is Scope.HEALTH:
        return True
    need = NEEDED[m.access]
    system = int(p.system)
    if m.scope is Scope.CLUSTER:
        return system >= need
    if t.by_namespace_id and system < need:  # a namespace named by id: system role only
        return False
    if not t.namespace:
        return t.by_namespace_id  # empty namespace is a deny unless named by id
    reached = {t.namespace, *t.other_namespaces} - {""}
    return all(system | int(p.namespaces.get(ns, 0)) >= need for ns in reached)


NAMESPACES = ["default", "Default", "payments", "temporal-system", ""]
roles = st.integers(0, 15).map(Role)
ALL_METHODS = sorted(methods.table().values(), key=lambda e: e.method.path)


@settings(max_examples=600, deadline=None)
@given(
    system=roles,
    granted=st.dictionaries(st.sampled_from(NAMESPACES), roles, max_size=4),
    entry=st.sampled_from(ALL_METHODS),
    namespace=st.sampled_from(NAMESPACES),
    others=st.lists(st.sampled_from(NAMESPACES), max_size=3),
    by_id=st.booleans(),
)
def test_policy_agrees_with_a_straightforward_reading_of_the_rules(
    system: Role, granted: dict[str, Role], entry: methods.MethodEntry, namespace: str,
    others: list[str], by_id: bool,
) -> None:
    """For random roles and random targets over the whole method table, allow/deny agree."""
    p = Principal(subject="s", system=system, namespaces=granted)
    t = Target(entry.method, namespace=namespace, other_namespaces=tuple(others),
               by_namespace_id=by_id)
    decision = policy.authorize(p, t)
    assert decision.allowed is reference_allows(p, t)
    assert decision.allowed is (decision.status == 200)
