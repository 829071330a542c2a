"""Fault injection with real processes: Envoy (envoy/envoy.yaml) → the real authz server →
a recording upstream, under a steady load of authorized, forbidden and anonymous calls.

Every fault runs once per ext_authz transport (the ``transport`` fixture; figures ``name`` for
gRPC mode, ``name[http]`` for HTTP mode): in HTTP mode Envoy uses envoy/envoy-http.yaml and the
server serves Envoy's HTTP protocol on ``http_listen`` (its gRPC health, ``extauthz.policy``
included, on a separate plaintext ``health_listen``). The expectations are the same in both
modes: in HTTP mode Envoy answers an authorizer that is down, too slow or reset with its own
503, which the gRPC client reads as UNAVAILABLE, exactly what gRPC mode gives. For SIGTERM the
health that matters is the one Envoy's health check reads: gRPC health
(``envoy.service.auth.v3.Authorization``) in gRPC mode, ``GET /healthz`` on the check listener
in HTTP mode (envoy-http.yaml's ``http_health_check``); in HTTP mode the test watches both.

Every fault must fail closed: calls fail ``UNAVAILABLE`` (retryable) while the authorizer
cannot answer, no forbidden or anonymous call is ever OK, every call that reached the upstream
is one the authorizer allowed for the caller (``upstream calls == OK answers``, each decoded to
the allowed namespace with the authorizer's identity header), and the service comes back by
itself once the authz server is back, without touching Envoy.

The OIDC issuer down/slow/garbage during load is covered by ``tests/integration/auth``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from relkit import ChaosProxy, Load, Outcome, group_pids, tally, wait_calls, write_report
from support.fakes import RecordingUpstream
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from devkit import components, procs
from devkit.components import EnvoyInstance, IssuerInstance, start_envoy
from devkit.ports import free_addresses
from devkit.procs import ManagedProcess

DESCRIBE = "/temporal.api.workflowservice.v1.WorkflowService/DescribeNamespace"
ALLOWED_NS, FORBIDDEN_NS = "payroll", "other"
SUBJECT = "fault-writer"
KINDS = ("authorized", "forbidden", "authorized", "anonymous")
CLIENT_TIMEOUT = 5.0
POLICY_V1 = "version: 1\nprofile: temporal-compatible\n"
POLICY_FROZEN = """version: 1
profile: temporal-compatible
deny:
  - name: freeze-payroll
    match: {anyone: true}
    methods: [DescribeNamespace]
    namespaces: [payroll]
    message: payroll is frozen
"""
FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _report(report_dir: Path) -> Iterator[None]:
    yield
    write_report(report_dir, "faults", {"summary": {
        name: {k: v for k, v in fig.items() if k in (
            "calls", "unavailable", "wrongly_allowed", "recovery_seconds", "resets")}
        for name, fig in FIGURES.items()}, "details": FIGURES})


# ---- the rig ------------------------------------------------------------------------------


@dataclass
class Rig:
    """One authz server (restartable on the same address), Envoy, a recorder, and load."""

    workdir: Path
    issuer: IssuerInstance
    # the server's gRPC listen (Check and health in gRPC mode; health only in HTTP mode)
    address: tuple[str, int]
    upstream: RecordingUpstream
    extra_env: dict[str, str]
    transport: str = "grpc"
    # HTTP mode: where Envoy sends checks (http_listen); fixed, so a restart keeps it
    http_address: tuple[str, int] | None = None
    config: Path | None = None
    envoy: EnvoyInstance | None = None
    authz: ManagedProcess | None = None
    starts: int = 0
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def check_address(self) -> tuple[str, int]:
        """Where Envoy sends checks for this transport."""
        return self.http_address if self.http_address is not None else self.address

    def start_authz(self) -> ManagedProcess:
        self.starts += 1
        # on fixed addresses, so a restart keeps them; in HTTP mode health is on `address`
        self.authz = components.start_extauthz(
            self.workdir, self.issuer.url, transport=self.transport, listen=self.address,
            http_listen=self.http_address, health_listen=self.address, config_file=self.config,
            extra_env={"EXTAUTHZ_WORKERS": "1", **self.extra_env},
            log_path=self.workdir / f"extauthz-fault-{self.transport}-{self.address[1]}-"
                                    f"{self.starts}.log").proc
        return self.authz

    def call(self, kind: str) -> str:
        token = self.tokens["authorized"]
        namespace = FORBIDDEN_NS if kind == "forbidden" else ALLOWED_NS
        metadata = [] if kind == "anonymous" else [("authorization", f"Bearer {token}")]
        assert self.envoy is not None
        try:
            self._stub(rr.DescribeNamespaceRequest(namespace=namespace).SerializeToString(),
                       metadata=metadata, timeout=CLIENT_TIMEOUT)
        except grpc.RpcError as err:
            return str(err.code().name)
        return "OK"

    def open(self) -> None:
        assert self.envoy is not None
        self._channel = grpc.insecure_channel(self.envoy.target)
        self._stub = self._channel.unary_unary(DESCRIBE)

    def close(self) -> None:
        self._channel.close()

    def load(self, threads: int = 4, pause: float = 0.005) -> Load:
        return Load(self.call, KINDS, threads=threads, limit=90.0, pause=pause).start()

    def wait_ok(self, timeout: float = 20.0) -> float:
        """Seconds until an authorized call succeeds again."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.call("authorized") == "OK":
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(f"the service did not come back within {timeout}s")


