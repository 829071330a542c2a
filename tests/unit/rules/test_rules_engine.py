"""The policy engine: deny beats allow, task queues, namespaces, cluster scope, dry-run."""

from __future__ import annotations

from typing import Any

import pytest
from rules_helpers import decide, engine, principal, target

from extauthz.model import Reason

POLICY = """
version: 1
options: {cluster_read_for_namespace_users: true}
roles:
  starter: {methods: [StartWorkflowExecution, SignalWithStartWorkflowExecution,
                      ExecuteMultiOperation, CreateSchedule, UpdateSchedule]}
bindings:
  - name: readers
    match: {groups: [finance, developers]}
    roles: [read]
    namespaces: ["*"]
  - name: finance-payroll
    match: {groups: [finance]}
    roles: [write]
    namespaces: [payroll]
  - name: dev-write
    match: {groups: [developers]}
    roles: [write]
    namespaces: [default, "dev-*"]
  - name: billing-worker
    match: {client_id: [billing-svc]}
    roles: [worker, starter]
    namespaces: [default]
    task_queues: ["billing-*"]
  - name: billing-extra
    match: {client_id: [billing-svc]}
    roles: [worker]
    namespaces: [default]
    task_queues: [invoices]
  - name: ui
    match: {groups: [ui-users]}
    roles: [cluster-ui]
    namespaces: [default]
  - name: platform
    match: {groups: [platform]}
    roles: [admin]
    namespaces: ["*"]
    cluster: true
deny:
  - name: only-finance-starts-payroll
    match: {anyone: true}
    unless: {groups: [finance]}
    methods: [StartWorkflowExecution]
    namespaces: [payroll]
  - name: no-destroy
    match: {groups: [developers]}
    methods: [TerminateWorkflowExecution, RequestCancelWorkflowExecution,
              ResetWorkflowExecution, WorkflowService/DeleteWorkflowExecution]
  - name: no-secret-queue
    match: {anyone: true}
    methods: [StartWorkflowExecution]
    task_queues: ["secret-*"]
"""
POLICY = POLICY.replace("roles:\n  starter:", "roles:\n  cluster-ui: {categories: [read, "
                        "cluster-read]}\n  starter:")

FIN = {"sub": "fiona", "groups": ["finance"]}
DEV = {"sub": "dave", "groups": ["developers"]}
SVC = {"sub": "billing-svc", "client_id": "billing-svc"}
PLAT = {"sub": "pat", "groups": ["platform"]}


@pytest.fixture(scope="module")
def e() -> Any:
    return engine(POLICY)


