"""Exact targets against the real server: what extauthz judges is what Temporal acts on.

Each attack first runs straight against the Temporal dev server (no Envoy), to observe what the
server acts on when a request's fields disagree (a STICKY-kind queue naming another team's
queue, a namespace named by id, an activity named by id). Then the same request goes through
real Envoy and the authz server (both ext_authz transports) as a queue-restricted principal,
and must be refused, leaving the victim's work where it was.

A generated part walks the installed ``temporalio`` descriptors for every field path of every
namespace-scoped request that names a task queue (``TaskQueue`` messages at any depth: commands,
multi-operations, schedule actions, batch operations, Nexus, versioning calls; and queue
strings) and sends, through Envoy, one request with another team's queue at that path (it must
be refused ``task_queue_denied``) and one with the principal's own queue (it must not be
refused by extauthz: the server then answers as it will).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, symbol_database
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from support.workflows import GreetingWorkflow, greet
from temporalio.api.command.v1 import message_pb2 as command_pb2
from temporalio.api.common.v1 import ActivityType, WorkflowExecution, WorkflowType
from temporalio.api.enums.v1 import CommandType, EventType, TaskQueueKind
from temporalio.api.operatorservice.v1 import request_response_pb2 as orr
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from devkit.components import EnvoyInstance, IssuerInstance, TemporalInstance, policy_stack
from extauthz import methods
from extauthz.model import Scope

STICKY = TaskQueueKind.TASK_QUEUE_KIND_STICKY
T = timedelta(seconds=10)
OWN, VICTIM = "billing-a", "payroll-q"
POLICY = """
version: 1
profile: extended
options: {temporal_permissions: false}
bindings:
  # every namespace method in `default`, but only on billing-* queues
  - name: billing
    match: {client_id: [billing-svc]}
    roles: [admin]
    namespaces: [default]
    task_queues: ["billing-*"]
  - name: platform
    match: {groups: [platform]}
    roles: [admin]
    namespaces: ["*"]
    cluster: true
deny:
  - name: billing-never-terminates
    match: {client_id: [billing-svc]}
    methods: [TerminateWorkflowExecution]
  - name: keep-payroll
    match: {anyone: true}
    methods: [OperatorService/DeleteNamespace, DescribeNamespace, UpdateNamespace,
              OperatorService/CreateNexusEndpoint, OperatorService/UpdateNexusEndpoint,
              OperatorService/DeleteNexusEndpoint]
    namespaces: [payroll]