def check_fail_closed(rig: Rig, outcomes: list[Outcome]) -> dict[str, Any]:
    """The invariants of every fault; returns the figures."""
    codes = Counter((o.kind, o.code) for o in outcomes)
    seen = rig.upstream.seen
    wrong = []
    for call in seen:
        body = rr.DescribeNamespaceRequest.FromString(call.body)
        if body.namespace != ALLOWED_NS or call.metadata.get(
                "x-temporal-authz-subject") != [SUBJECT]:
            wrong.append(f"{body.namespace} {call.metadata.get('x-temporal-authz-subject')}")
    ok = sum(n for (_kind, code), n in codes.items() if code == "OK")
    # the probes of wait_ok also reach the upstream: count them as OK answers too
    figures = {"calls": len(outcomes), "ok": ok, "upstream_calls": len(seen),
               "unavailable": sum(n for (_k, c), n in codes.items() if c == "UNAVAILABLE"),
               "codes": {f"{k}:{c}": n for (k, c), n in sorted(codes.items())},
               "wrongly_allowed": len(wrong) + codes[("forbidden", "OK")]
               + codes[("anonymous", "OK")]}
    assert wrong == []
    assert codes[("forbidden", "OK")] == 0
    assert codes[("anonymous", "OK")] == 0
    allowed_codes = {"OK", "PERMISSION_DENIED", "UNAUTHENTICATED", "UNAVAILABLE"}
    assert {c for (_k, c) in codes} <= allowed_codes, codes
    return figures


@pytest.fixture
def rig(rel_dir: Path, rel_issuer: IssuerInstance, request: pytest.FixtureRequest
        ) -> Iterator[Rig]:
    """A private stack per test (the tests break it), in the test's ``transport`` if it asks
    for one (gRPC otherwise)."""
    marker = request.node.get_closest_marker("rig")
    options: dict[str, Any] = dict(marker.kwargs) if marker else {}
    transport = (str(request.getfixturevalue("transport"))
                 if "transport" in request.fixturenames else "grpc")
    upstream = RecordingUpstream().start()
    address, http_address = free_addresses(2)
    rig = Rig(rel_dir, rel_issuer, address, upstream,
              dict(options.get("env", {})), transport=transport,
              http_address=http_address if transport == "http" else None)
    if "config" in options:
        rig.config = rel_dir / f"fault-config-{rig.address[1]}.yaml"
        rig.config.write_text(options["config"].format(dir=rel_dir, port=rig.address[1]))
    if "policy" in options:
        (rel_dir / f"policy-{rig.address[1]}.yaml").write_text(options["policy"])
    rig.tokens["authorized"] = rel_issuer.mint(sub=SUBJECT, permissions=[f"{ALLOWED_NS}:write"])
    proxy = None
    try:
        rig.start_authz()
        authz_address = rig.check_address
        if options.get("proxy"):
            proxy = ChaosProxy(rig.check_address).start()
            authz_address = proxy.address
            rig.proxy = proxy  # type: ignore[attr-defined]
        rig.envoy = start_envoy(rel_dir, authz=authz_address, upstream=upstream.address,
                                authz_timeout=options.get("authz_timeout"),
                                transport=transport)
        rig.open()
        assert rig.call("authorized") == "OK"
        upstream.clear()
        yield rig
    finally:
        with_close = getattr(rig, "_channel", None)
        if with_close is not None:
            rig.close()
        if rig.envoy is not None:
            rig.envoy.stop()
        if proxy is not None:
            proxy.close()
        if rig.authz is not None:
            if rig.authz.running():
                os.killpg(rig.authz.pid, signal.SIGCONT)
            rig.authz.stop()
        upstream.stop()


