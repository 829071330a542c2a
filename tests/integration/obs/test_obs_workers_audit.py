"""`extauthz serve --workers 2` as real processes: checks spread over both workers, the
supervisor's /metrics counts every one of them (also after a worker is killed and restarted),
the audit log of a run full of tokens contains none, and SIGTERM stops everything."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2
from prometheus_client.parser import text_string_to_metric_families
from support.checks import check_request
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from devkit.grpcframe import frame
from devkit.issuer import DevIssuer
from devkit.ports import free_ports
from devkit.procs import ManagedProcess, http_get, wait_until

WS = "/temporal.api.workflowservice.v1.WorkflowService/"
SERVING = 1


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == x for k, x in labels.items()))


class Served:
    def __init__(self, proc: ManagedProcess, target: str, metrics_port: int, log: Path):
        self.proc, self.target, self.metrics_port, self.log = proc, target, metrics_port, log

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()
                if line.startswith("{")]


@pytest.fixture(scope="module")
def served(dev: DevIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("workers")
    port, metrics_port = free_ports(2)
    env = {**os.environ, "EXTAUTHZ_LISTEN": f"127.0.0.1:{port}",
           "TEMPORAL_AUTH_PROVIDER_URL": dev.url, "TEMPORAL_AUTH_CLIENT_ID": "temporal",
           "EXTAUTHZ_ALLOW_INSECURE_ISSUER": "1", "PYTHONUNBUFFERED": "1",
           "EXTAUTHZ_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
           "EXTAUTHZ_AUDIT_ALLOW_SAMPLE_RATE": "1", "EXTAUTHZ_LOG_FORMAT": "json"}
    log = tmp / "extauthz.log"
    proc = ManagedProcess("extauthz", [sys.executable, "-m", "extauthz", "serve",
                                       "--workers", "2"], log_path=log, env=env).start()
    served = Served(proc, f"127.0.0.1:{port}", metrics_port, log)

    def both_listening() -> bool:
        return sum(1 for e in served.lines() if e.get("event") == "health"
                   and e.get("status") == "SERVING") >= 2

    try:
        proc.wait_ready(both_listening, 30, "two workers SERVING")
        yield served
    finally:
        proc.stop()


def send(target: str, requests: list[external_auth_pb2.CheckRequest],
         connections: int = 16) -> list[int]:
    """Send the checks over several connections (so the kernel spreads them over workers)."""
    codes = []
    channels = [grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(connections)]
    try:
        stubs = [external_auth_pb2_grpc.AuthorizationStub(c) for c in channels]
        for i, req in enumerate(requests):
            codes.append(stubs[i % connections].Check(req, timeout=10).status.code)
    finally:
        for c in channels:
            c.close()
    return codes


def traffic(dev: DevIssuer, n: int) -> tuple[list[external_auth_pb2.CheckRequest], int, int]:
    """n checks, a third denied; every one carries tokens in authorization and extras."""
    body = frame(rr.StartWorkflowExecutionRequest(namespace="default").SerializeToString())
    writer = dev.mint({"sub": "alice", "permissions": ["default:write"]})
    reader = dev.mint({"sub": "bob", "permissions": ["default:read"]})
    extras = dev.mint({"sub": "alice", "email": "a@example.com"})
    reqs, allowed = [], 0
    for i in range(n):
        token = reader if i % 3 == 0 else writer
        allowed += token is writer
        reqs.append(check_request(WS + "StartWorkflowExecution", body, {
            "authorization": f"Bearer {token}", "authorization-extras": extras,
            "x-request-id": f"req-{i}", "client-name": "temporal-python",
            "client-version": "1.2.3"}))
    return reqs, allowed, n - allowed


def test_decision_count_equals_checks_sent_across_workers(served: Served,
                                                          dev: DevIssuer) -> None:
    """200 checks over 16 connections: both workers decide some, and the supervisor's /metrics
    counts exactly 200 decisions (allow and deny split as sent)."""
    before = scrape(served.metrics_port)
    reqs, allowed, denied = traffic(dev, 200)
    codes = send(served.target, reqs)
    assert codes.count(code_pb2.OK) == allowed
    after = scrape(served.metrics_port)
    name = "extauthz_decisions_total"
    assert total(after, name) - total(before, name) == 200
    assert total(after, name, result="allow") - total(before, name, result="allow") == allowed
    assert total(after, name, result="deny") - total(before, name, result="deny") == denied
    hist = "extauthz_check_duration_seconds_count"
    assert total(after, hist) - total(before, hist) == 200
    assert total(after, "extauthz_checks_in_flight") == 0
    workers = Counter(e.get("worker") for e in served.lines()
                      if e.get("event") == "authz.decision" and
                      str(e.get("request_id", "")).startswith("req-"))
    assert set(workers) == {0, 1}, workers
    assert sum(workers.values()) >= 200


def test_metrics_survive_a_worker_crash(served: Served, dev: DevIssuer) -> None:
    """SIGKILL one worker: the supervisor restarts it, and the decisions the dead worker made
    stay counted beside the new ones."""
    before = total(scrape(served.metrics_port), "extauthz_decisions_total")
    send(served.target, traffic(dev, 60)[0])
    pids = [int(str(e["pid"])) for e in served.lines() if e.get("event") == "worker.started"]
    victim = pids[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: any(e.get("event") == "worker.exited" and e.get("pid") == victim
                           for e in served.lines()), 10, "the supervisor to notice")
    wait_until(lambda: sum(1 for e in served.lines() if e.get("event") == "health" and
                           e.get("status") == "SERVING") >= 3, 30, "the new worker")
    send(served.target, traffic(dev, 60)[0])
    after = scrape(served.metrics_port)
    assert total(after, "extauthz_decisions_total") - before == 120
    assert total(after, "extauthz_checks_in_flight") == 0


def test_the_log_of_a_run_full_of_tokens_has_no_token(served: Served, dev: DevIssuer) -> None:
    """Valid, expired, wrong-audience, tampered and foreign tokens plus ID tokens in
    authorization-extras: the audit events name subjects and reasons, never a token, a
    signature, or an authorization value."""
    body = frame(rr.StartWorkflowExecutionRequest(namespace="default").SerializeToString())
    good = dev.mint({"sub": "alice", "permissions": ["default:write"]})
    tokens = [
        good,
        dev.mint({"sub": "carol", "permissions": ["default:read"]}),
        dev.mint({"sub": "old"}, ttl=-600),
        dev.mint({"sub": "aud", "aud": "someone-else"}),
        good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB"),
        dev.mint({"sub": "kid"}, headers={"kid": "no-such-kid"}),
    ]
    extras = dev.mint({"sub": "alice", "email": "alice@example.com"})
    reqs = []
    for i, token in enumerate(tokens * 5):
        reqs.append(check_request(WS + "StartWorkflowExecution", body, {
            "authorization": f"Bearer {token}", "authorization-extras": extras,
            "x-request-id": f"tok-{i}"}))
    reqs.append(check_request(WS + "StartWorkflowExecution", body, {
        "authorization": f"Bearer {good}, Bearer {good}", "x-request-id": "tok-double"}))
    send(served.target, reqs, connections=4)
    wait_until(lambda: any(e.get("request_id") == "tok-double" for e in served.lines()), 10,
               "the audit events")
    text = served.log.read_text()
    secrets = {extras, *tokens}
    secrets |= {t.rsplit(".", 1)[1] for t in secrets}
    for secret in secrets:
        assert secret not in text
    assert re.search(r"Bearer\s+ey", text) is None  # messages may say `Bearer <token>`
    reasons = {e.get("reason") for e in served.lines() if str(e.get("request_id", "")).startswith(
        "tok-")}
    assert {"allowed", "permission_denied", "token_expired", "audience_mismatch",
            "malformed_authorization"} <= reasons


def test_scrape_passes_promtool_check_metrics(served: Served) -> None:
    """The supervisor's aggregated exposition passes `promtool check metrics`."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install -y prometheus (./dev does it)"
    status, body = http_get(f"http://127.0.0.1:{served.metrics_port}/metrics")
    assert status == 200 and b"extauthz_decisions_total" in body
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sigterm_stops_every_worker_and_removes_the_metrics_dir(
        dev: DevIssuer, tmp_path: Path) -> None:
    """SIGTERM to the supervisor: it forwards it, every worker exits, exit status 0, and the
    temporary multi-process directory is gone."""
    port, metrics_port = free_ports(2)
    env = {**os.environ, "EXTAUTHZ_LISTEN": f"127.0.0.1:{port}",
           "TEMPORAL_AUTH_PROVIDER_URL": dev.url, "TEMPORAL_AUTH_CLIENT_ID": "temporal",
           "EXTAUTHZ_ALLOW_INSECURE_ISSUER": "1", "PYTHONUNBUFFERED": "1",
           "EXTAUTHZ_METRICS_LISTEN": f"127.0.0.1:{metrics_port}", "EXTAUTHZ_LOG_FORMAT": "json",
           "TMPDIR": str(tmp_path)}
    log = tmp_path / "x.log"
    proc = ManagedProcess("extauthz", [sys.executable, "-m", "extauthz", "serve",
                                       "--workers", "2"], log_path=log, env=env).start()
    served = Served(proc, f"127.0.0.1:{port}", 0, log)
    try:
        proc.wait_ready(lambda: sum(1 for e in served.lines() if e.get("event") == "health")
                        >= 2, 30, "two workers")
        pids = [int(str(e["pid"])) for e in served.lines() if e.get("event") == "worker.started"]
        assert len(pids) == 2
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith("extauthz-metrics-")]
        proc.signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("extauthz-metrics-")]
        assert sum(1 for e in served.lines() if e.get("event") == "stopped") == 2
    finally:
        proc.stop()