@pytest.mark.parametrize(
    ("claims", "method", "request_", "allowed", "reason", "rule"),
    [
        # rule 1 and deny-beats-allow
        (FIN, "StartWorkflowExecution", {"namespace": "payroll"}, True, "allowed",
         "finance-payroll"),
        (DEV, "StartWorkflowExecution", {"namespace": "payroll"}, False, "explicit_deny",
         "only-finance-starts-payroll"),
        (PLAT, "StartWorkflowExecution", {"namespace": "payroll"}, False, "explicit_deny",
         "only-finance-starts-payroll"),
        (PLAT, "TerminateWorkflowExecution", {"namespace": "payroll"}, True, "allowed",
         "platform"),
        (DEV, "ListWorkflowExecutions", {"namespace": "payroll"}, True, "allowed", "readers"),
        (DEV, "DescribeWorkflowExecution", {"namespace": "payroll"}, True, "allowed", "readers"),
        # rule 2
        (DEV, "QueryWorkflow", {"namespace": "default"}, True, "allowed", "readers"),
        (DEV, "GetWorkflowExecutionHistory", {"namespace": "dev-x"}, True, "allowed", "readers"),
        (DEV, "TerminateWorkflowExecution", {"namespace": "default"}, False, "explicit_deny",
         "no-destroy"),
        (DEV, "RequestCancelWorkflowExecution", {"namespace": "dev-x"}, False, "explicit_deny",
         "no-destroy"),
        (DEV, "ResetWorkflowExecution", {"namespace": "default"}, False, "explicit_deny",
         "no-destroy"),
        (DEV, "WorkflowService/DeleteWorkflowExecution", {"namespace": "default"}, False,
         "explicit_deny", "no-destroy"),
        (DEV, "SignalWorkflowExecution", {"namespace": "default"}, True, "allowed", "dev-write"),
        (DEV, "SignalWorkflowExecution", {"namespace": "payroll"}, False, "permission_denied",
         None),
        # deny rule restricted by task queue
        (DEV, "StartWorkflowExecution", {"namespace": "default", "taskQueue": {"name": "secret-1"}},
         False, "explicit_deny", "no-secret-queue"),
        (DEV, "StartWorkflowExecution", {"namespace": "default", "taskQueue": {"name": "open"}},
         True, "allowed", "dev-write"),
        # rule 3: task queues
        (SVC, "PollWorkflowTaskQueue", {"namespace": "default", "taskQueue": {"name": "billing-a"}},
         True, "allowed", "billing-worker"),
        (SVC, "PollWorkflowTaskQueue", {"namespace": "default", "taskQueue": {"name": "invoices"}},
         True, "allowed", "billing-worker"),
        (SVC, "PollWorkflowTaskQueue", {"namespace": "default", "taskQueue": {"name": "billing"}},
         False, "task_queue_denied", "billing-worker"),
        (SVC, "PollActivityTaskQueue", {"namespace": "default",
                                        "taskQueue": {"name": "xbilling-a"}},
         False, "task_queue_denied", "billing-worker"),
        # a sticky poll: `name` is the worker's own sticky queue, covered by the SDK shape
        (SVC, "PollWorkflowTaskQueue", {"namespace": "default", "taskQueue": {
            "name": "123@host-0123456789abcdef0123456789abcdef",
            "kind": "TASK_QUEUE_KIND_STICKY", "normalName": "billing-a"}},
         True, "allowed", "billing-worker"),
        (SVC, "PollWorkflowTaskQueue", {"namespace": "default", "taskQueue": {
            "name": "host:01234567-89ab-4def-8123-456789abcdef",
            "kind": "TASK_QUEUE_KIND_STICKY", "normalName": "billing-a"}},
         True, "allowed", "billing-worker"),
        # ... but not someone else's queue under a sticky kind (the server acts on `name`)
        (SVC, "PollWorkflowTaskQueue", {"namespace": "default", "taskQueue": {
            "name": "payroll-q7", "kind": "TASK_QUEUE_KIND_STICKY", "normalName": "billing-a"}},
         False, "task_queue_denied", "billing-worker"),
        (SVC, "PollActivityTaskQueue", {"namespace": "default", "taskQueue": {
            "name": "payroll-q7", "kind": "TASK_QUEUE_KIND_STICKY", "normalName": "billing-a"}},
         False, "task_queue_denied", "billing-worker"),
        (SVC, "PollActivityTaskQueue", {"namespace": "default", "taskQueue": {
            "name": "host:01234567-89ab-4def-8123-456789abcdef",
            "kind": "TASK_QUEUE_KIND_STICKY", "normalName": "billing-a"}},
         False, "task_queue_denied", "billing-worker"),
        (SVC, "StartWorkflowExecution", {"namespace": "default", "taskQueue": {
            "name": "payroll-q", "kind": "TASK_QUEUE_KIND_STICKY", "normalName": "billing-a"}},
         False, "task_queue_denied", "billing-worker"),
        (SVC, "PollWorkflowTaskQueue", {"namespace": "default", "taskQueue": {
            "name": "123@host-0123456789abcdef0123456789abcdef",
            "kind": "TASK_QUEUE_KIND_STICKY", "normalName": "shipping"}},
         False, "task_queue_denied", "billing-worker"),
        # by-id completions name no queue: refused under queue-restricted grants
        (SVC, "RespondActivityTaskCompletedById", {"namespace": "default", "workflowId": "p",
                                                   "activityId": "1"},
         False, "task_queue_denied", "billing-worker"),
        (SVC, "StartWorkflowExecution", {"namespace": "default", "taskQueue": {"name": "shipping"}},
         False, "task_queue_denied", "billing-worker"),
        (SVC, "StartWorkflowExecution", {"namespace": "default",
                                         "taskQueue": {"name": "billing-x"}},
         True, "allowed", "billing-worker"),
        (SVC, "SignalWithStartWorkflowExecution", {"namespace": "default",
         "taskQueue": {"name": "shipping"}}, False, "task_queue_denied", "billing-worker"),
        (SVC, "CreateSchedule", {"namespace": "default", "schedule": {"action": {"startWorkflow": {
            "taskQueue": {"name": "shipping"}}}}}, False, "task_queue_denied", "billing-worker"),
        (SVC, "UpdateSchedule", {"namespace": "default", "schedule": {"action": {"startWorkflow": {
            "taskQueue": {"name": "billing-n"}}}}}, True, "allowed", "billing-worker"),
        (SVC, "ExecuteMultiOperation", {"namespace": "default", "operations": [{"startWorkflow": {
            "namespace": "default", "taskQueue": {"name": "shipping"}}}]}, False,
         "task_queue_denied", "billing-worker"),
        (SVC, "RespondWorkflowTaskCompleted", {"namespace": "default", "commands": [
            {"scheduleActivityTaskCommandAttributes": {"taskQueue": {"name": "shipping"}}}]},
         False, "task_queue_denied", "billing-worker"),
        (SVC, "RespondWorkflowTaskCompleted", {"namespace": "default", "commands": [
            {"startChildWorkflowExecutionCommandAttributes": {"taskQueue": {"name": "shipping"}}}]},
         False, "task_queue_denied", "billing-worker"),
        (SVC, "RespondWorkflowTaskCompleted", {"namespace": "default", "commands": [
            {"continueAsNewWorkflowExecutionCommandAttributes": {"taskQueue": {"name": "x"}}}]},
         False, "task_queue_denied", "billing-worker"),
        # an empty queue in a command inherits the workflow's queue: not checked
        (SVC, "RespondWorkflowTaskCompleted", {"namespace": "default", "commands": [
            {"scheduleActivityTaskCommandAttributes": {"taskQueue": {"name": ""}}},
            {"scheduleActivityTaskCommandAttributes": {"activityId": "1"}},
            {"scheduleActivityTaskCommandAttributes": {"taskQueue": {"name": "billing-a"}}}]},
         True, "allowed", "billing-worker"),
        # queues covered by the union of granting bindings
        (SVC, "RespondWorkflowTaskCompleted", {"namespace": "default", "commands": [
            {"scheduleActivityTaskCommandAttributes": {"taskQueue": {"name": "invoices"}}},
            {"scheduleActivityTaskCommandAttributes": {"taskQueue": {"name": "billing-a"}}}]},
         True, "allowed", "billing-worker"),
        # cross-namespace commands: every namespace must be granted
        (SVC, "RespondWorkflowTaskCompleted", {"namespace": "default", "commands": [
            {"signalExternalWorkflowExecutionCommandAttributes": {"namespace": "payroll"}}]},
         False, "permission_denied", None),
        (SVC, "TerminateWorkflowExecution", {"namespace": "default"}, False, "permission_denied",
         None),
        (SVC, "PollWorkflowTaskQueue", {"namespace": "payroll", "taskQueue": {"name": "billing-a"}},
         False, "permission_denied", None),
        # empty namespace
        (FIN, "ListWorkflowExecutions", {}, False, "missing_namespace", None),
        # cluster scope
        (FIN, "ListNamespaces", {}, True, "allowed", "cluster_read_for_namespace_users"),
        ({"sub": "x", "groups": ["nobody"]}, "ListNamespaces", {}, False, "permission_denied",
         None),
        ({"sub": "u", "groups": ["ui-users"]}, "GetClusterInfo", {}, True, "allowed", "ui"),
        (FIN, "OperatorService/ListClusters", {}, False, "permission_denied", None),
        (PLAT, "OperatorService/ListClusters", {}, True, "allowed", "platform"),
        (FIN, "WorkflowService/GetSystemInfo", {}, True, "health_check", None),
        # namespace by id needs a cluster-level grant
        (FIN, "DescribeNamespace", {"id": "0000"}, False, "namespace_id_only", None),
        (PLAT, "DescribeNamespace", {"id": "0000"}, True, "allowed", "platform"),
    ],
)
def test_engine_table(e: Any, claims: dict[str, Any], method: str, request_: dict[str, Any],
                      allowed: bool, reason: str, rule: str | None) -> None:
    """Each construct decides as the table says, with the reason code and the deciding rule."""
    d = decide(e, claims, method, request_)
    assert (d.allowed, str(d.reason)) == (allowed, reason), d.message
    if rule is not None:
        assert d.rule == rule
    assert not d.dry_run