"""


@pytest.fixture(scope="module")
def exact_envoy(e2e_dir: Path, temporal: TemporalInstance, issuer: IssuerInstance,
                transport: str) -> Iterator[EnvoyInstance]:
    """Envoy → the authz server running ``POLICY`` → the Temporal dev server."""
    policy = e2e_dir / f"exact-{transport}.yaml"
    policy.write_text(POLICY)
    with policy_stack(e2e_dir, temporal, issuer, policy=policy, transport=transport,
                      name="extauthz-exact") as envoy:
        yield envoy


def _billing(issuer: IssuerInstance) -> str:
    return str(issuer.mint(sub="billing-svc", client_id="billing-svc"))


def _platform(issuer: IssuerInstance) -> str:
    return str(issuer.mint(sub="pat", groups=["platform"]))


async def _client(target: str, token: str | None = None, namespace: str = "default") -> Client:
    return await Client.connect(target, namespace=namespace, api_key=token, tls=False)


def _assert_refused(exc: pytest.ExceptionInfo[RPCError], code: str) -> None:
    assert exc.value.status == RPCStatusCode.PERMISSION_DENIED, exc.value
    assert str(exc.value).startswith(code), exc.value


async def _start(svc: Any, queue: TaskQueue, namespace: str = "default") -> str:
    wf_id = f"exact-{uuid.uuid4().hex[:10]}"
    await svc.start_workflow_execution(rr.StartWorkflowExecutionRequest(
        namespace=namespace, workflow_id=wf_id, workflow_type=WorkflowType(name="W"),
        task_queue=queue, request_id=str(uuid.uuid4())), retry=False, timeout=T)
    return wf_id


async def _poll_workflow(svc: Any, queue: TaskQueue, seconds: float = 3) -> Any:
    return await svc.poll_workflow_task_queue(rr.PollWorkflowTaskQueueRequest(
        namespace="default", task_queue=queue, identity="exact"), retry=False,
        timeout=timedelta(seconds=seconds))


async def _poll_activity(svc: Any, queue: TaskQueue, seconds: float = 3) -> Any:
    return await svc.poll_activity_task_queue(rr.PollActivityTaskQueueRequest(
        namespace="default", task_queue=queue, identity="exact"), retry=False,
        timeout=timedelta(seconds=seconds))


async def _schedule_activity(svc: Any, queue: str) -> tuple[str, str]:
    """A payroll workflow whose activity waits on ``queue + "-act"``: (workflow id, queue)."""
    wf_id = await _start(svc, TaskQueue(name=queue))
    task = await _poll_workflow(svc, TaskQueue(name=queue), seconds=10)
    assert task.workflow_execution.workflow_id == wf_id
    act_queue = f"{queue}-act"
    await svc.respond_workflow_task_completed(rr.RespondWorkflowTaskCompletedRequest(
        namespace="default", task_token=task.task_token, identity="exact", commands=[
            command_pb2.Command(
                command_type=CommandType.COMMAND_TYPE_SCHEDULE_ACTIVITY_TASK,
                schedule_activity_task_command_attributes=(
                    command_pb2.ScheduleActivityTaskCommandAttributes(
                        activity_id="1", activity_type=ActivityType(name="pay"),
                        task_queue=TaskQueue(name=act_queue),
                        start_to_close_timeout=Duration(seconds=120)))),
        ]), retry=False, timeout=T)
    return wf_id, act_queue


# ---- the server as oracle, then the attack through Envoy -----------------------------------


async def test_sticky_kind_activity_poll_reaches_name_and_is_refused(
    temporal: TemporalInstance, exact_envoy: EnvoyInstance, issuer: IssuerInstance
) -> None:
    """The server hands a STICKY-kind activity poll the task of the queue `name` names (not
    normal_name); through Envoy a billing-only principal's such poll of payroll's queue is
    refused, and payroll's own worker still gets the task."""
    direct = (await _client(temporal.target)).workflow_service
    _, observed_queue = await _schedule_activity(direct, f"payroll-{uuid.uuid4().hex[:8]}")
    stolen = await _poll_activity(direct, TaskQueue(name=observed_queue, kind=STICKY,
                                                    normal_name=OWN), seconds=10)
    assert stolen.activity_id == "1"  # the oracle: the server acted on `name`

    _, act_queue = await _schedule_activity(direct, f"payroll-{uuid.uuid4().hex[:8]}")
    billing = (await _client(exact_envoy.target, _billing(issuer))).workflow_service
    with pytest.raises(RPCError) as exc:
        await _poll_activity(billing, TaskQueue(name=act_queue, kind=STICKY, normal_name=OWN))
    _assert_refused(exc, "task_queue_denied")
    rightful = await _poll_activity(direct, TaskQueue(name=act_queue), seconds=10)
    assert rightful.activity_id == "1"


async def test_sticky_kind_workflow_poll_is_refused_and_the_task_stays(
    temporal: TemporalInstance, exact_envoy: EnvoyInstance, issuer: IssuerInstance
) -> None:
    """A STICKY-kind workflow poll naming payroll's queue makes the task vanish from that
    queue on the real server; through Envoy it is refused and the task stays for payroll."""
    direct = (await _client(temporal.target)).workflow_service
    queue = f"payroll-{uuid.uuid4().hex[:8]}"
    await _start(direct, TaskQueue(name=queue))
    vanished = await _poll_workflow(direct, TaskQueue(name=queue, kind=STICKY, normal_name=OWN))
    assert not vanished.task_token
    after = await _poll_workflow(direct, TaskQueue(name=queue), seconds=3)
    assert not after.task_token  # the oracle: the sticky-kind poll acted on `name`'s task

    queue = f"payroll-{uuid.uuid4().hex[:8]}"
    wf_id = await _start(direct, TaskQueue(name=queue))
    billing = (await _client(exact_envoy.target, _billing(issuer))).workflow_service
    with pytest.raises(RPCError) as exc:
        await _poll_workflow(billing, TaskQueue(name=queue, kind=STICKY, normal_name=OWN))
    _assert_refused(exc, "task_queue_denied")
    rightful = await _poll_workflow(direct, TaskQueue(name=queue), seconds=10)
    assert rightful.workflow_execution.workflow_id == wf_id