def _zombie(pid: int) -> bool:
    try:
        return bool(re.search(r"State:\s+Z", Path(f"/proc/{pid}/status").read_text()))
    except OSError:
        return True


def test_worker_readiness_waits_do_not_delay_a_single_process(dev: DevIssuer) -> None:
    """--workers 1 runs in-process (no supervisor) and serves its own /metrics."""
    port, metrics_port = free_ports(2)
    env = {**os.environ, "EXTAUTHZ_LISTEN": f"127.0.0.1:{port}",
           "TEMPORAL_AUTH_PROVIDER_URL": dev.url, "TEMPORAL_AUTH_CLIENT_ID": "temporal",
           "EXTAUTHZ_ALLOW_INSECURE_ISSUER": "1", "PYTHONUNBUFFERED": "1",
           "EXTAUTHZ_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"}
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"extauthz-single-{port}.log"
    proc = ManagedProcess("extauthz", [sys.executable, "-m", "extauthz", "serve",
                                       "--workers", "1"], log_path=log, env=env).start()
    try:
        started = time.monotonic()
        proc.wait_ready(lambda: http_get(f"http://127.0.0.1:{metrics_port}/metrics")[0] == 200,
                        20, "metrics")
        assert time.monotonic() - started < 20
        samples = scrape(metrics_port)
        assert total(samples, "extauthz_build_info") == 1
        assert "worker.started" not in log.read_text()
    finally:
        proc.stop()
        log.unlink(missing_ok=True)