def test_cluster_read_option_off_by_default() -> None:
    """Without the option, a namespace user cannot list namespaces."""
    e = engine("""
        bindings: [{name: r, match: {groups: [g]}, roles: [read], namespaces: ["*"]}]
    """)
    assert not decide(e, {"sub": "a", "groups": ["g"]}, "ListNamespaces").allowed


def test_cluster_read_option_counts_temporal_permissions() -> None:
    """With the option, a `permissions` namespace role also unlocks the Web UI calls."""
    e = engine("options: {cluster_read_for_namespace_users: true}")
    d = decide(e, {"sub": "a", "permissions": ["default:read"]}, "GetSearchAttributes")
    assert d.allowed
    assert not decide(e, {"sub": "a"}, "GetSearchAttributes").allowed


@pytest.mark.parametrize(
    ("profile", "method", "allowed"),
    [
        ("extended", "PollWorkflowTaskQueue", True),
        ("extended", "StartWorkflowExecution", False),
        ("temporal-compatible", "PollWorkflowTaskQueue", False),
        ("temporal-compatible", "DescribeNamespace", False),
    ],
)
def test_worker_permission_meaning_per_profile(profile: str, method: str, allowed: bool) -> None:
    """`ns:worker` grants the worker category in `extended` and nothing in Temporal's profile."""
    e = engine(f"profile: {profile}")
    request: dict[str, Any] = {"namespace": "default"}
    if method != "DescribeNamespace":
        request["taskQueue"] = {"name": "q"}
    d = decide(e, {"sub": "w", "permissions": ["default:worker"]}, method, request)
    assert d.allowed is allowed


