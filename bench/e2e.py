"""End to end: Temporal calls through Envoy to a real Temporal dev server, with

- ``none``: no authorization (the ext_authz filter removed);
- ``bare_<transport>``: ext_authz to the bare always-allow Python server of that transport
  (``bench.baseline``), for each transport of the run (``grpc``, ``http``);
- ``extauthz_<transport>``: ext_authz to this project's server in that transport's mode;
- ``jwt_authn``: Envoy's native ``jwt_authn`` filter verifying the same token on every call
  (no JWT cache), and ``jwt_authn_cache`` with its cache (in the full run only).

Every variant has its own Envoy, rendered from its transport's canonical config
(``envoy/envoy.yaml`` for gRPC mode, ``envoy/envoy-http.yaml`` for HTTP mode) by structured
edits (the none and jwt_authn configs start from the gRPC one and drop the ext_authz filter; see
``envoy_config``), all running at once on free loopback ports; runs alternate between variants,
so the two transports are compared within one run. Nothing is pinned here: Envoy, Temporal, the
authz servers and the load generator share the machine's cores as they would in one pod.

Workloads: GetSystemInfo and DescribeNamespace replayed by h2load (cheap); StartWorkflowExecution
(a unique workflow id per call) and a poll/complete loop (start, PollWorkflowTaskQueue,
RespondWorkflowTaskCompleted) driven by a grpc.aio client in this process. Each is measured at
its maximum (closed loop), then at two fixed rates (open loop) where latency percentiles are
read: half of ``none``'s maximum (the issue's load point) and half of the slowest bare ext_authz's
maximum (a load every variant sustains).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import LoadRequest, latency_summary, ratio, run_h2load, summary
from bench.server import Server, start_server
from bench.transports import Address, Transport
from devkit import envoyconfig, procs
from devkit.components import start_envoy, start_temporal
from devkit.grpcframe import frame
from devkit.ports import free_addresses

WS = "/temporal.api.workflowservice.v1.WorkflowService/"
NAMESPACE = "default"
# kinds of variant; "bare" and "extauthz" become one variant per transport (bare_grpc, …)
VARIANTS = ("none", "bare", "extauthz", "jwt_authn")
FULL_VARIANTS = (*VARIANTS, "jwt_authn_cache")
PER_TRANSPORT = ("bare", "extauthz")
WORKLOADS = ("GetSystemInfo", "DescribeNamespace", "StartWorkflowExecution", "poll/complete")
H2LOAD_WORKLOADS = ("GetSystemInfo", "DescribeNamespace")
JWT_AUTHN_FILTER = "envoy.filters.http.jwt_authn"
JWT_PROVIDER = "bench"
MAX_CLIENTS, MAX_STREAMS = 4, 16
PY_CONCURRENCY = 32
RATE_CLIENTS = 4
CALL_TIMEOUT = 20.0
# The dev server's frontend rate limits (frontend.rps and namespaceRPS, 2400/s) would answer part
# of the no-authz and jwt_authn load with RESOURCE_EXHAUSTED, which h2load counts as success
# (HTTP 200, grpc-status 8): lifted, so every variant measures real Temporal calls. Envoy's
# access log (grpc=%GRPC_STATUS%) is counted per variant to prove it (``grpc_status``).
TEMPORAL_LIMITS = {"frontend.rps": 1_000_000, "frontend.namespaceRPS": 1_000_000,
                   "frontend.globalNamespaceRPS": 1_000_000}
_GRPC_STATUS = re.compile(rb" grpc=(\S+) ")


# -- Envoy configs ------------------------------------------------------------------------------


def _external_filters(config: dict[str, Any]) -> list[dict[str, Any]]:
    hcm = envoyconfig.http_connection_manager(
        envoyconfig.listener(config, envoyconfig.EXTERNAL_LISTENER))
    filters: list[dict[str, Any]] = hcm["http_filters"]
    return filters


Planned = tuple[str, str, Transport | None]  # variant name, kind, transport (None: no authz)


def variant_names(kinds: Sequence[str], transports: Sequence[Transport]) -> list[Planned]:
    """The variants in run order, the per-transport kinds expanded (``bare_grpc``, …)."""
    out: list[Planned] = []
    for kind in kinds:
        if kind in PER_TRANSPORT:
            out += [(f"{kind}_{t.name}", kind, t) for t in transports]
        else:
            out.append((kind, kind, None))
    return out


def envoy_config(variant: str, transport: Transport | None, *, listen: Address, admin: Address,
                 upstream: Address, authz: Address | None, issuer: str,
                 jwks: dict[str, Any]) -> dict[str, Any]:
    """The canonical config for ``variant`` (a kind), by structured edits only."""
    if variant in PER_TRANSPORT:
        assert authz is not None
        assert transport is not None
        return transport.envoy(listen=listen, admin=admin, upstream=upstream, authz=authz)
    config = envoyconfig.edit(envoyconfig.load(), listen=listen, admin=admin, upstream=upstream,
                              drop_internal=True)
    filters = _external_filters(config)
    filters[:] = [f for f in filters if f.get("name") != envoyconfig.EXT_AUTHZ_FILTER]
    resources = config["static_resources"]
    resources["clusters"] = [c for c in resources["clusters"]
                             if c.get("name") != envoyconfig.AUTHZ_CLUSTER]
    if variant == "none":
        return config
    provider: dict[str, Any] = {
        "issuer": issuer,
        "audiences": ["temporal"],
        "local_jwks": {"inline_string": json.dumps(jwks)},
        "forward": True,
    }
    if variant == "jwt_authn_cache":
        provider["jwt_cache_config"] = {"jwt_cache_size": 1000}
    jwt = {
        "name": JWT_AUTHN_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/"
                     "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {JWT_PROVIDER: provider},
            # as ext_authz: every route but the exact health-check path needs a valid token
            "rules": [
                {"match": {"path": envoyconfig.HEALTH_PATH}},
                {"match": {"prefix": "/"}, "requires": {"provider_name": JWT_PROVIDER}},
            ],
        },
    }
    filters.insert(0, jwt)
    return config


@dataclass
class Variant:
    """One Envoy in front of Temporal."""

    name: str
    envoy: procs.ManagedProcess
    listen: Address
    admin: Address

    def forwarded(self) -> int:
        """Requests Envoy has sent to Temporal so far."""
        status, body = procs.http_get(
            f"http://{self.admin[0]}:{self.admin[1]}/stats?filter=^cluster.temporal_frontend."
            "upstream_rq_total$&format=json")
        if status != 200:
            return 0
        for item in json.loads(body).get("stats", []):
            if item.get("name") == "cluster.temporal_frontend.upstream_rq_total":
                return int(item.get("value", 0))
        return 0


# -- the Python driver (StartWorkflowExecution, poll/complete) -----------------------------------


class Driver:
    """grpc.aio calls through one Envoy, as raw bytes (protobuf encoding only where needed)."""

    def __init__(self, target: str, token: str) -> None:
        import grpc

        self._grpc = grpc
        self.channel = grpc.aio.insecure_channel(target)
        self.metadata = (("authorization", f"Bearer {token}"), ("temporal-namespace", NAMESPACE))
        self._calls: dict[str, Any] = {}

    def call(self, method: str) -> Any:
        """A bytes-in, bytes-out unary callable for ``method``."""
        found = self._calls.get(method)
        if found is None:
            found = self._calls[method] = self.channel.unary_unary(
                WS + method, request_serializer=None, response_deserializer=None)
        return found

    async def unary(self, method: str, body: bytes) -> bytes:
        """One call; raises on a gRPC error."""
        reply: bytes = await self.call(method)(body, metadata=self.metadata,
                                                timeout=CALL_TIMEOUT)
        return reply

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()


def _start_body(task_queue: str) -> bytes:
    from temporalio.api.common.v1 import message_pb2 as common
    from temporalio.api.taskqueue.v1 import message_pb2 as tq
    from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

    return bytes(rr.StartWorkflowExecutionRequest(
        namespace=NAMESPACE, workflow_id=f"bench-{uuid.uuid4().hex}",
        workflow_type=common.WorkflowType(name="BenchWorkflow"),
        task_queue=tq.TaskQueue(name=task_queue), request_id=uuid.uuid4().hex,
        identity="bench").SerializeToString())


async def start_op(driver: Driver, task_queue: str) -> None:
    """StartWorkflowExecution with a fresh workflow id."""
    await driver.unary("StartWorkflowExecution", _start_body(task_queue))


async def poll_complete_op(driver: Driver, task_queue: str) -> None:
    """Start a workflow, poll a workflow task, complete it (its workflow, or another's)."""
    from temporalio.api.command.v1 import message_pb2 as command
    from temporalio.api.enums.v1 import CommandType
    from temporalio.api.taskqueue.v1 import message_pb2 as tq
    from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

    await driver.unary("StartWorkflowExecution", _start_body(task_queue))
    raw = await driver.unary("PollWorkflowTaskQueue", rr.PollWorkflowTaskQueueRequest(
        namespace=NAMESPACE, task_queue=tq.TaskQueue(name=task_queue),
        identity="bench").SerializeToString())
    task = rr.PollWorkflowTaskQueueResponse.FromString(raw)
    if not task.task_token:
        raise RuntimeError("empty poll")
    done = command.Command(command_type=CommandType.COMMAND_TYPE_COMPLETE_WORKFLOW_EXECUTION)
    done.complete_workflow_execution_command_attributes.SetInParent()
    await driver.unary("RespondWorkflowTaskCompleted", rr.RespondWorkflowTaskCompletedRequest(
        namespace=NAMESPACE, task_token=task.task_token, commands=[done],
        identity="bench").SerializeToString())


Op = Callable[[], Awaitable[None]]


@dataclass
class PyResult:
    """One driver run."""

    seconds: float
    succeeded: int
    failed: int
    latencies_s: list[float]

    @property
    def rate(self) -> float:
        """Succeeded operations per second."""
        return self.succeeded / self.seconds if self.seconds else 0.0


async def closed_loop(op: Op, seconds: float, concurrency: int) -> PyResult:
    """``concurrency`` loops calling ``op`` back to back until ``seconds`` have passed."""
    deadline = time.perf_counter() + seconds
    lat: list[float] = []
    failed = [0]

    async def loop() -> None:
        while (t := time.perf_counter()) < deadline:
            try:
                await op()
                lat.append(time.perf_counter() - t)
            except Exception:
                failed[0] += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return PyResult(time.perf_counter() - start, len(lat), failed[0], lat)


async def open_loop(op: Op, seconds: float, rate: float) -> PyResult:
    """Start ``op`` ``rate`` times a second for ``seconds`` (whatever the answers' pace)."""
    lat: list[float] = []
    failed = [0]
    tasks: set[asyncio.Task[None]] = set()

    async def one() -> None:
        t = time.perf_counter()
        try:
            await op()
            lat.append(time.perf_counter() - t)
        except Exception:
            failed[0] += 1

    start = time.perf_counter()
    n = int(seconds * rate)
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks), CALL_TIMEOUT + 5)
    took = max(seconds, 1e-9)
    return PyResult(took, len(lat), failed[0], lat)


