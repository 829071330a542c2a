"""The three policy rules end to end: the temporalio SDK → real Envoy → the authz server running
``examples/policy.yaml`` (tokens from the dev issuer) → a real Temporal dev server; with Envoy's
gRPC and its HTTP ext_authz protocol (the ``transport`` fixture).

1. only group `finance` starts workflows in `payroll`, in any way (the `starts-workflows`
   category: a platform admin's schedule trigger, backfill or reset is refused too); other
   readers list and describe them;
2. developers describe/list/query/read history but cannot terminate, cancel, reset or delete;
3. the billing service account's worker polls and completes on `billing-*` only; starting a
   workflow on another queue is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.workflows import GreetingWorkflow, greet
from temporalio.api.batch.v1 import message_pb2 as batch
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleBackfill,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from devkit.components import (
    EnvoyInstance,
    IssuerInstance,
    TemporalInstance,
    policy_stack,
    start_envoy,
    start_extauthz,
)

REPO = Path(__file__).resolve().parents[2]
RPC_TIMEOUT = timedelta(seconds=10)
WF_TIMEOUT = timedelta(seconds=60)


@pytest.fixture(scope="module")
def policy_envoy(
    e2e_dir: Path, temporal: TemporalInstance, issuer: IssuerInstance, transport: str
) -> Iterator[EnvoyInstance]:
    """Envoy → an authz server with EXTAUTHZ_POLICY_FILE=examples/policy.yaml → Temporal."""
    policy = e2e_dir / f"policy-{transport}.yaml"
    shutil.copy(REPO / "examples" / "policy.yaml", policy)
    with policy_stack(e2e_dir, temporal, issuer, policy=policy, transport=transport) as envoy:
        yield envoy


async def _connect(envoy: EnvoyInstance, token: str, namespace: str) -> Client:
    return await Client.connect(envoy.target, namespace=namespace, api_key=token, tls=False)


def _finance(issuer: IssuerInstance) -> str:
    return str(issuer.mint(sub="fiona", groups=["finance"]))


def _developer(issuer: IssuerInstance) -> str:
    return str(issuer.mint(sub="dave", groups=["developers"]))


def _platform_admin(issuer: IssuerInstance) -> str:
    """Group `platform`: admin on every namespace and the cluster, not finance."""
    return str(issuer.mint(sub="pat", groups=["platform"]))


def _billing(issuer: IssuerInstance) -> str:
    return str(issuer.mint(sub="billing-svc", client_id="billing-svc", gty="client-credentials"))


def _assert_denied(exc: pytest.ExceptionInfo[RPCError], code: str) -> None:
    assert exc.value.status == RPCStatusCode.PERMISSION_DENIED, exc.value
    assert code in str(exc.value), exc.value


@contextlib.asynccontextmanager
async def billing_worker(envoy: EnvoyInstance, issuer: IssuerInstance) -> AsyncIterator[str]:
    """The billing service account's worker, polling a fresh `billing-*` queue in default.
    (Started inside the test: a fixture would run it on another event loop.)"""
    client = await _connect(envoy, _billing(issuer), "default")
    queue = f"billing-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[GreetingWorkflow],
                      activities=[greet]):
        yield queue


# ---- rule 1 -------------------------------------------------------------------------------


async def test_rule1_only_finance_starts_payroll(policy_envoy: EnvoyInstance,
                                                 issuer: IssuerInstance) -> None:
    """Finance starts a payroll workflow; a developer (who can read payroll) cannot."""
    finance = await _connect(policy_envoy, _finance(issuer), "payroll")
    wf_id = f"payroll-{uuid.uuid4()}"
    handle = await finance.start_workflow(GreetingWorkflow.run, "payroll", id=wf_id,
                                          task_queue="payroll", execution_timeout=WF_TIMEOUT)
    dev = await _connect(policy_envoy, _developer(issuer), "payroll")
    with pytest.raises(RPCError) as exc:
        await dev.start_workflow(GreetingWorkflow.run, "x", id=f"dev-{uuid.uuid4()}",
                                 task_queue="payroll", execution_timeout=WF_TIMEOUT)
    _assert_denied(exc, "explicit_deny")
    # other readers can still list and describe payroll workflows
    described = await dev.get_workflow_handle(wf_id).describe()
    assert described.id == wf_id
    auditor = await _connect(policy_envoy, issuer.mint(sub="ada", groups=["auditors"]),
                             "payroll")
    found = [w.id async for w in auditor.list_workflows(f"WorkflowId = '{wf_id}'")]
    assert found in ([wf_id], [])  # visibility is eventually consistent; the call is allowed
    await handle.terminate("test done")  # finance has write on payroll


def _assert_rule1(exc: pytest.ExceptionInfo[RPCError], what: str) -> None:
    _assert_denied(exc, "explicit_deny")
    assert "only-finance-starts-payroll" in str(exc.value), what


async def test_rule1_platform_admin_cannot_run_a_payroll_schedule(
    policy_envoy: EnvoyInstance, issuer: IssuerInstance
) -> None:
    """Finance creates a paused payroll schedule; a platform admin's trigger, backfill and
    unpause (PatchSchedule) are refused `explicit_deny` by rule 1 and the schedule starts no
    run, while finance's own trigger does start one."""
    finance = await _connect(policy_envoy, _finance(issuer), "payroll")
    admin = await _connect(policy_envoy, _platform_admin(issuer), "payroll")
    sched_id = f"payroll-sched-{uuid.uuid4().hex[:8]}"
    handle = await finance.create_schedule(sched_id, Schedule(
        action=ScheduleActionStartWorkflow(GreetingWorkflow.run, "payroll", id=f"{sched_id}-wf",
                                           task_queue="payroll", execution_timeout=WF_TIMEOUT),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(minutes=1))]),
        state=ScheduleState(paused=True)))
    try:
        theirs = admin.get_schedule_handle(sched_id)
        now = datetime.now(UTC)
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "trigger": lambda: theirs.trigger(rpc_timeout=RPC_TIMEOUT),
            "backfill": lambda: theirs.backfill(ScheduleBackfill(
                start_at=now - timedelta(minutes=10), end_at=now,
                overlap=ScheduleOverlapPolicy.ALLOW_ALL), rpc_timeout=RPC_TIMEOUT),
            "unpause": lambda: theirs.unpause(note="no", rpc_timeout=RPC_TIMEOUT),
        }
        for name, call in calls.items():
            with pytest.raises(RPCError) as exc:
                await call()
            _assert_rule1(exc, name)
        assert (await theirs.describe()).id == sched_id  # the admin still reads it
        described = await handle.describe()
        assert described.schedule.state.paused
        assert described.info.num_actions == 0
        assert not described.info.running_actions and not described.info.recent_actions
        # the same trigger by finance does start a run: the check above can see one
        await handle.trigger(rpc_timeout=RPC_TIMEOUT)
        for _ in range(100):
            described = await handle.describe()
            if described.info.running_actions or described.info.recent_actions:
                break
            await asyncio.sleep(0.1)
        started = [a.workflow_id for a in described.info.running_actions
                   if isinstance(a, ScheduleActionExecutionStartWorkflow)]
        assert started or described.info.recent_actions, described.info
        for wf_id in started:
            await finance.get_workflow_handle(wf_id).terminate("test done")
    finally:
        await handle.delete()