def test_temporal_permissions_can_be_switched_off() -> None:
    """With `temporal_permissions: false` the `permissions` claim grants nothing."""
    e = engine("options: {temporal_permissions: false}")
    assert not decide(e, {"sub": "a", "permissions": ["default:admin"]}, "ListWorkflowExecutions",
                      namespace="default").allowed


def test_global_dry_run_allows_and_flags() -> None:
    """Global dry-run: a would-be denial is allowed, flagged, with the would-be reason."""
    e = engine("""
        dry_run: true
        bindings: [{name: r, match: {groups: [g]}, roles: [read], namespaces: [a],
                    task_queues: [q]}]
        deny: [{name: d, match: {groups: [g]}, methods: [QueryWorkflow]}]
    """)
    g = {"sub": "x", "groups": ["g"]}
    d = decide(e, g, "StartWorkflowExecution", namespace="a")
    assert (d.allowed, d.dry_run, d.reason) == (True, True, Reason.PERMISSION_DENIED)
    assert d.message.startswith("dry-run: ")
    d = decide(e, g, "QueryWorkflow", namespace="a")
    assert (d.allowed, d.dry_run, d.reason, d.rule) == (True, True, Reason.EXPLICIT_DENY, "d")
    d = decide(e, g, "DescribeTaskQueue", namespace="a", taskQueue={"name": "other"})
    assert (d.allowed, d.dry_run, d.reason) == (True, True, Reason.TASK_QUEUE_DENIED)
    d = decide(e, g, "ListWorkflowExecutions", namespace="a")
    assert (d.allowed, d.dry_run) == (True, False)
    # the empty-namespace invariant is not policy: still denied
    d = decide(e, g, "ListWorkflowExecutions")
    assert (d.allowed, d.reason) == (False, Reason.MISSING_NAMESPACE)


def test_per_rule_dry_run() -> None:
    """A dry-run deny rule flags an otherwise-allowed call; real denials still deny."""
    e = engine("""
        bindings: [{name: r, match: {groups: [g]}, roles: [read], namespaces: [a]}]
        deny:
          - {name: trial, match: {groups: [g]}, methods: [QueryWorkflow], dry_run: true}
          - {name: real, match: {groups: [g]}, methods: [CountWorkflowExecutions]}
    """)
    g = {"sub": "x", "groups": ["g"]}
    d = decide(e, g, "QueryWorkflow", namespace="a")
    assert (d.allowed, d.dry_run, d.reason, d.rule) == (True, True, Reason.EXPLICIT_DENY,
                                                         "trial")
    d = decide(e, g, "CountWorkflowExecutions", namespace="a")
    assert (d.allowed, d.reason, d.rule) == (False, Reason.EXPLICIT_DENY, "real")
    # a dry-run rule never turns a real denial into an allow
    d = decide(e, g, "QueryWorkflow", namespace="b")
    assert (d.allowed, d.reason) == (False, Reason.PERMISSION_DENIED)


def test_deny_rule_with_namespaces_skips_cluster_calls() -> None:
    """A deny rule limited to namespaces does not apply to cluster-scoped calls."""
    e = engine("""
        bindings: [{name: p, match: {groups: [g]}, roles: [admin], namespaces: ["*"],
                    cluster: true}]
        deny:
          - {name: d, match: {anyone: true}, categories: [cluster], namespaces: [x]}
          - {name: all, match: {subject: [evil]}, categories: [cluster]}
    """)
    assert decide(e, {"sub": "a", "groups": ["g"]}, "OperatorService/ListClusters").allowed
    d = decide(e, {"sub": "evil", "groups": ["g"]}, "OperatorService/ListClusters")
    assert (d.allowed, d.rule) == (False, "all")


def test_engine_ignores_temporal_namespace_header_semantics() -> None:
    """Only the body decides: the Target carries the body's namespace."""
    e = engine("bindings: [{name: r, match: {groups: [g]}, roles: [read], namespaces: [a]}]")
    t = target("ListWorkflowExecutions", namespace="b")
    assert not e(principal(sub="x", groups=["g"]), t).allowed
