"""Policy decisions on exact targets: a namespace named by id, sticky queues, by-id completions,
Nexus endpoint targets and the `validate` warnings for queue-restricted bindings."""

from __future__ import annotations

from typing import Any

import pytest
from rules_helpers import decide, engine, policy

from extauthz.model import Reason
from extauthz.rules.document import PolicyError
from extauthz.rules.sticky import sdk_sticky_name

ADMIN = {"sub": "pat", "groups": ["platform"]}
SVC = {"sub": "billing-svc", "client_id": "billing-svc"}
PROTECTED = """
bindings:
  - {name: platform, match: {groups: [platform]}, roles: [admin], namespaces: ["*"],
     cluster: true}
deny:
  - {name: keep-payroll, match: {anyone: true}, methods: [DeleteNamespace, DescribeNamespace,
     CreateNexusEndpoint], namespaces: [payroll]}
"""
BILLING = """
bindings:
  - {name: billing, match: {client_id: [billing-svc]}, roles: [worker], namespaces: [default],
     task_queues: ["billing-*"]}
"""
GO_STICKY = "host-7:01234567-89ab-4def-8123-456789abcdef"
CORE_STICKY = "4242@host-7-0123456789abcdef0123456789abcdef"


def test_deny_rule_applies_to_a_namespace_named_by_id() -> None:
    """DeleteNamespace{namespace_id} could delete any namespace: a rule protecting payroll
    applies, though the request never names payroll."""
    e = engine(PROTECTED)
    d = decide(e, ADMIN, "OperatorService/DeleteNamespace", namespaceId="some-uuid")
    assert (d.allowed, d.reason, d.rule) == (False, Reason.EXPLICIT_DENY, "keep-payroll")
    d = decide(e, ADMIN, "DescribeNamespace", id="some-uuid")
    assert (d.allowed, d.rule) == (False, "keep-payroll")
    assert decide(e, ADMIN, "OperatorService/DeleteNamespace", namespace="other").allowed


def test_deny_rule_applies_to_a_nexus_endpoint_targeting_its_namespace() -> None:
    """A cluster-scoped Nexus endpoint whose target is payroll meets payroll's deny rule."""
    e = engine(PROTECTED)
    spec: dict[str, Any] = {"spec": {"name": "e", "target": {"worker": {"namespace": "payroll",
                                                         "taskQueue": "q"}}}}
    d = decide(e, ADMIN, "OperatorService/CreateNexusEndpoint", spec)
    assert (d.allowed, d.rule) == (False, "keep-payroll")
    spec["spec"]["target"]["worker"]["namespace"] = "other"
    assert decide(e, ADMIN, "OperatorService/CreateNexusEndpoint", spec).allowed


@pytest.mark.parametrize("name", [GO_STICKY, CORE_STICKY])
def test_sdk_generated_sticky_queue_is_covered(name: str) -> None:
    """A queue-restricted worker keeps its sticky poll: the SDKs' generated name is covered."""
    e = engine(BILLING)
    d = decide(e, SVC, "PollWorkflowTaskQueue", namespace="default", taskQueue={
        "name": name, "kind": "TASK_QUEUE_KIND_STICKY", "normalName": "billing-a"})
    assert d.allowed, d.message


@pytest.mark.parametrize("name", [
    "payroll-q7", "payroll:01234567-89ab", "x-0123456789abcdef", GO_STICKY.upper(),
    "-0123456789abcdef0123456789abcdef", "h:01234567-89ab-4def-8123-456789abcdef\n",
])
def test_other_names_under_a_sticky_kind_are_refused(name: str) -> None:
    """A STICKY-kind poll of a name without an SDK sticky shape is judged as that queue."""
    assert not sdk_sticky_name(name)
    e = engine(BILLING)
    d = decide(e, SVC, "PollWorkflowTaskQueue", namespace="default", taskQueue={
        "name": name, "kind": "TASK_QUEUE_KIND_STICKY", "normalName": "billing-a"})
    assert (d.allowed, d.reason) == (False, Reason.TASK_QUEUE_DENIED)


def test_explicit_sticky_task_queues_replace_the_sdk_shape() -> None:
    """`sticky_task_queues` lists the sticky names a binding covers; `[]` allows none."""
    listed = engine(BILLING.replace('task_queues: ["billing-*"]',
                                    'task_queues: ["billing-*"], sticky_task_queues: ["w1:*"]'))
    none = engine(BILLING.replace('task_queues: ["billing-*"]',
                                  'task_queues: ["billing-*"], sticky_task_queues: []'))
    def poll(e: object, name: str) -> bool:
        return decide(e, SVC, "PollWorkflowTaskQueue", namespace="default",  # type: ignore[arg-type]
                      taskQueue={"name": name, "kind": "TASK_QUEUE_KIND_STICKY",
                                 "normalName": "billing-a"}).allowed
    assert poll(listed, "w1:abc") and not poll(listed, GO_STICKY)
    assert not poll(none, GO_STICKY) and not poll(none, "w1:abc")