async def test_rule1_platform_admin_cannot_reset_payroll_workflows(
    policy_envoy: EnvoyInstance, issuer: IssuerInstance
) -> None:
    """A platform admin's ResetWorkflowExecution of a finished payroll workflow, and a batch
    reset of it (StartBatchOperation), are refused `explicit_deny` by rule 1; no new run
    appears, while finance's own reset runs the workflow again."""
    finance = await _connect(policy_envoy, _finance(issuer), "payroll")
    admin = await _connect(policy_envoy, _platform_admin(issuer), "payroll")
    queue = f"payroll-{uuid.uuid4().hex[:8]}"
    wf_id = f"payroll-{uuid.uuid4()}"
    async with Worker(finance, task_queue=queue, workflows=[GreetingWorkflow],
                      activities=[greet]):
        handle = await finance.start_workflow(GreetingWorkflow.run, "payroll", id=wf_id,
                                              task_queue=queue, execution_timeout=WF_TIMEOUT)
        assert await handle.result() == "hello, payroll"
        first_run = (await handle.describe()).run_id
        execution = WorkflowExecution(workflow_id=wf_id, run_id=first_run)

        def reset(client: Client) -> Awaitable[rr.ResetWorkflowExecutionResponse]:
            return client.workflow_service.reset_workflow_execution(
                rr.ResetWorkflowExecutionRequest(
                    namespace="payroll", workflow_execution=execution, reason="again",
                    workflow_task_finish_event_id=4, request_id=str(uuid.uuid4())),
                retry=False, timeout=RPC_TIMEOUT)

        with pytest.raises(RPCError) as exc:
            await reset(admin)
        _assert_rule1(exc, "reset")
        with pytest.raises(RPCError) as exc:
            await admin.workflow_service.start_batch_operation(
                rr.StartBatchOperationRequest(
                    namespace="payroll", job_id=str(uuid.uuid4()), reason="again",
                    executions=[execution],
                    reset_operation=batch.BatchOperationReset(identity="pat")),
                retry=False, timeout=RPC_TIMEOUT)
        _assert_rule1(exc, "batch reset")
        assert (await finance.get_workflow_handle(wf_id).describe()).run_id == first_run
        # finance may: its reset is a new run, completed by the worker
        new_run = (await reset(finance)).run_id
        assert new_run != first_run
        again = finance.get_workflow_handle(wf_id, run_id=new_run)
        assert await again.result() == "hello, payroll"


