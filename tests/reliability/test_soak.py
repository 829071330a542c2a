"""Soak: a bounded run at a steady, fixed rate through real Envoy and the real authz server
(``serve --workers 2``) to a real Temporal dev server, with a realistic mix: a worker polling
and completing workflow and activity tasks, clients starting and describing workflows and
describing the namespace, some calls denied on purpose (a read-only token starting a
workflow, a token for another namespace) and some with bad tokens.

Reported (``soak.json``): requests through Envoy, errors (must be 0: every call gets exactly
the outcome its caller should), p50/p99 added latency (the same DescribeNamespace through
Envoy vs straight to Temporal, interleaved), and the authz server's RSS and open fds at the
start and end. Bounds: RSS may grow by at most ``RSS_GROWTH_BOUND`` (32 MiB) and fds by at most
``FD_GROWTH_BOUND`` (16) over the run.

``EXTAUTHZ_SOAK_SECONDS`` (default 150: "a few minutes in CI") and ``EXTAUTHZ_SOAK_RATE``
(operations/s, default 40) make it longer or heavier.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from relkit import group_pids, open_fds, rss_bytes, write_report
from support.workflows import GreetingWorkflow, greet
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from devkit.components import (
    EnvoyInstance,
    ExtauthzInstance,
    IssuerInstance,
    TemporalInstance,
    start_envoy,
    start_extauthz,
)

SECONDS = float(os.environ.get("EXTAUTHZ_SOAK_SECONDS", "150"))
RATE = float(os.environ.get("EXTAUTHZ_SOAK_RATE", "40"))
WARMUP_SECONDS = 5.0
RSS_GROWTH_BOUND = 32 * 1024 * 1024
FD_GROWTH_BOUND = 16
NS = "payroll"
RPC = timedelta(seconds=10)
# one cycle of the fixed schedule: (operation, expected outcome)
MIX = (
    ("start", "OK"), ("describe_ns", "OK"), ("describe_wf", "OK"), ("describe_ns", "OK"),
    ("start", "OK"), ("read_only_start", "PERMISSION_DENIED"), ("describe_ns", "OK"),
    ("bad_token", "UNAUTHENTICATED"), ("start", "OK"), ("describe_wf", "OK"),
    ("describe_ns", "OK"), ("other_namespace", "PERMISSION_DENIED"),
)


@pytest.fixture(scope="module")
def soak_stack(rel_dir: Path, rel_issuer: IssuerInstance, rel_temporal: TemporalInstance
               ) -> Iterator[tuple[ExtauthzInstance, EnvoyInstance]]:
    authz = start_extauthz(rel_dir, rel_issuer.url, name="extauthz-soak",
                           extra_env={"EXTAUTHZ_WORKERS": "2"})
    envoy = start_envoy(rel_dir, authz=authz.address, upstream=rel_temporal.address)
    try:
        yield authz, envoy
    finally:
        envoy.stop()
        authz.proc.stop()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


async def test_soak(soak_stack: tuple[ExtauthzInstance, EnvoyInstance],
                    rel_issuer: IssuerInstance, rel_temporal: TemporalInstance,
                    report_dir: Path) -> None:
    """Steady mixed load: zero unexpected outcomes, bounded latency and resource growth."""
    authz, envoy = soak_stack
    mint = rel_issuer.mint
    writer = await Client.connect(envoy.target, namespace=NS, api_key=mint(
        sub="soak-svc", permissions=[f"{NS}:write"]), tls=False)
    worker_client = await Client.connect(envoy.target, namespace=NS, api_key=mint(
        sub="soak-worker", permissions=[f"{NS}:write"]), tls=False)
    reader = await Client.connect(envoy.target, namespace=NS, api_key=mint(
        sub="soak-reader", permissions=[f"{NS}:read"]), tls=False)
    stranger = await Client.connect(envoy.target, namespace=NS, api_key=mint(
        sub="soak-stranger", permissions=["other:write"]), tls=False)
    bad = await Client.connect(envoy.target, namespace=NS, api_key="not-a.valid.token",
                               tls=False)
    direct = await Client.connect(rel_temporal.target, namespace=NS)
    queue = f"soak-{uuid.uuid4()}"
    handles: list[WorkflowHandle[Any, Any]] = []
    outcomes: Counter[tuple[str, str]] = Counter()
    errors: list[str] = []
    latency: dict[str, list[float]] = {"via_envoy": [], "direct": []}
    ops_latency: dict[str, list[float]] = {}

    async def describe_ns(client: Client) -> None:
        await client.workflow_service.describe_namespace(
            rr.DescribeNamespaceRequest(namespace=NS), retry=False, timeout=RPC)

    async def op_start() -> None:
        handles.append(await writer.start_workflow(
            GreetingWorkflow.run, "soak", id=f"soak-{uuid.uuid4()}", task_queue=queue,
            execution_timeout=timedelta(seconds=120), rpc_timeout=RPC))

    async def op_describe_ns() -> None:
        t0 = time.perf_counter()
        await describe_ns(writer)
        t1 = time.perf_counter()
        await describe_ns(direct)
        t2 = time.perf_counter()
        latency["via_envoy"].append(t1 - t0)
        latency["direct"].append(t2 - t1)

    async def op_describe_wf() -> None:
        if handles:
            await writer.get_workflow_handle(handles[-1].id).describe(rpc_timeout=RPC)

    async def op_read_only_start() -> None:
        await reader.start_workflow(GreetingWorkflow.run, "no", id=f"denied-{uuid.uuid4()}",
                                    task_queue=queue, rpc_timeout=RPC)

    async def op_bad_token() -> None:
        await describe_ns(bad)

    async def op_other_namespace() -> None:
        await describe_ns(stranger)

    ops: dict[str, Callable[[], Awaitable[None]]] = {
        "start": op_start, "describe_ns": op_describe_ns, "describe_wf": op_describe_wf,
        "read_only_start": op_read_only_start, "bad_token": op_bad_token,
        "other_namespace": op_other_namespace,
    }

    async def run_one(name: str, expected: str, record: bool) -> None:
        t0 = time.perf_counter()
        try:
            await ops[name]()
            got = "OK"
        except RPCError as err:
            got = RPCStatusCode(err.status).name
        except Exception as err:  # an SDK-level failure is an error too
            got = type(err).__name__
        if not record:
            return
        ops_latency.setdefault(name, []).append(time.perf_counter() - t0)
        outcomes[(name, got)] += 1
        if got != expected:
            errors.append(f"{name}: expected {expected}, got {got}")

    async def drive(seconds: float, record: bool) -> int:
        """Fire operations at a fixed rate (open loop) for ``seconds``; wait for them all."""
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        n = 0
        while (due := start + n / RATE) < start + seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            name, expected = MIX[n % len(MIX)]
            task = asyncio.create_task(run_one(name, expected, record))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
        return n

    pgid = authz.proc.pid
    envoy_before: dict[str, int] = {}
    async with Worker(worker_client, task_queue=queue, workflows=[GreetingWorkflow],
                      activities=[greet]):
        await drive(WARMUP_SECONDS, record=False)
        rss_start, fds_start = rss_bytes(group_pids(pgid)), open_fds(group_pids(pgid))
        envoy_before = envoy.stats()
        began = time.monotonic()
        fired = await drive(SECONDS, record=True)
        elapsed = time.monotonic() - began
        rss_end, fds_end = rss_bytes(group_pids(pgid)), open_fds(group_pids(pgid))
        # every workflow started during the run completes (the worker polls and completes)
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
    envoy_after = envoy.stats()

    def delta(name: str) -> int:
        return int(envoy_after.get(name, 0)) - int(envoy_before.get(name, 0))

    via, dir_ = latency["via_envoy"], latency["direct"]
    figures = {
        "seconds": round(elapsed, 1), "rate_per_second": RATE, "operations": fired,
        "requests_through_envoy": delta("http.external.downstream_rq_total"),
        "authz_ok": delta("http.external.ext_authz.extauthz.ok"),
        "authz_denied": delta("http.external.ext_authz.extauthz.denied"),
        "authz_error": delta("http.external.ext_authz.extauthz.error"),
        "intended_denials": sum(n for (op, _), n in outcomes.items()
                                if op in ("read_only_start", "bad_token", "other_namespace")),
        "errors": len(errors),
        "workflows_completed": sum(r == "hello, soak" for r in results),
        "workflows_started": len(handles),
        "added_latency_ms": {"p50": _ms(_pct(via, 0.5) - _pct(dir_, 0.5)),
                             "p99": _ms(_pct(via, 0.99) - _pct(dir_, 0.99))},
        "describe_namespace_ms": {
            "via_envoy": {"p50": _ms(_pct(via, 0.5)), "p99": _ms(_pct(via, 0.99))},
            "direct": {"p50": _ms(_pct(dir_, 0.5)), "p99": _ms(_pct(dir_, 0.99))},
            "paired_difference_median": _ms(statistics.median(
                a - b for a, b in zip(via, dir_, strict=True))) if via else None},
        "operation_ms_p50_p99": {op: [_ms(_pct(v, 0.5)), _ms(_pct(v, 0.99))]
                                 for op, v in sorted(ops_latency.items())},
        "extauthz_rss_mib": {"start": round(rss_start / 2**20, 1),
                             "end": round(rss_end / 2**20, 1),
                             "bound_growth": RSS_GROWTH_BOUND // 2**20},
        "extauthz_fds": {"start": fds_start, "end": fds_end, "bound_growth": FD_GROWTH_BOUND},
        "outcomes": {f"{op}:{code}": n for (op, code), n in sorted(outcomes.items())},
        "error_samples": errors[:20],
    }
    summary = {k: figures[k] for k in ("seconds", "requests_through_envoy", "errors",
                                        "intended_denials", "added_latency_ms",
                                        "extauthz_rss_mib", "extauthz_fds",
                                        "workflows_completed")}
    write_report(report_dir, "soak", {"summary": summary, "details": figures})
    assert errors == [], errors[:20]
    assert figures["authz_error"] == 0
    assert len(results) == len(handles) and figures["workflows_completed"] == len(handles)
    assert figures["requests_through_envoy"] >= fired
    assert rss_end - rss_start <= RSS_GROWTH_BOUND, figures["extauthz_rss_mib"]
    assert fds_end - fds_start <= FD_GROWTH_BOUND, figures["extauthz_fds"]
    assert elapsed < SECONDS * 1.2 + 10, "the load generator could not keep the rate"