def test_sticky_attributes_and_shutdown_worker_are_judged() -> None:
    """A completion's sticky attributes and ShutdownWorker's sticky queue are judged like the
    sticky poll: the SDK shape passes, another team's queue does not."""
    e = engine(BILLING)
    def completed(name: str) -> bool:
        return decide(e, SVC, "RespondWorkflowTaskCompleted", namespace="default",
                      stickyAttributes={"workerTaskQueue": {
                          "name": name, "kind": "TASK_QUEUE_KIND_STICKY",
                          "normalName": "billing-a"}}).allowed
    assert completed(CORE_STICKY) and not completed("payroll-q7")
    ok = decide(e, SVC, "ShutdownWorker", namespace="default", taskQueue="billing-a",
                stickyTaskQueue=GO_STICKY)
    bad = decide(e, SVC, "ShutdownWorker", namespace="default", taskQueue="billing-a",
                 stickyTaskQueue="payroll-q7")
    assert ok.allowed and (bad.allowed, bad.reason) == (False, Reason.TASK_QUEUE_DENIED)


@pytest.mark.parametrize(("method", "req"), [
    (m, {"namespace": "default", "workflowId": "payroll-run", "activityId": "1"})
    for m in ("RespondActivityTaskCompletedById", "RespondActivityTaskFailedById",
              "RespondActivityTaskCanceledById", "RecordActivityTaskHeartbeatById")
] + [
    # moving payroll's activity onto billing's own queue (seen live: billing then polled it)
    ("UpdateActivityOptions", {"namespace": "default", "execution": {"workflowId": "p"},
                               "id": "1", "activityOptions": {"taskQueue": {"name": "billing-a"}},
                               "updateMask": "taskQueue.name"}),
    ("UpdateActivityExecutionOptions", {"namespace": "default", "activityId": "1",
                                        "activityOptions": {"taskQueue": {"name": "billing-a"}}}),
    # a batch terminate of payroll's workflows (seen live)
    ("StartBatchOperation", {"namespace": "default", "executions": [{"workflowId": "p"}],
                             "terminationOperation": {}}),
])
def test_by_id_calls_need_an_explicit_opt_in(method: str, req: dict[str, object]) -> None:
    """A queue-restricted grant does not reach existing work by id (completions, heartbeats,
    moving an activity to another queue, batches); `allow_by_id` opts in; an unrestricted
    binding grants it as before."""
    billing = BILLING.replace("roles: [worker]", "roles: [write]")
    d = decide(engine(billing), SVC, method, req)
    assert (d.allowed, d.reason) == (False, Reason.TASK_QUEUE_DENIED)
    assert "allow_by_id" in d.message, d.message
    opted = engine(billing.replace('task_queues: ["billing-*"]',
                                   'task_queues: ["billing-*"], allow_by_id: true'))
    assert decide(opted, SVC, method, req).allowed
    free = engine(billing.replace('task_queues: ["billing-*"]', "cluster: false"))
    assert decide(free, SVC, method, req).allowed


def test_deny_rule_on_queues_sees_name_and_normal_name() -> None:
    """A deny rule on a queue applies whether the queue is `name` (any kind) or normal_name."""
    e = engine("""
        bindings: [{name: w, match: {groups: [g]}, roles: [write], namespaces: ["*"]}]
        deny: [{name: secret, match: {anyone: true}, methods: [StartWorkflowExecution,
                PollActivityTaskQueue], task_queues: [secret]}]
    """)
    g = {"sub": "a", "groups": ["g"]}
    for tq in ({"name": "secret", "kind": "TASK_QUEUE_KIND_STICKY", "normalName": "open"},
               {"name": "open", "kind": "TASK_QUEUE_KIND_STICKY", "normalName": "secret"},
               {"name": "secret", "kind": 7}):
        for method in ("StartWorkflowExecution", "PollActivityTaskQueue"):
            d = decide(e, g, method, namespace="default", taskQueue=tq)
            assert (d.allowed, d.rule) == (False, "secret"), (method, tq)


def test_validate_warns_about_queue_free_methods_of_a_queue_restricted_binding() -> None:
    """A queue-restricted binding whose roles grant methods that name no queue gets a
    warning naming them (they reach every workflow of the namespace)."""
    p = policy("""
        roles: {client: {methods: [StartWorkflowExecution, DescribeWorkflowExecution,
                                   TerminateWorkflowExecution]}}
        bindings:
          - {name: b, match: {groups: [g]}, roles: [client], namespaces: [d],
             task_queues: ["b-*"]}
          - {name: free, match: {groups: [g]}, roles: [client], namespaces: [d]}
    """)
    assert len(p.warnings) == 1
    warning = p.warnings[0]
    assert "'b'" in warning and "test.yaml" in warning
    assert "DescribeWorkflowExecution" in warning and "TerminateWorkflowExecution" in warning
    assert "StartWorkflowExecution" not in warning