# ---- rule 2 -------------------------------------------------------------------------------


async def test_rule2_developers_inspect_but_never_destroy(
    policy_envoy: EnvoyInstance, issuer: IssuerInstance
) -> None:
    """A developer describes, lists, queries and reads history of a workflow, and is refused
    terminate, cancel, reset and delete."""
    dev = await _connect(policy_envoy, _developer(issuer), "default")
    wf_id = f"dev-{uuid.uuid4()}"
    async with billing_worker(policy_envoy, issuer) as queue:
        handle = await dev.start_workflow(GreetingWorkflow.run, "dev", id=wf_id,
                                          task_queue=queue, execution_timeout=WF_TIMEOUT)
        assert await handle.result() == "hello, dev"
        assert (await handle.describe()).id == wf_id
        history = await handle.fetch_history()
        assert len(history.events) > 3
        await handle.query("__stack_trace")  # answered by the billing worker
    [_ async for _ in dev.list_workflows("WorkflowType = 'GreetingWorkflow'", limit=5)]
    svc = dev.workflow_service
    execution = WorkflowExecution(workflow_id=wf_id)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "terminate": lambda: handle.terminate("no"),
        "cancel": handle.cancel,
        "reset": lambda: svc.reset_workflow_execution(rr.ResetWorkflowExecutionRequest(
            namespace="default", workflow_execution=execution, reason="no",
            workflow_task_finish_event_id=3, request_id=str(uuid.uuid4())),
            retry=False, timeout=RPC_TIMEOUT),
        "delete": lambda: svc.delete_workflow_execution(rr.DeleteWorkflowExecutionRequest(
            namespace="default", workflow_execution=execution), retry=False,
            timeout=RPC_TIMEOUT),
    }
    for name, call in calls.items():
        with pytest.raises(RPCError) as exc:
            await call()
        _assert_denied(exc, "explicit_deny")
        assert "developers-never-destroy" in str(exc.value), name


# ---- rule 3 -------------------------------------------------------------------------------