async def test_sticky_kind_start_runs_on_name_and_is_judged_by_it(
    temporal: TemporalInstance, exact_envoy: EnvoyInstance, issuer: IssuerInstance
) -> None:
    """A STICKY-kind start runs the workflow on `name` (the oracle); through Envoy billing is
    refused a start naming payroll's queue that way, and its own such start runs on its own
    queue."""
    direct = (await _client(temporal.target)).workflow_service
    wf_id = await _start(direct, TaskQueue(name=VICTIM, kind=STICKY, normal_name=OWN))
    described = await direct.describe_workflow_execution(rr.DescribeWorkflowExecutionRequest(
        namespace="default", execution=WorkflowExecution(workflow_id=wf_id)), timeout=T)
    assert described.execution_config.task_queue.name == VICTIM

    billing = (await _client(exact_envoy.target, _billing(issuer))).workflow_service
    with pytest.raises(RPCError) as exc:
        await _start(billing, TaskQueue(name=VICTIM, kind=STICKY, normal_name=OWN))
    _assert_refused(exc, "task_queue_denied")
    own = f"billing-{uuid.uuid4().hex[:6]}"
    wf_id = await _start(billing, TaskQueue(name=own, kind=STICKY))
    described = await direct.describe_workflow_execution(rr.DescribeWorkflowExecutionRequest(
        namespace="default", execution=WorkflowExecution(workflow_id=wf_id)), timeout=T)
    assert described.execution_config.task_queue.name == own


async def test_queue_restricted_sdk_worker_keeps_its_sticky_queue(
    temporal: TemporalInstance, exact_envoy: EnvoyInstance, issuer: IssuerInstance
) -> None:
    """The real SDK worker of a billing-only principal polls its generated sticky queue through
    Envoy: a workflow's second task is dispatched there and runs without a sticky timeout."""
    client = await _client(exact_envoy.target, _billing(issuer))
    queue = f"billing-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[GreetingWorkflow],
                      activities=[greet]):
        handle = await client.start_workflow(GreetingWorkflow.run, "sticky", task_queue=queue,
                                             id=f"sticky-{uuid.uuid4().hex[:8]}",
                                             execution_timeout=timedelta(seconds=60))
        assert await handle.result() == "hello, sticky"
    history = await handle.fetch_history()
    scheduled = [e.workflow_task_scheduled_event_attributes.task_queue for e in history.events
                 if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED]
    sticky = [q for q in scheduled if q.kind == STICKY]
    assert sticky, "no workflow task went to the sticky queue"
    assert sticky[0].normal_name == queue
    assert not [e for e in history.events
                if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT]


async def test_by_id_completion_of_another_queue_is_refused(
    temporal: TemporalInstance, exact_envoy: EnvoyInstance, issuer: IssuerInstance
) -> None:
    """Completing payroll's activity by (workflow id, activity id "1") works on the server (the
    oracle); through Envoy a billing-only principal is refused, and payroll's activity is still
    pending."""
    direct = (await _client(temporal.target)).workflow_service
    wf_id, _ = await _schedule_activity(direct, f"payroll-{uuid.uuid4().hex[:8]}")
    await direct.respond_activity_task_completed_by_id(rr.RespondActivityTaskCompletedByIdRequest(
        namespace="default", workflow_id=wf_id, activity_id="1", identity="oracle"),
        retry=False, timeout=T)

    wf_id, _ = await _schedule_activity(direct, f"payroll-{uuid.uuid4().hex[:8]}")
    billing = (await _client(exact_envoy.target, _billing(issuer))).workflow_service
    with pytest.raises(RPCError) as exc:
        await billing.respond_activity_task_completed_by_id(
            rr.RespondActivityTaskCompletedByIdRequest(
                namespace="default", workflow_id=wf_id, activity_id="1", identity="forger"),
            retry=False, timeout=T)
    _assert_refused(exc, "task_queue_denied")
    described = await direct.describe_workflow_execution(rr.DescribeWorkflowExecutionRequest(
        namespace="default", execution=WorkflowExecution(workflow_id=wf_id)), timeout=T)
    assert [a.activity_id for a in described.pending_activities] == ["1"]