# -- the part -----------------------------------------------------------------------------------


def _h2_request(method: str, token: str) -> LoadRequest:
    from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

    body = (rr.GetSystemInfoRequest() if method == "GetSystemInfo"
            else rr.DescribeNamespaceRequest(namespace=NAMESPACE)).SerializeToString()
    return LoadRequest(WS + method, {
        "content-type": "application/grpc", "te": "trailers",
        "authorization": f"Bearer {token}", "temporal-namespace": NAMESPACE,
    }, frame(bytes(body)))


class E2E:
    """The running pieces and one measurement per (workload, variant, mode)."""

    def __init__(self, transports: Sequence[Transport], workdir: Path, issuer: Any, token: str,
                 variants: Sequence[str]) -> None:
        self.transports = list(transports)
        self.workdir = workdir
        self.issuer = issuer
        self.token = token
        self.plan = variant_names(variants, self.transports)
        self.temporal: procs.ManagedProcess | None = None
        self.servers: list[Server] = []
        self.variants: dict[str, Variant] = {}
        self._run = 0

    def start(self) -> None:
        """Temporal, the authz servers, one Envoy per variant; check each answers correctly."""
        temporal = start_temporal(self.workdir, namespaces=("default",),
                                  dynamic_config=TEMPORAL_LIMITS)
        self.temporal, upstream = temporal.proc, temporal.address
        authz: dict[str, Address] = {}
        for name, kind, transport in self.plan:
            if transport is None:
                continue
            server = start_server(transport, "baseline" if kind == "bare" else "extauthz", 1,
                                  self.workdir, self.issuer.url, None, f"e2e {name}")
            self.servers.append(server)
            authz[name] = server.address
        for name, kind, transport in self.plan:
            listen, admin = free_addresses(2)
            config = envoy_config(kind, transport, listen=listen, admin=admin,
                                  upstream=upstream, authz=authz.get(name),
                                  issuer=self.issuer.url, jwks=self.issuer.jwks())
            envoy = start_envoy(
                self.workdir, config_text=envoyconfig.dump(config),
                config_path=self.workdir / f"envoy-{name}.yaml",
                log_path=self.workdir / f"envoy-{name}.log", admin=admin, listen=listen).proc
            self.variants[name] = Variant(name, envoy, listen, admin)
        asyncio.run(self._sanity())

    async def _sanity(self) -> None:
        """Every workload succeeds through every variant (h2load cannot see gRPC errors)."""
        for variant in self.variants.values():
            driver = Driver(f"{variant.listen[0]}:{variant.listen[1]}", self.token)
            try:
                for method in H2LOAD_WORKLOADS:
                    await driver.unary(method, _h2_request(method, self.token).body[5:])
                await poll_complete_op(driver, f"bench-sanity-{variant.name}")
            except Exception as exc:
                raise RuntimeError(f"{variant.name}: a call through Envoy failed: {exc}") from exc
            finally:
                await driver.close()

    def grpc_statuses(self) -> dict[str, dict[str, int]]:
        """Per variant, the gRPC statuses in its Envoy's access log (read after Envoy stopped,
        so everything is flushed): what h2load cannot see."""
        out: dict[str, dict[str, int]] = {}
        for name in self.variants:
            path = self.workdir / f"envoy-{name}.log"
            with contextlib.suppress(OSError):
                out[name] = dict(Counter(m.decode() for m in _GRPC_STATUS.findall(
                    path.read_bytes())))
        return out

    def stop(self) -> None:
        """Stop everything this part started."""
        for variant in self.variants.values():
            variant.envoy.stop()
        for server in self.servers:
            server.proc.terminate()
        for server in self.servers:
            server.proc.stop()
        if self.temporal is not None:
            self.temporal.stop()

    def measure(self, workload: str, variant: Variant, seconds: float,
                rate: float | None) -> dict[str, Any]:
        """One run: max (``rate`` None) or fixed rate; calls/s and latency percentiles."""
        self._run += 1
        before = variant.forwarded()
        if workload in H2LOAD_WORKLOADS:
            request = _h2_request(workload, self.token)
            if rate is None:
                res = run_h2load(variant.listen, request, self.workdir, seconds=seconds,
                                 clients=MAX_CLIENTS, streams=MAX_STREAMS)
            else:
                res = run_h2load(variant.listen, request, self.workdir, seconds=seconds,
                                 clients=RATE_CLIENTS, streams=100, rps_total=rate,
                                 want_latencies=True)
            out: dict[str, Any] = {"calls_per_s": res.rate, "failed": res.failed,
                                   "succeeded": res.succeeded}
            lat = res.latencies_s
            calls = res.succeeded
        else:
            queue = f"bench-{workload.replace('/', '-')}-{variant.name}-{self._run}"
            pres = asyncio.run(self._py(workload, variant, queue, seconds, rate))
            per_op = 3 if workload == "poll/complete" else 1
            out = {"calls_per_s": pres.rate * per_op, "ops_per_s": pres.rate,
                   "failed": pres.failed, "succeeded": pres.succeeded}
            lat = pres.latencies_s
            calls = pres.succeeded * per_op
        forwarded = variant.forwarded() - before
        # calls that were answered but never reached Temporal (an authz denial or error)
        out["not_forwarded"] = max(0, calls - forwarded)
        if rate is not None:
            out.update(latency_summary(lat))
            out["target_rate"] = rate
        return out

    async def _py(self, workload: str, variant: Variant, queue: str, seconds: float,
                  rate: float | None) -> PyResult:
        driver = Driver(f"{variant.listen[0]}:{variant.listen[1]}", self.token)
        try:
            if workload == "StartWorkflowExecution":
                def op() -> Awaitable[None]:
                    return start_op(driver, queue)
            else:
                def op() -> Awaitable[None]:
                    return poll_complete_op(driver, queue)
            try:
                await op()  # connection set-up outside the window
            except Exception:
                setup_failed = 1
            else:
                setup_failed = 0
            result = await (closed_loop(op, seconds, PY_CONCURRENCY) if rate is None
                            else open_loop(op, seconds, rate))
            result.failed += setup_failed
            return result
        finally:
            await driver.close()