async def test_rule3_service_account_limited_to_billing_queues(
    policy_envoy: EnvoyInstance, issuer: IssuerInstance
) -> None:
    """The billing worker completes a workflow on its billing-* queue; the same account is
    refused starting a workflow on another queue and polling another queue."""
    client = await _connect(policy_envoy, _billing(issuer), "default")
    async with billing_worker(policy_envoy, issuer) as queue:
        result = await client.execute_workflow(GreetingWorkflow.run, "billing",
                                               id=f"bill-{uuid.uuid4()}", task_queue=queue,
                                               execution_timeout=WF_TIMEOUT)
    assert result == "hello, billing"
    with pytest.raises(RPCError) as exc:
        await client.start_workflow(GreetingWorkflow.run, "x", id=f"ship-{uuid.uuid4()}",
                                    task_queue="shipping", execution_timeout=WF_TIMEOUT)
    _assert_denied(exc, "task_queue_denied")
    with pytest.raises(RPCError) as exc:
        await client.workflow_service.poll_activity_task_queue(
            rr.PollActivityTaskQueueRequest(namespace="default",
                                            task_queue=TaskQueue(name="shipping")),
            retry=False, timeout=RPC_TIMEOUT)
    _assert_denied(exc, "task_queue_denied")
    # and nothing outside its namespace or its role
    payroll = await _connect(policy_envoy, _billing(issuer), "payroll")
    with pytest.raises(RPCError) as exc:
        await payroll.start_workflow(GreetingWorkflow.run, "x", id=f"p-{uuid.uuid4()}",
                                     task_queue="billing-x", execution_timeout=WF_TIMEOUT)
    assert exc.value.status == RPCStatusCode.PERMISSION_DENIED


# ---- hot reload through the real server ---------------------------------------------------


def _policy_health(target: str) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(service="extauthz.policy"), timeout=5)
        return int(answer.status)


async def test_sighup_reload_applies_new_rule_and_keeps_old_on_error(
    e2e_dir: Path, temporal: TemporalInstance, issuer: IssuerInstance, transport: str
) -> None:
    """SIGHUP with an invalid file keeps the old policy (health `extauthz.policy` goes
    NOT_SERVING); a valid file with a new deny rule applies from the reload on."""
    import asyncio
    import signal

    from grpc_health.v1 import health_pb2

    policy = e2e_dir / f"policy-reload-{transport}.yaml"
    original = (REPO / "examples" / "policy.yaml").read_text()
    policy.write_text(original)
    # one process: SIGHUP goes to the server itself (`serve --workers N` supervisors do not
    # forward it yet; their workers still pick up file changes by polling)
    authz = start_extauthz(e2e_dir, issuer.url, name="extauthz-reload",
                           extra_env={"EXTAUTHZ_POLICY_FILE": str(policy),
                                      "EXTAUTHZ_WORKERS": "1",
                                      "EXTAUTHZ_POLICY_POLL_SECONDS": "3600"},
                           transport=transport)
    envoy = start_envoy(e2e_dir, authz=authz.address, upstream=temporal.address,
                        transport=transport)
    try:
        auditor = await _connect(envoy, issuer.mint(sub="ada", groups=["auditors"]), "payroll")
        await auditor.count_workflows()
        assert _policy_health(authz.target) == health_pb2.HealthCheckResponse.SERVING
        policy.write_text(original.replace("roles: [read]", "roles: [reader]", 1))
        authz.proc.signal(signal.SIGHUP)
        for _ in range(50):
            if _policy_health(authz.target) == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(0.1)
        assert _policy_health(authz.target) == health_pb2.HealthCheckResponse.NOT_SERVING
        await auditor.count_workflows()  # the old policy still decides
        policy.write_text(original + """
  - name: auditors-no-count
    match: {groups: [auditors]}
    methods: [CountWorkflowExecutions]
""")
        authz.proc.signal(signal.SIGHUP)
        for _ in range(50):
            if _policy_health(authz.target) == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.1)
        with pytest.raises(RPCError) as exc:
            await auditor.count_workflows()
        _assert_denied(exc, "auditors-no-count")
    finally:
        envoy.stop()
        authz.proc.stop()