async def test_namespace_named_by_id_meets_the_namespace_deny_rule(
    temporal: TemporalInstance, exact_envoy: EnvoyInstance, issuer: IssuerInstance
) -> None:
    """The server deletes a namespace named only by id (the oracle, on a scratch namespace);
    through Envoy a platform admin's delete-by-id is refused by the rule protecting payroll,
    and payroll still exists."""
    direct = await _client(temporal.target)
    scratch = f"scratch-{uuid.uuid4().hex[:6]}"
    await direct.workflow_service.register_namespace(rr.RegisterNamespaceRequest(
        namespace=scratch, workflow_execution_retention_period=Duration(seconds=86400)),
        timeout=T)
    scratch_id = (await direct.workflow_service.describe_namespace(
        rr.DescribeNamespaceRequest(namespace=scratch), timeout=T)).namespace_info.id
    deleted = await direct.operator_service.delete_namespace(
        orr.DeleteNamespaceRequest(namespace_id=scratch_id), timeout=T)
    assert deleted.deleted_namespace.startswith(scratch)

    payroll_id = (await direct.workflow_service.describe_namespace(
        rr.DescribeNamespaceRequest(namespace="payroll"), timeout=T)).namespace_info.id
    admin = await _client(exact_envoy.target, _platform(issuer))
    with pytest.raises(RPCError) as exc:
        await admin.operator_service.delete_namespace(
            orr.DeleteNamespaceRequest(namespace_id=payroll_id), retry=False, timeout=T)
    _assert_refused(exc, "explicit_deny")
    assert "keep-payroll" in str(exc.value)
    with pytest.raises(RPCError) as exc:
        await admin.workflow_service.describe_namespace(
            rr.DescribeNamespaceRequest(id=payroll_id), retry=False, timeout=T)
    _assert_refused(exc, "explicit_deny")
    still = await direct.workflow_service.describe_namespace(
        rr.DescribeNamespaceRequest(namespace="payroll"), timeout=T)
    assert still.namespace_info.id == payroll_id


async def test_start_that_terminates_meets_the_destroy_rule(
    temporal: TemporalInstance, exact_envoy: EnvoyInstance, issuer: IssuerInstance
) -> None:
    """A second start of a running workflow id with conflict policy TERMINATE_EXISTING (or
    reuse policy TERMINATE_IF_RUNNING) terminates the first run on the server (the oracle);
    through Envoy a principal refused Terminate by a deny rule is refused it, and the run
    lives."""
    direct = (await _client(temporal.target)).workflow_service
    billing = (await _client(exact_envoy.target, _billing(issuer))).workflow_service
    queue = f"billing-{uuid.uuid4().hex[:6]}"

    async def start(svc: Any, wf_id: str, **policy: Any) -> str:
        answer = await svc.start_workflow_execution(rr.StartWorkflowExecutionRequest(
            namespace="default", workflow_id=wf_id, workflow_type=WorkflowType(name="W"),
            task_queue=TaskQueue(name=queue), request_id=str(uuid.uuid4()), **policy),
            retry=False, timeout=T)
        return str(answer.run_id)

    async def status(wf_id: str, run_id: str) -> int:
        described = await direct.describe_workflow_execution(
            rr.DescribeWorkflowExecutionRequest(namespace="default", execution=WorkflowExecution(
                workflow_id=wf_id, run_id=run_id)), timeout=T)
        return int(described.workflow_execution_info.status)

    for policy in ({"workflow_id_conflict_policy": 3}, {"workflow_id_reuse_policy": 4}):
        wf_id = f"term-{uuid.uuid4().hex[:8]}"
        first = await start(direct, wf_id)
        await start(direct, wf_id, **policy)
        assert await status(wf_id, first) == 5  # TERMINATED: the oracle

        wf_id = f"term-{uuid.uuid4().hex[:8]}"
        first = await start(billing, wf_id)  # a plain start is allowed
        with pytest.raises(RPCError) as exc:
            await start(billing, wf_id, **policy)
        _assert_refused(exc, "explicit_deny")
        assert "billing-never-terminates" in str(exc.value)
        assert await status(wf_id, first) == 1  # RUNNING