# ---- faults -------------------------------------------------------------------------------


def _figure(name: str, rig: Rig) -> str:
    """The figures' key: ``name`` for gRPC mode (as before), ``name[http]`` for HTTP mode."""
    return name if rig.transport == "grpc" else f"{name}[{rig.transport}]"


def test_authz_killed_during_load_fails_closed_and_recovers(rig: Rig, transport: str) -> None:
    """SIGKILL the authz server mid-load: every call fails UNAVAILABLE until it is back, none
    is allowed; after a restart on the same address the service resumes with no action on
    Envoy."""
    load = rig.load()
    time.sleep(1.5)
    assert rig.authz is not None
    os.killpg(rig.authz.pid, signal.SIGKILL)
    rig.authz.wait(10)
    killed = time.monotonic()
    time.sleep(3.0)
    restarting = time.monotonic()
    rig.start_authz()
    restarted = time.monotonic()
    recovery = rig.wait_ok()
    wait_calls(load, restarted + recovery + 0.5, 10, kind="authorized")
    outcomes = load.stop()
    figures = check_fail_closed(rig, outcomes)
    outage = tally(outcomes, killed + 0.2, restarting)
    assert outage and {code for _k, code in outage} == {"UNAVAILABLE"}, outage
    assert tally(outcomes, restarted + recovery + 0.5)[("authorized", "OK")] > 0
    figures.update(outage_calls=sum(outage.values()), restart_seconds=round(
        restarted - restarting, 2), recovery_seconds=round(recovery, 2))
    FIGURES[_figure("authz_killed", rig)] = figures