def run(transports: Sequence[Transport], workdir: Path, issuer: Any, token: str, *,
        seconds: float, repeats: int, variants: Sequence[str] = VARIANTS,
        workloads: Sequence[str] = WORKLOADS,
        rate_seconds: float | None = None) -> dict[str, Any]:
    """Every workload: max for each variant in alternation (``seconds`` each), then the fixed
    rates likewise (``rate_seconds`` each, default ``seconds``)."""
    rate_seconds = rate_seconds or seconds
    e2e = E2E(transports, workdir, issuer, token, variants)
    names = [t.name for t in transports]
    results: dict[str, Any] = {}
    try:
        e2e.start()
        for v in e2e.variants.values():  # warm-up: connections, caches, Temporal's JIT paths
            run_h2load(v.listen, _h2_request("DescribeNamespace", token), workdir, seconds=0.5,
                       clients=MAX_CLIENTS, streams=MAX_STREAMS)
        for workload in workloads:
            maxes: dict[str, list[dict[str, Any]]] = {v: [] for v in e2e.variants}
            for _ in range(repeats):
                for name, v in e2e.variants.items():
                    maxes[name].append(e2e.measure(workload, v, seconds, None))
            rates = {}
            bare = [summary([r["calls_per_s"] for r in maxes[f"bare_{n}"]])["median"]
                    for n in names if f"bare_{n}" in maxes]
            own = [summary([r["calls_per_s"] for r in maxes[f"extauthz_{n}"]])["median"]
                   for n in names if f"extauthz_{n}" in maxes]
            # half of no-authz's max is retired: a saturated one-process server measures its
            # own queue there
            peaks = {"half_own": min(own) if own else None,
                     "half_bare": min(bare) if bare else None}
            for phase, peak in peaks.items():
                if peak:
                    # loops per second for poll/complete (three calls each)
                    rates[phase] = peak / 2 / (3 if workload == "poll/complete" else 1)
            fixed: dict[str, dict[str, list[dict[str, Any]]]] = {}
            for phase, rate in rates.items():
                fixed[phase] = {v: [] for v in e2e.variants}
                for _ in range(repeats):
                    for name, v in e2e.variants.items():
                        fixed[phase][name].append(e2e.measure(workload, v, rate_seconds, rate))
            results[workload] = _workload_summary(maxes, fixed, rates, names)
    finally:
        e2e.stop()
    statuses = e2e.grpc_statuses()
    for w in results.values():
        for name, row in w["variants"].items():
            # the whole run's access log of this variant (every workload; "-": no gRPC status,
            # e.g. Envoy's own health checks)
            row["grpc_not_ok"] = sum(n for status, n in statuses.get(name, {}).items()
                                     if status not in ("OK", "-", "0"))
    return {
        "pinning": "none (Envoy, Temporal, authz servers and load generator share all CPUs)",
        "seconds_per_run": seconds, "seconds_per_fixed_rate_run": rate_seconds,
        "repeats": repeats, "transports": names,
        "variants": [name for name, _, _ in e2e.plan],
        "load": {"h2load_max": f"{MAX_CLIENTS} connections x {MAX_STREAMS} streams",
                 "h2load_rate": f"{RATE_CLIENTS} connections, --rps",
                 "python_max": f"grpc.aio, {PY_CONCURRENCY} concurrent loops",
                 "python_rate": "grpc.aio, open loop"},
        "temporal_dynamic_config": TEMPORAL_LIMITS, "grpc_status": statuses,
        "workloads": results,
    }