async def test_query_answer_with_another_queues_token_is_refused(
    temporal: TemporalInstance, exact_envoy: EnvoyInstance, issuer: IssuerInstance
) -> None:
    """A query task's token names its queue (payroll's): through Envoy, billing answering with
    that token is refused; payroll's answer with the same token reaches the waiting caller."""
    import asyncio

    from temporalio.api.enums.v1 import QueryResultType
    from temporalio.api.query.v1 import WorkflowQuery

    direct = (await _client(temporal.target)).workflow_service
    queue = f"payroll-{uuid.uuid4().hex[:8]}"
    wf_id = await _start(direct, TaskQueue(name=queue))
    first = await _poll_workflow(direct, TaskQueue(name=queue), seconds=10)
    await direct.respond_workflow_task_completed(rr.RespondWorkflowTaskCompletedRequest(
        namespace="default", task_token=first.task_token, identity="payroll"), timeout=T)
    asked = asyncio.ensure_future(direct.query_workflow(rr.QueryWorkflowRequest(
        namespace="default", execution=WorkflowExecution(workflow_id=wf_id),
        query=WorkflowQuery(query_type="salary")), retry=False, timeout=timedelta(seconds=20)))
    try:
        task = await _poll_workflow(direct, TaskQueue(name=queue), seconds=10)
        assert task.query.query_type == "salary"
        billing = (await _client(exact_envoy.target, _billing(issuer))).workflow_service
        answer = rr.RespondQueryTaskCompletedRequest(
            namespace="default", task_token=task.task_token,
            completed_type=QueryResultType.QUERY_RESULT_TYPE_ANSWERED)
        with pytest.raises(RPCError) as exc:
            await billing.respond_query_task_completed(answer, retry=False, timeout=T)
        _assert_refused(exc, "task_queue_denied")
        await direct.respond_query_task_completed(answer, retry=False, timeout=T)
        assert (await asked).query_rejected.status == 0  # answered by payroll, not billing
    finally:
        asked.cancel()


async def test_nexus_endpoint_of_payroll_cannot_be_retargeted_or_deleted_by_id(
    temporal: TemporalInstance, exact_envoy: EnvoyInstance, issuer: IssuerInstance
) -> None:
    """An endpoint targeting payroll, named by id, could be re-pointed or deleted by a platform
    admin through Envoy (outside review); both now meet the rule protecting payroll, and so
    does creating one; the endpoint is unchanged."""
    from temporalio.api.nexus.v1 import EndpointSpec, EndpointTarget

    def spec(name: str, namespace: str) -> EndpointSpec:
        return EndpointSpec(name=name, target=EndpointTarget(worker=EndpointTarget.Worker(
            namespace=namespace, task_queue="payroll-nexus")))

    direct = (await _client(temporal.target)).operator_service
    admin = (await _client(exact_envoy.target, _platform(issuer))).operator_service
    name = f"payroll-ep-{uuid.uuid4().hex[:6]}"
    with pytest.raises(RPCError) as exc:
        await admin.create_nexus_endpoint(orr.CreateNexusEndpointRequest(
            spec=spec(name, "payroll")), retry=False, timeout=T)
    _assert_refused(exc, "explicit_deny")
    endpoint = (await direct.create_nexus_endpoint(orr.CreateNexusEndpointRequest(
        spec=spec(name, "payroll")), timeout=T)).endpoint
    try:
        with pytest.raises(RPCError) as exc:
            await admin.update_nexus_endpoint(orr.UpdateNexusEndpointRequest(
                id=endpoint.id, version=endpoint.version, spec=spec(name, "other")),
                retry=False, timeout=T)
        _assert_refused(exc, "explicit_deny")
        with pytest.raises(RPCError) as exc:
            await admin.delete_nexus_endpoint(orr.DeleteNexusEndpointRequest(
                id=endpoint.id, version=endpoint.version), retry=False, timeout=T)
        _assert_refused(exc, "explicit_deny")
        still = await direct.get_nexus_endpoint(orr.GetNexusEndpointRequest(id=endpoint.id),
                                                timeout=T)
        assert still.endpoint.spec.target.worker.namespace == "payroll"
    finally:
        current = await direct.get_nexus_endpoint(orr.GetNexusEndpointRequest(id=endpoint.id),
                                                  timeout=T)
        await direct.delete_nexus_endpoint(orr.DeleteNexusEndpointRequest(
            id=endpoint.id, version=current.endpoint.version), timeout=T)


