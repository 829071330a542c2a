"""Worst bodies: what one request can cost the server in the scan/unframe path, per family.

``.venv/bin/python -m bench.worst_body [--repeats 3] [--only NAME,...] [--json FILE]``

Each case is a gRPC body of at most Envoy's ``max_request_bytes`` (4 MiB + 5), plain or gzip,
built to be as expensive as possible for one family of the scanner's work. Every case runs in
a fresh subprocess (so one case's heap never pollutes another's peak) and reports:

- ``target ms``: CPU (``time.process_time``) of ``Pipeline.target`` — ``wire.unframe`` plus
  ``wire.scan`` — min of ``--repeats`` runs;
- ``check ms``: one full ``Pipeline.check`` with a valid token of a principal with no roles
  (fake verifier: the token cache hit), min of the repeats; ``anon µs``: the same without a
  token (refused before the body is read);
- ``RSS MiB``: peak RSS growth over the first scan (body already in memory): ``VmHWM`` after
  the scan minus ``VmRSS`` before it, the peak reset through ``/proc/self/clear_refs``;
  ``heap MiB``: ``tracemalloc`` peak of one scan;
- ``x normal``: target CPU / a normal StartWorkflowExecution's, measured in the same run.

The case builders are shared with ``tests/unit/test_wire_cost.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.api.command.v1 import message_pb2 as command_pb2
from temporalio.api.common.v1 import message_pb2 as common_pb2
from temporalio.api.enums.v1 import TaskQueueKind, command_type_pb2
from temporalio.api.taskqueue.v1 import message_pb2 as taskqueue_pb2
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from devkit.grpcframe import frame, varint
from extauthz import wire

WS = "/temporal.api.workflowservice.v1.WorkflowService/"
MiB = 1024 * 1024
MAX_MESSAGE = wire.DEFAULT_MAX_MESSAGE_BYTES  # Envoy's max_request_bytes is this + 5
NORMAL = "normal StartWorkflowExecution"
_NORMAL = TaskQueueKind.TASK_QUEUE_KIND_NORMAL
_STICKY = TaskQueueKind.TASK_QUEUE_KIND_STICKY


# -- protobuf wire bytes ------------------------------------------------------------------------


def ld(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def fill(head: bytes, unit: bytes, tail: bytes = b"", size: int = MAX_MESSAGE) -> bytes:
    """``head`` + as many ``unit`` as fit + ``tail``, at most ``size`` bytes."""
    return head + unit * ((size - len(head) - len(tail)) // len(unit)) + tail


def _payload(data: bytes) -> common_pb2.Payload:
    return common_pb2.Payload(metadata={"encoding": b"json/plain"}, data=data)


def sdk_activity_command(i: int) -> command_pb2.Command:
    """A ScheduleActivityTask command as an SDK sends it (ids, type, queue, header, input,
    timeouts, retry policy)."""
    attrs = command_pb2.ScheduleActivityTaskCommandAttributes(
        activity_id=str(i + 1),
        activity_type=common_pb2.ActivityType(name="charge_customer"),
        task_queue=taskqueue_pb2.TaskQueue(name="billing-activities", kind=_NORMAL),
        input=common_pb2.Payloads(payloads=[_payload(
            b'{"customer_id":"cus_%08d","amount_cents":%d,"currency":"EUR"}' % (i, 100 + i))]),
    )
    attrs.schedule_to_close_timeout.FromSeconds(3600)
    attrs.start_to_close_timeout.FromSeconds(300)
    attrs.heartbeat_timeout.FromSeconds(30)
    attrs.retry_policy.initial_interval.FromSeconds(1)
    attrs.retry_policy.backoff_coefficient = 2.0
    attrs.retry_policy.maximum_attempts = 5
    return command_pb2.Command(
        command_type=command_type_pb2.COMMAND_TYPE_SCHEDULE_ACTIVITY_TASK,
        schedule_activity_task_command_attributes=attrs)


def sdk_rwtc(commands: int) -> bytes:
    """A RespondWorkflowTaskCompleted with ``commands`` SDK-sized ScheduleActivityTask."""
    req = rr.RespondWorkflowTaskCompletedRequest(
        task_token=b"\x0a\x24" + b"t" * 120, namespace="default", identity="1234@worker-7f9",
        sticky_attributes=taskqueue_pb2.StickyExecutionAttributes(
            worker_task_queue=taskqueue_pb2.TaskQueue(
                name="worker-7f9-sticky", kind=_STICKY, normal_name="billing")),
        commands=[sdk_activity_command(i) for i in range(commands)])
    return bytes(req.SerializeToString())


def normal_start() -> bytes:
    """A StartWorkflowExecution as an SDK sends it."""
    req = rr.StartWorkflowExecutionRequest(
        namespace="default", workflow_id="order-4711",
        workflow_type=common_pb2.WorkflowType(name="OrderWorkflow"),
        task_queue=taskqueue_pb2.TaskQueue(name="orders", kind=_NORMAL),
        input=common_pb2.Payloads(payloads=[_payload(b'{"order":4711,"items":[1,2,3]}')]),
        identity="1234@client", request_id="5c1b9a3e-6f0e-4b7e-9a57-1f4c9d0e2a11")
    req.workflow_execution_timeout.FromSeconds(86400)
    return bytes(req.SerializeToString())


# -- the cases ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    """One body: ``method`` (short name), how to build its message, gzip or plain."""

    name: str
    method: str
    build: Callable[[], bytes]
    gzip: bool = False
    worst: bool = True  # an attacker's family (False: legit traffic, must be accepted)

    def body(self) -> bytes:
        """The framed gRPC body, at most 4 MiB + 5 bytes on the wire."""
        message = self.build()
        if self.gzip:
            return frame(gzip.compress(message, 6), 1)
        return frame(message)


_NS = ld(1, b"default")
_NS9 = ld(9, b"default")  # RespondWorkflowTaskCompleted's namespace
_BOMB = b"\x00" * (64 * MiB)  # inflates 1000:1; over the size cap either way

_BUILDERS: dict[str, tuple[str, Callable[[], bytes]]] = {
    # namespace then 2 M two-byte unplanned fields (workflow_id = 0 as a varint)
    "top: tiny fields": ("StartWorkflowExecution", lambda: fill(_NS, b"\x10\x00")),
    # unplanned varints of 10 bytes each (the slowest field to skip per byte)
    "top: 10-byte varints": (
        "StartWorkflowExecution", lambda: fill(_NS, b"\x10" + b"\xff" * 9 + b"\x01")),
    # 2 M empty commands: a repeated planned message, each its own element
    "repeated: empty commands": ("RespondWorkflowTaskCompleted",
                                 lambda: fill(_NS9, ld(2, b""))),
    # commands → schedule activity → empty task queue: three levels per 6 bytes
    "repeated: nested commands": ("RespondWorkflowTaskCompleted",
                                  lambda: fill(_NS9, ld(2, ld(2, ld(4, b""))))),
    # operations → start workflow → task queue
    "repeated: multi-operation": ("ExecuteMultiOperation",
                                  lambda: fill(_NS, ld(2, ld(1, ld(4, b""))))),
    # schedule → action → start_workflow → task_queue, the deepest plan, all singular: merged
    "deep singular merged": ("CreateSchedule",
                             lambda: fill(_NS, ld(3, ld(2, ld(1, ld(3, b"")))))),
    # one singular TaskQueue sent 2 M times: its occurrences are merged
    "singular task queue x2M": ("StartWorkflowExecution", lambda: fill(_NS, ld(4, b""))),
    # one TaskQueue whose name is sent 1 M times (each decoded: last wins)
    "task queue names x1M": (
        "StartWorkflowExecution",
        lambda: _NS + ld(4, fill(b"", ld(1, b"q"), size=MAX_MESSAGE - 16))),
    # many task queues: commands each scheduling an activity on a one-letter queue
    "task queues: commands": ("RespondWorkflowTaskCompleted",
                              lambda: fill(_NS9, ld(2, ld(2, ld(4, ld(1, b"q")))))),
    # one 4 MiB payload, skipped by length
    "max LEN: one payload": ("StartWorkflowExecution",
                             lambda: _NS + ld(5, b"x" * (MAX_MESSAGE - 32))),
    # a 4 MiB namespace (decoded)
    "max LEN: namespace": ("StartWorkflowExecution",
                           lambda: ld(1, b"n" * (MAX_MESSAGE - 16))),
    # cross-namespace targets of 64 KiB each (each decoded and kept)
    "max LEN: other namespaces": (
        "RespondWorkflowTaskCompleted",
        lambda: fill(_NS9, ld(2, ld(13, ld(1, b"n" * 65536))))),
}

# legit traffic: must be accepted. The worst is a workflow task scheduling 2,000 activities at
# once: Temporal refuses a task that would leave more than 2,000 pending (its default
# limit.numPendingActivities.error), so a real task carries at most that many.
_LEGIT: dict[str, tuple[str, Callable[[], bytes]]] = {
    NORMAL: ("StartWorkflowExecution", normal_start),
    "legit: RWTC 10 commands": ("RespondWorkflowTaskCompleted", lambda: sdk_rwtc(10)),
    "legit: RWTC 2000 commands": ("RespondWorkflowTaskCompleted", lambda: sdk_rwtc(2000)),
}


def cases() -> list[Case]:
    """Every case: legit ones, each worst family plain, the gzip ones, the gzip bombs."""
    out = [Case(name, m, b, worst=False) for name, (m, b) in _LEGIT.items()]
    out += [Case(name, m, b) for name, (m, b) in _BUILDERS.items()]
    for name in ("top: tiny fields", "repeated: empty commands", "repeated: nested commands",
                 "singular task queue x2M", "deep singular merged"):
        m, b = _BUILDERS[name]
        out.append(Case(f"gzip {name}", m, b, gzip=True))
    out.append(Case("gzip legit: RWTC 2000 commands", "RespondWorkflowTaskCompleted",
                    _LEGIT["legit: RWTC 2000 commands"][1], gzip=True, worst=False))
    # the most repetitive legit payload measured (~400x): must still inflate
    out.append(Case("gzip legit: repetitive payload", "StartWorkflowExecution",
                    lambda: _NS + ld(5, b"2024-01-01,EUR,100,active\n" * 120_000),
                    gzip=True, worst=False))
    # a bomb: 64 MiB of zeros (and namespace first) in ~64 KiB of gzip
    out.append(Case("gzip bomb: 64 MiB zeros", "StartWorkflowExecution",
                    lambda: _NS + _BOMB, gzip=True))
    # inflates to just under the size cap: only the ratio cap stops it
    out.append(Case("gzip bomb: 4 MiB zeros", "StartWorkflowExecution",
                    lambda: _NS + ld(5, b"\x00" * (MAX_MESSAGE - 32)), gzip=True))
    return out


def by_name(name: str) -> Case:
    """The case called ``name``."""
    for case in cases():
        if case.name == name:
            return case
    raise KeyError(name)


# -- measuring (in the child) -------------------------------------------------------------------


class _Verifier:
    """Every token verifies, as a principal with no roles (the token-cache hit)."""

    def __init__(self) -> None:
        from extauthz.auth.types import IssuerConfig, VerifiedToken

        self._verified = VerifiedToken(IssuerConfig(issuer="https://issuer.example"),
                                       {"sub": "nobody"}, time.time() + 3600)

    async def verify(self, token: str) -> Any:
        return self._verified


def _drive(coro: Any) -> Any:
    """Run a coroutine that never suspends (the fake verifier does not)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("the check suspended")