@pytest.mark.rig(authz_timeout=0.5)
def test_authz_stalled_past_envoy_timeout_is_unavailable(rig: Rig, transport: str) -> None:
    """SIGSTOP the authz server: calls fail UNAVAILABLE after Envoy's ext_authz timeout, and
    the answers it gives after SIGCONT (to checks Envoy gave up on) let nothing through."""
    load = rig.load()
    time.sleep(1.0)
    assert rig.authz is not None
    os.killpg(rig.authz.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    time.sleep(3.0)
    os.killpg(rig.authz.pid, signal.SIGCONT)
    resumed = time.monotonic()
    recovery = rig.wait_ok()
    time.sleep(1.0)
    outcomes = load.stop()
    figures = check_fail_closed(rig, outcomes)
    stalled = tally(outcomes, stopped + 0.1, resumed - 0.7)
    assert stalled and {code for _k, code in stalled} == {"UNAVAILABLE"}, stalled
    slowest = max((o.ended - o.started for o in outcomes
                   if stopped + 0.1 <= o.started < resumed - 0.7), default=0.0)
    assert slowest < 0.5 + 1.0, "Envoy's ext_authz timeout did not bound the stall"
    # late answers to abandoned checks did not send anything upstream
    probes = 1 + int(recovery > 0)
    assert len(rig.upstream.seen) <= figures["ok"] + probes
    figures.update(stalled_calls=sum(stalled.values()), slowest_stalled_call=round(slowest, 3),
                   recovery_seconds=round(recovery, 2))
    FIGURES[_figure("authz_stalled", rig)] = figures


@pytest.mark.rig(proxy=True)
def test_envoy_authz_connections_reset_during_load(rig: Rig, transport: str) -> None:
    """RST every Envoy ↔ authz connection ten times during load: affected calls fail
    UNAVAILABLE, nothing is allowed wrongly, Envoy reconnects by itself."""
    proxy: ChaosProxy = rig.proxy  # type: ignore[attr-defined]
    load = rig.load()
    time.sleep(1.0)
    resets = 0
    for _ in range(10):
        resets += proxy.reset_all()
        time.sleep(0.3)
    last_reset = time.monotonic()
    recovery = rig.wait_ok()
    wait_calls(load, last_reset + recovery + 0.2, 10, kind="authorized")
    outcomes = load.stop()
    figures = check_fail_closed(rig, outcomes)
    assert resets >= 10
    assert tally(outcomes, last_reset + recovery + 0.2)[("authorized", "OK")] > 0
    figures.update(resets=resets, recovery_seconds=round(recovery, 2),
                   connections=proxy.accepted)
    FIGURES[_figure("connections_reset", rig)] = figures


def _policy_health(address: tuple[str, int]) -> str:
    with grpc.insecure_channel(f"{address[0]}:{address[1]}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="extauthz.policy"), timeout=2)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


@pytest.mark.rig(policy=POLICY_V1, config="policy_file: {dir}/policy-{port}.yaml\n"
                 "policy_poll_seconds: 0.2\n")
def test_invalid_policy_file_during_load_keeps_the_old_policy(rig: Rig, transport: str
                                                               ) -> None:
    """Replace the policy file by an invalid one (atomically, then half-written in place)
    during load: the old policy keeps deciding, `extauthz.policy` health goes NOT_SERVING; a
    valid new file then takes effect."""
    assert rig.config is not None
    policy = rig.workdir / f"policy-{rig.address[1]}.yaml"
    assert _policy_health(rig.address) == "SERVING"
    load = rig.load()
    time.sleep(1.0)
    broken = policy.with_suffix(".tmp")
    broken.write_text("version: 1\nbindings: [oops\n")
    broken.replace(policy)
    bad_from = time.monotonic()
    procs.wait_until(lambda: _policy_health(rig.address) == "NOT_SERVING", 10,
                     "policy health NOT_SERVING")
    wait_calls(load, time.monotonic(), 10, kind="authorized")
    policy.write_text(POLICY_FROZEN[: len(POLICY_FROZEN) // 2])  # in place, cut short
    time.sleep(1.0)  # several polls (0.2 s) read the half-written file
    wait_calls(load, time.monotonic(), 10, kind="authorized")
    bad_until = time.monotonic()
    assert _policy_health(rig.address) == "NOT_SERVING"
    fixed = policy.with_suffix(".tmp")
    fixed.write_text(POLICY_FROZEN)
    fixed.replace(policy)
    procs.wait_until(lambda: _policy_health(rig.address) == "SERVING", 10,
                     "policy health SERVING")
    frozen_from = time.monotonic()
    wait_calls(load, frozen_from + 0.2, 10, kind="authorized")
    outcomes = load.stop()
    figures = check_fail_closed(rig, outcomes)
    during = tally(outcomes, bad_from, bad_until)
    assert during[("authorized", "OK")] > 0
    assert {c for (k, c) in during if k == "authorized"} == {"OK"}, during
    assert {c for (k, c) in during if k == "forbidden"} == {"PERMISSION_DENIED"}, during
    after = tally(outcomes, frozen_from + 0.2)
    assert {c for (k, c) in after if k == "authorized"} == {"PERMISSION_DENIED"}, after
    figures.update(calls_with_invalid_file=sum(during.values()))
    FIGURES[_figure("policy_invalid", rig)] = figures


class HealthWatch:
    """Polls the authz server's health directly, recording (time, status) until stopped:
    gRPC health (``envoy.service.auth.v3.Authorization``) on ``address``, or with ``url`` the
    HTTP transport's ``GET /healthz`` (200 SERVING, 503 NOT_SERVING)."""

    def __init__(self, address: tuple[str, int], url: str | None = None):
        self.target = f"{address[0]}:{address[1]}"
        self.url = url
        self.samples: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> HealthWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        if self.url is not None:
            self._run_http(self.url)
            return
        deadline = time.monotonic() + 60
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(
                        service="envoy.service.auth.v3.Authorization"), timeout=0.5)
                    status = str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
                except grpc.RpcError as err:
                    status = f"error:{err.code().name}"
                self.samples.append((time.monotonic(), status))
                time.sleep(0.05)

    def _run_http(self, url: str) -> None:
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                code, _body = procs.http_get(url, timeout=0.5)
                status = {200: "SERVING", 503: "NOT_SERVING"}.get(code, f"http:{code}")
            except Exception as err:  # refused/reset once the server stopped listening
                status = f"error:{type(err).__name__}"
            self.samples.append((time.monotonic(), status))
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def first(self, predicate: Any) -> float | None:
        return next((t for t, s in self.samples if predicate(s)), None)


SHUTDOWN_DELAY = 4.0


@pytest.mark.rig(config=f"shutdown_delay_seconds: {SHUTDOWN_DELAY:g}\nshutdown_grace_seconds: 5\n")
def test_sigterm_during_load_drains_gracefully(rig: Rig, transport: str) -> None:
    """SIGTERM mid-load: health goes NOT_SERVING at once and Envoy's health check sees it,
    checks keep being answered through the shutdown delay (none fails), then the server drains
    and exits 0; only calls after it stopped fail, as UNAVAILABLE."""
    assert rig.authz is not None and rig.envoy is not None
    # what Envoy's health check reads: gRPC health in gRPC mode, GET /healthz in HTTP mode
    # (the gRPC health on health_listen is watched too: both must turn at once)
    watches = {"grpc": HealthWatch(rig.address).start()}
    if rig.http_address is not None:
        host, port = rig.http_address
        watches["http"] = HealthWatch(rig.address, url=f"http://{host}:{port}/healthz").start()
    envoy_watch = watches[rig.transport]
    load = rig.load()
    wait_calls(load, time.monotonic(), 40)
    hc_before = rig.envoy.stats().get("cluster.extauthz.health_check.failure", 0)
    term = time.monotonic()
    rig.authz.signal(signal.SIGTERM)
    envoy_saw: float | None = None
    while rig.authz.running() and time.monotonic() - term < 20:
        if envoy_saw is None and rig.envoy.stats().get(
                "cluster.extauthz.health_check.failure", 0) > hc_before:
            envoy_saw = time.monotonic()
        time.sleep(0.1)
    code = rig.authz.wait(5)
    exited = time.monotonic()
    wait_calls(load, exited + 0.2, 20)
    outcomes = load.stop()
    for watch in watches.values():
        watch.stop()
    figures = check_fail_closed(rig, outcomes)
    assert code == 0
    turned = {name: w.first(lambda s: s == "NOT_SERVING") for name, w in watches.items()}
    # "at once": well inside the delay (a loaded machine may take a few hundred ms to get there)
    for name, when in turned.items():
        assert when is not None and when - term < SHUTDOWN_DELAY / 2, (
            name, watches[name].samples[-20:])
    not_serving = envoy_watch.first(lambda s: s == "NOT_SERVING")
    assert not_serving is not None
    assert envoy_saw is not None and envoy_saw < exited, "Envoy never saw NOT_SERVING"
    unavailable = [o for o in outcomes if o.code == "UNAVAILABLE"]
    first_unavailable = min((o.ended for o in unavailable), default=None)
    assert first_unavailable is None or not_serving < first_unavailable
    # the delay starts no earlier than the signal: calls that started a second before its end
    # were answered (the margin absorbs Envoy's own latency on a loaded machine)
    served = tally(outcomes, term - 1.0, term + SHUTDOWN_DELAY - 1.0)
    assert served[("authorized", "OK")] > 0
    assert {c for _k, c in served} <= {"OK", "PERMISSION_DENIED", "UNAUTHENTICATED"}, served
    after = tally(outcomes, exited + 0.2)
    assert after and {c for _k, c in after} == {"UNAVAILABLE"}, after
    figures.update(
        not_serving_after_sigterm=round(not_serving - term, 3),
        envoy_health_failure_after_sigterm=round(envoy_saw - term, 3),
        exited_after_sigterm=round(exited - term, 2),
        calls_answered_while_draining=sum(tally(outcomes, term, exited).values()),
        failed_during_delay=sum(n for (_k, c), n in tally(
            outcomes, term, term + SHUTDOWN_DELAY).items() if c == "UNAVAILABLE"),
        failed_while_draining=sum(n for (_k, c), n in tally(outcomes, term, exited).items()
                                  if c == "UNAVAILABLE"))
    if "http" in turned:
        figures.update(grpc_health_not_serving_after_sigterm=round(
            (turned["grpc"] or 0.0) - term, 3))
    FIGURES[_figure("sigterm", rig)] = figures


@pytest.mark.rig(env={"EXTAUTHZ_WORKERS": "2"})
def test_one_of_two_workers_killed_is_restarted_by_the_supervisor(rig: Rig, transport: str
                                                                   ) -> None:
    """With `serve --workers 2`, SIGKILL one worker mid-load: nothing is allowed wrongly, the
    supervisor starts a replacement by itself and the service carries on."""
    assert rig.authz is not None
    pids = [p for p in group_pids(rig.authz.pid) if p != rig.authz.pid]
    assert len(pids) >= 2, pids
    load = rig.load()
    time.sleep(1.0)
    os.kill(pids[0], signal.SIGKILL)
    killed = time.monotonic()
    procs.wait_until(lambda: len([p for p in group_pids(rig.authz.pid)  # type: ignore[union-attr]
                                  if p not in pids and p != rig.authz.pid]) >= 1,  # type: ignore[union-attr]
                     20, "a replacement worker")
    replaced = time.monotonic() - killed
    # the replacement joins the port once it has keys; then the service carries on
    wait_calls(load, killed + replaced + 1.0, 10, kind="authorized")
    outcomes = load.stop()
    figures = check_fail_closed(rig, outcomes)
    assert tally(outcomes, killed + replaced + 1.0)[("authorized", "OK")] > 0
    figures.update(recovery_seconds=round(replaced, 2))
    FIGURES[_figure("worker_killed", rig)] = figures