# ---- generated from the descriptors: every field path that names a queue --------------------


def _queue_paths() -> list[tuple[str, tuple[str, ...]]]:
    """(method path, field-name path) of every field that names a task queue in a
    namespace-scoped request: a ``TaskQueue`` message or a queue string, at any depth."""
    pool = descriptor_pool.Default()
    out: list[tuple[str, tuple[str, ...]]] = []

    def walk(desc: Descriptor, path: tuple[str, ...], seen: frozenset[str], method: str) -> None:
        for fd in desc.fields:
            here = (*path, fd.name)
            if fd.type == FieldDescriptor.TYPE_MESSAGE and (sub := fd.message_type) is not None:
                if sub.full_name == methods.TASK_QUEUE_MESSAGE:
                    out.append((method, here))
                elif sub.full_name not in seen and not sub.GetOptions().map_entry:
                    walk(sub, here, seen | {sub.full_name}, method)
            elif fd.type == FieldDescriptor.TYPE_STRING and (
                    fd.name in methods.TASK_QUEUE_STRING_FIELDS
                    or (desc.full_name, fd.name) in methods.STICKY_QUEUE_FIELDS):
                out.append((method, here))

    for path, entry in sorted(methods.table().items()):
        if entry.request_type and entry.method.scope is Scope.NAMESPACE:
            desc = pool.FindMessageTypeByName(entry.request_type)
            walk(desc, (), frozenset({desc.full_name}), path)
    return out


QUEUE_PATHS = _queue_paths()


def _request(method: str, path: tuple[str, ...], queue: str, normal_name: str = "") -> bytes:
    """The request of ``method`` in namespace default naming ``queue`` at ``path``: a
    ``TaskQueue`` gets it as a STICKY-kind ``name`` (with ``normal_name`` if given), a string
    field as its value."""
    entry = methods.table()[method]
    cls: type[Message] = symbol_database.Default().GetSymbol(entry.request_type)
    message = cls()
    if "namespace" in message.DESCRIPTOR.fields_by_name:
        message.namespace = "default"  # type: ignore[attr-defined]
    node: Any = message
    for name in path[:-1]:
        fd = node.DESCRIPTOR.fields_by_name[name]
        child = getattr(node, name)
        node = child.add() if _repeated(fd) else child
        if "namespace" in node.DESCRIPTOR.fields_by_name and (
                node.DESCRIPTOR.full_name in methods.CROSS_NAMESPACE_MESSAGES):
            node.namespace = "default"
    last = node.DESCRIPTOR.fields_by_name[path[-1]]
    if last.type == FieldDescriptor.TYPE_MESSAGE:
        tq = getattr(node, path[-1])
        tq = tq.add() if _repeated(last) else tq
        tq.name = queue
        tq.kind = STICKY
        tq.normal_name = normal_name
    elif _repeated(last):
        getattr(node, path[-1]).append(queue)
    else:
        setattr(node, path[-1], queue)
    return message.SerializeToString()


def _repeated(fd: Any) -> bool:
    rep = getattr(fd, "is_repeated", None)
    return bool(rep) if rep is not None else fd.label == FieldDescriptor.LABEL_REPEATED