def _cpu(fn: Callable[[], object], repeats: int, inner: int = 1) -> float:
    """Min over ``repeats`` of the CPU seconds of one call (``inner`` calls averaged)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(inner):
            fn()
        best = min(best, (time.process_time() - t0) / inner)
    return best


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_now_kib() -> int:
    """Current RSS, after resetting the peak (``VmHWM``) to it where Linux allows."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def _rss_peak_kib() -> int:
    """Peak RSS since the last reset (``VmHWM``; ``ru_maxrss`` elsewhere)."""
    return _status_kib("VmHWM")


def measure(case: Case, body: bytes, repeats: int) -> dict[str, Any]:
    """Everything the table shows for one case, measured in this process."""
    from extauthz import methods
    from extauthz.model import CheckInput, Decision
    from extauthz.pipeline import Pipeline

    entry = methods.by_name(f"WorkflowService/{case.method}")
    assert entry is not None
    pipeline = Pipeline(_Verifier(), http_api=False)
    headers = {"content-type": "application/grpc"}
    if case.gzip:
        headers["grpc-encoding"] = "gzip"
    anon = CheckInput(WS + case.method, dict(headers), body)
    authed = CheckInput(WS + case.method, {**headers, "authorization": "Bearer t.o.k"}, body)
    # warm up on a small normal request: imports, the method table, caches
    warm = CheckInput(WS + "StartWorkflowExecution", {**headers, "authorization": "Bearer t"},
                      frame(gzip.compress(normal_start())) if case.gzip else frame(normal_start()))
    for _ in range(3):
        pipeline.target(entry, warm)
        _drive(pipeline.check(warm))
    rss0 = _rss_now_kib()
    t0 = time.process_time()
    first = pipeline.target(entry, authed)
    first_cpu = time.process_time() - t0
    rss1 = _rss_peak_kib()
    small = len(body) < 4096
    target_s = min(first_cpu, _cpu(lambda: pipeline.target(entry, authed), repeats,
                                   200 if small else 1))
    check_s = _cpu(lambda: _drive(pipeline.check(authed)), repeats, 200 if small else 1)
    anon_s = _cpu(lambda: _drive(pipeline.check(anon)), repeats, 200)
    decision: Decision = _drive(pipeline.check(authed))
    tracemalloc.start()
    tracemalloc.reset_peak()
    pipeline.target(entry, authed)
    heap = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "case": case.name, "method": case.method, "gzip": case.gzip, "worst": case.worst,
        "body_bytes": len(body),
        "scan": "refused: " + str(first.reason) if isinstance(first, Decision) else "read",
        "decision": str(decision.reason),
        "target_ms": target_s * 1e3, "check_ms": check_s * 1e3, "anon_us": anon_s * 1e6,
        "rss_delta_mib": max(0, rss1 - rss0) / 1024, "heap_peak_mib": heap / MiB,
    }