def _workload_summary(maxes: dict[str, list[dict[str, Any]]],
                      fixed: dict[str, dict[str, list[dict[str, Any]]]],
                      rates: dict[str, float], transports: Sequence[str]) -> dict[str, Any]:
    """Per variant: max calls/s, and per fixed-rate phase the latency percentiles; ratios per
    transport and HTTP ÷ gRPC.

    Phases: ``half_own`` (half of the slowest extauthz variant's own max: the added latency
    where the authz server is not saturated) and ``half_bare`` (half of the slowest bare ext_authz's
    max, where every variant keeps up)."""
    rows: dict[str, Any] = {}
    for name, m in maxes.items():
        runs = list(m)
        row: dict[str, Any] = {"calls_per_s": summary([r["calls_per_s"] for r in m])}
        for phase, per_variant in fixed.items():
            f = per_variant[name]
            runs += f
            row[phase] = {
                "p50_ms": summary([r["p50_ms"] for r in f]),
                "p99_ms": summary([r["p99_ms"] for r in f]),
                "p999_ms": summary([r["p999_ms"] for r in f]),
                "achieved_rate": summary([r["calls_per_s"] for r in f]),
            }
        row["failed"] = sum(r["failed"] for r in runs)
        row["not_forwarded"] = sum(r["not_forwarded"] for r in runs)
        rows[name] = row

    def med(variant: str, key: str, phase: str | None = None) -> float | None:
        row = rows.get(variant)
        if row is None or (phase is not None and phase not in row):
            return None
        value: float | None = (row[phase] if phase else row)[key]["median"]
        return value

    def calls(variant: str) -> float | None:
        return med(variant, "calls_per_s")

    def added(ours: str, key: str, phase: str) -> float | None:
        b, a = med(ours, key, phase), med("none", key, phase)
        return b - a if b is not None and a is not None else None

    ratios: dict[str, Any] = {}
    for t in transports:
        ours, bare = f"extauthz_{t}", f"bare_{t}"
        ratios[t] = {
            **{f"added_{key}_{phase}": added(ours, key, phase)
               for phase in fixed for key in ("p50_ms", "p99_ms", "p999_ms")},
            "extauthz_over_none": ratio(calls(ours), calls("none")),
            "extauthz_over_bare": ratio(calls(ours), calls(bare)),
            "extauthz_over_jwt_authn": ratio(calls(ours), calls("jwt_authn")),
            "bare_over_none": ratio(calls(bare), calls("none")),
        }
    if "grpc" in transports and "http" in transports:
        ratios["http_over_grpc"] = {
            "extauthz": ratio(calls("extauthz_http"), calls("extauthz_grpc")),
            "bare": ratio(calls("bare_http"), calls("bare_grpc")),
        }
    return {"fixed_rates_ops_per_s": rates, "variants": rows, "ratios": ratios}