def _call(envoy: EnvoyInstance, token: str, method: str, body: bytes) -> tuple[str, str]:
    """(status code name, details) of a raw unary call through Envoy."""
    with grpc.insecure_channel(envoy.target) as channel:
        call = channel.unary_unary(method, request_serializer=None,
                                   response_deserializer=None)
        try:
            call(body, metadata=(("authorization", f"Bearer {token}"),), timeout=1.5)
        except grpc.RpcError as exc:
            return exc.code().name, exc.details() or ""  # type: ignore[attr-defined]
    return "OK", ""


def test_generated_paths_cover_the_api() -> None:
    """The walk found the queue fields of commands, multi-operations, schedules, batch
    operations, Nexus callbacks, versioning calls and sticky fields (not a vacuous list)."""
    found = {(m.rsplit("/", 1)[-1], ".".join(p)) for m, p in QUEUE_PATHS}
    for expected in [
        ("RespondWorkflowTaskCompleted",
         "commands.schedule_activity_task_command_attributes.task_queue"),
        ("RespondWorkflowTaskCompleted", "sticky_attributes.worker_task_queue"),
        ("ExecuteMultiOperation", "operations.start_workflow.task_queue"),
        ("CreateSchedule", "schedule.action.start_workflow.task_queue"),
        ("StartBatchOperation",
         "update_activity_options_operation.activity_options.task_queue"),
        ("StartWorkflowExecution", "completion_callbacks.nexus_handler.task_queue_name"),
        ("UpdateWorkerVersioningRules", "task_queue"),
        ("ShutdownWorker", "sticky_task_queue"),
    ]:
        assert expected in found, expected
    assert len(QUEUE_PATHS) >= 35


@pytest.mark.parametrize(("method", "path"), QUEUE_PATHS,
                         ids=[f"{m.rsplit('/', 1)[-1]}:{'.'.join(p)}" for m, p in QUEUE_PATHS])
def test_another_teams_queue_at_any_path_is_refused(
    exact_envoy: EnvoyInstance, issuer: IssuerInstance, method: str, path: tuple[str, ...]
) -> None:
    """Payroll's queue at this field path (where the field is a TaskQueue: as a STICKY-kind
    `name` with billing's queue as normal_name) is refused `task_queue_denied`; billing's own
    queue at the same path is not refused by extauthz (the server answers as it will)."""
    token = _billing(issuer)
    code, details = _call(exact_envoy, token, method, _request(method, path, VICTIM, OWN))
    assert (code, details.split(":", 1)[0]) == ("PERMISSION_DENIED", "task_queue_denied"), (
        code, details)
    own = f"{OWN}-{uuid.uuid4().hex[:6]}" if path[-1] != "sticky_task_queue" else (
        f"1@host-{uuid.uuid4().hex}")
    code, details = _call(exact_envoy, token, method, _request(method, path, own))
    if method in methods.BY_ID_METHODS:  # acts on existing work whatever its queue: refused
        assert details.startswith("task_queue_denied"), (code, details)
        return
    assert not (code == "PERMISSION_DENIED" and details.startswith(
        ("task_queue_denied", "permission_denied", "explicit_deny"))), (code, details)


def test_generated_requests_parse_as_the_server_would() -> None:
    """Every generated request parses back (temporalio's own parser) with the queue at its
    path: the suite sends what it means to send."""
    for method, path in QUEUE_PATHS:
        body = _request(method, path, VICTIM)
        cls: type[Message] = symbol_database.Default().GetSymbol(
            methods.table()[method].request_type)
        assert VICTIM.encode() in cls.FromString(body).SerializeToString(), (method, path)


# ---- version skew: the server's own API -----------------------------------------------------


def test_api_diff_reads_the_real_server_by_reflection(temporal: TemporalInstance) -> None:
    """`extauthz api-diff` fetches the dev server's API over gRPC reflection: the server has no
    method or target field this build cannot read (exit 0), and the report lists methods."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "extauthz", "api-diff", "--address",
                           temporal.target], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, (done.stdout, done.stderr)
    report = json.loads(done.stdout)
    assert report["safe"] is True
    assert report["server_only_methods"] == [] and report["server_only_target_fields"] == []
    from extauthz.skew import api_of, server_pool

    server = api_of(server_pool(temporal.target))
    assert ".task_queue" in server["WorkflowService/StartWorkflowExecution"]
    assert len(server) > 100