# -- the parent ---------------------------------------------------------------------------------


def run(names: list[str] | None = None, repeats: int = 3) -> list[dict[str, Any]]:
    """Each case in a fresh subprocess; rows with ``ratio`` to the normal request filled in."""
    chosen = [c for c in cases() if names is None or c.name in names or c.name == NORMAL]
    rows = []
    with tempfile.TemporaryDirectory(prefix="extauthz-worst-") as tmp:
        for case in chosen:
            path = Path(tmp) / "body"
            path.write_bytes(case.body())
            proc = subprocess.run(
                [sys.executable, "-m", "bench.worst_body", "--child", case.name,
                 "--body-file", str(path), "--repeats", str(repeats)],
                capture_output=True, text=True, check=False,
                cwd=Path(__file__).resolve().parent.parent)
            if proc.returncode != 0:
                raise RuntimeError(f"{case.name}: {proc.stderr[-2000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"bench.worst_body: {case.name} done", file=sys.stderr, flush=True)
    normal = next(r for r in rows if r["case"] == NORMAL)["target_ms"]
    for r in rows:
        r["ratio"] = r["target_ms"] / normal if normal else None
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The human-readable table."""
    lines = [f"{'case':<34}{'body KiB':>9}  {'scan':<26}{'target ms':>10}{'check ms':>9}"
             f"{'anon µs':>8}{'RSS MiB':>8}{'heap MiB':>9}{'x normal':>10}"]
    lines.extend(
        f"{r['case']:<34}{r['body_bytes'] / 1024:>9.1f}  {r['scan'][:26]:<26}"
        f"{r['target_ms']:>10.3f}{r['check_ms']:>9.3f}{r['anon_us']:>8.1f}"
        f"{r['rss_delta_mib']:>8.1f}{r['heap_peak_mib']:>9.2f}{r['ratio']:>10.0f}"
        for r in rows)
    worst = [r for r in rows if r["worst"]]
    if worst:
        top = max(worst, key=lambda r: r["target_ms"])
        mem = max(worst, key=lambda r: r["rss_delta_mib"])
        lines.append(f"worst CPU: {top['case']} {top['target_ms']:.1f} ms "
                     f"(x {top['ratio']:.0f} normal); worst RSS: {mem['case']} "
                     f"+{mem['rss_delta_mib']:.1f} MiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the cases (or, with ``--child``, measure one) and print the table."""
    ap = argparse.ArgumentParser(prog="python -m bench.worst_body", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default=None, help="comma-separated case names")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--body-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        body = args.body_file.read_bytes()
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        print(json.dumps(measure(by_name(args.child), body, args.repeats)))
        return 0
    names = [n.strip() for n in args.only.split(",")] if args.only else None
    rows = run(names, args.repeats)
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