@pytest.mark.parametrize("key", ["sticky_task_queues: [x]", "allow_by_id: true"])
def test_queue_options_without_task_queues_are_an_error(key: str) -> None:
    """`sticky_task_queues` / `allow_by_id` without `task_queues` is a config error naming the
    key and the file."""
    with pytest.raises(PolicyError) as err:
        policy(f"""
            bindings: [{{name: b, match: {{groups: [g]}}, roles: [worker], namespaces: [d],
                         {key}}}]
        """)
    assert "test.yaml" in str(err.value) and key.split(":", maxsplit=1)[0] in str(err.value)


def test_a_start_that_terminates_meets_the_terminate_deny_rules() -> None:
    """A developer refused Terminate is refused a start that terminates the running workflow of
    its id (conflict TERMINATE_EXISTING, reuse TERMINATE_IF_RUNNING); a plain start is not."""
    e = engine("""
        bindings: [{name: w, match: {groups: [developers]}, roles: [write], namespaces: ["*"]}]
        deny:
          - {name: never-destroy, match: {groups: [developers]}, categories: [destroys]}
          - {name: no-terminate, match: {subject: [tom]}, methods: [TerminateWorkflowExecution]}
    """)
    dev = {"sub": "dave", "groups": ["developers"]}
    tom = {"sub": "tom"}  # refused Terminate by name, not by category
    terminating = (
        {"workflowIdConflictPolicy": "WORKFLOW_ID_CONFLICT_POLICY_TERMINATE_EXISTING"},
        {"workflowIdReusePolicy": "WORKFLOW_ID_REUSE_POLICY_TERMINATE_IF_RUNNING"},
    )
    for id_policy in terminating:
        for method in ("StartWorkflowExecution", "SignalWithStartWorkflowExecution"):
            d = decide(e, dev, method, {"namespace": "default", "workflowId": "w", **id_policy})
            assert (d.allowed, d.rule) == (False, "never-destroy"), (method, id_policy)
            d = decide(e, tom, method, {"namespace": "default", "workflowId": "w", **id_policy})
            assert (d.allowed, d.rule) == (False, "no-terminate"), (method, id_policy)
    d = decide(e, dev, "StartWorkflowExecution", {
        "namespace": "default", "workflowId": "w",
        "workflowIdConflictPolicy": "WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING"})
    assert d.allowed, d.message


def test_validate_warning_names_calls_on_existing_work_that_carry_a_queue_field() -> None:
    """An update (its callback names a queue) and a workflow-task completion (its task comes by
    an unsigned token) reach existing work whatever its queue: the warning names them, while
    starts and polls, which the restriction binds, are not named."""
    p = policy("""
        roles: {w: {methods: [UpdateWorkflowExecution, RespondWorkflowTaskCompleted,
                              StartWorkflowExecution, PollWorkflowTaskQueue]}}
        bindings: [{name: b, match: {groups: [g]}, roles: [w], namespaces: [d],
                    task_queues: ["b-*"]}]
    """)
    (warning,) = p.warnings
    assert "UpdateWorkflowExecution" in warning and "RespondWorkflowTaskCompleted" in warning
    assert "StartWorkflowExecution" not in warning and "PollWorkflowTaskQueue" not in warning


def test_query_answer_for_another_queue_is_refused() -> None:
    """A query task token names the queue the answer goes to: billing may answer its own
    (normal or SDK-sticky) queue's queries, not payroll's."""
    import base64

    def token(queue: str) -> str:
        raw = b"\x0a\x02ns\x12" + bytes([len(queue)]) + queue.encode() + b"\x1a\x01t"
        return base64.b64encode(raw).decode()

    e = engine(BILLING)
    for queue, allowed in (("billing-a", True), (CORE_STICKY, True), ("payroll-q", False)):
        d = decide(e, SVC, "RespondQueryTaskCompleted", namespace="default",
                   taskToken=token(queue))
        assert d.allowed is allowed, (queue, d.message)


@pytest.mark.parametrize("method", ["GetNexusEndpoint", "UpdateNexusEndpoint",
                                    "DeleteNexusEndpoint"])
def test_nexus_endpoint_named_by_id_meets_the_namespace_deny_rule(method: str) -> None:
    """A Nexus endpoint named by id may target payroll (the request does not show it): the
    call meets the rule protecting payroll, like a namespace named by id."""
    e = engine(PROTECTED.replace("CreateNexusEndpoint]", f"CreateNexusEndpoint, {method}]"))
    req: dict[str, Any] = {"id": "endpoint-uuid"}
    if method != "GetNexusEndpoint":
        req["version"] = "1"
    if method == "UpdateNexusEndpoint":
        req["spec"] = {"name": "e", "target": {"worker": {"namespace": "other",
                                                          "taskQueue": "q"}}}
    d = decide(e, ADMIN, f"OperatorService/{method}", req)
    assert (d.allowed, d.rule) == (False, "keep-payroll"), d.message
