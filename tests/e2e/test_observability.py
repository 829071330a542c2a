"""Observability against the real stack: Temporal dev server, Envoy, the dev issuer, extauthz
with two workers, and a real Prometheus scraping extauthz's /metrics and Envoy's
/stats/prometheus every second. Every dashboard query and every alert expression is evaluated
through Prometheus' HTTP API with the dashboard's release variables set as Grafana would (this
Prometheus' job names, All for cluster and namespace, stat prefix `extauthz`, which the real
Envoy exports as the label envoy_ext_authz_prefix); the panels marked "must show data" must
agree with the traffic that was sent, calls to an RPC this build does not know included."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from devkit.components import (
    EnvoyInstance,
    ExtauthzInstance,
    IssuerInstance,
    TemporalInstance,
    start_envoy,
    start_extauthz,
)
from devkit.ports import LOOPBACK, free_port
from devkit.procs import ManagedProcess, http_get, wait_until

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboards" / "extauthz.json"
RULES = REPO / "alerts" / "extauthz-rules.yml"
WS = "/temporal.api.workflowservice.v1.WorkflowService/"
# Grafana's variables, as Grafana would expand them for a 5-minute dashboard
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s",
                "$cluster": ".*", "$namespace": ".*", "$envoy_job": "envoy", "$job": "extauthz",
                "$ext_authz_prefix": "extauthz"}

ALLOWED = 24  # DescribeNamespace by a reader: allowed, answered by Temporal
DENIED_POLICY = 9  # StartWorkflowExecution by the same reader: permission_denied
DENIED_NO_TOKEN = 5  # DescribeNamespace without a token: missing_token
DENIED_UNKNOWN = 2  # an RPC newer than this build (by the same reader): unknown_method
UNKNOWN_RPC = WS + "StartWorkflowFromTheFuture"


@dataclass
class Prometheus:
    proc: ManagedProcess
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; fails the test when Prometheus cannot parse or run it."""
        q = urllib.parse.urlencode({"query": expr})
        status, body = http_get(f"{self.url}/api/v1/query?{q}", timeout=5)
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])


@dataclass
class Stack:
    envoy: EnvoyInstance
    extauthz: ExtauthzInstance
    metrics_port: int
    prometheus: Prometheus
    issuer: IssuerInstance


def start_prometheus(workdir: Path, targets: dict[str, tuple[str, int, str]]) -> Prometheus:
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: apt-get install -y prometheus (./dev installs it)"
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": job, "metrics_path": path,
             "static_configs": [{"targets": [f"{host}:{p}"]}]}
            for job, (host, p, path) in targets.items()
        ],
    }
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    argv = [binary, f"--config.file={path}", f"--storage.tsdb.path={workdir / 'prom-data'}",
            f"--web.listen-address={LOOPBACK}:{port}", "--log.level=warn"]
    proc = ManagedProcess("prometheus", argv, log_path=workdir / "prometheus.log").start()
    url = f"http://{LOOPBACK}:{port}"
    proc.wait_ready(lambda: http_get(f"{url}/-/ready")[0] == 200, 30, "Prometheus ready")
    return Prometheus(proc, url)


def call(target: str, method: str, request: Any, response: Any, token: str | None) -> str:
    metadata: tuple[tuple[str, str], ...] = (
        (("authorization", f"Bearer {token}"),) if token else ())
    metadata += (("client-name", "e2e-observability"), ("client-version", "0.0.1"))
    with grpc.insecure_channel(target) as channel:
        stub = channel.unary_unary(WS + method, request_serializer=type(request).SerializeToString,
                                   response_deserializer=response.FromString)
        try:
            stub(request, timeout=10, metadata=metadata)
        except grpc.RpcError as err:
            return str(err.code().name)
    return "OK"


@pytest.fixture(scope="module")
def stack(e2e_dir: Path, temporal: TemporalInstance,
          issuer: IssuerInstance) -> Iterator[Stack]:
    """A private extauthz (2 workers, metrics on) behind a private Envoy, the session's
    Temporal and issuer, and Prometheus scraping both; the traffic has been sent and scraped."""
    workdir = e2e_dir / "observability"
    workdir.mkdir(exist_ok=True)
    metrics_port = free_port()
    extauthz = start_extauthz(workdir, issuer.url, name="extauthz-obs", extra_env={
        "EXTAUTHZ_METRICS_LISTEN": f"{LOOPBACK}:{metrics_port}", "EXTAUTHZ_WORKERS": "2",
        "EXTAUTHZ_LOG_FORMAT": "json", "EXTAUTHZ_AUDIT_ALLOW_SAMPLE_RATE": "1"})
    envoy = None
    prometheus = None
    try:
        envoy = start_envoy(workdir, authz=extauthz.address, upstream=temporal.address)
        prometheus = start_prometheus(workdir, {
            "extauthz": (LOOPBACK, metrics_port, "/metrics"),
            "envoy": (envoy.admin[0], envoy.admin[1], "/stats/prometheus"),
        })
        reader = issuer.mint(sub="bob", permissions=["default:read"])
        prom = prometheus

        def send(allowed: int, denied_policy: int, denied_no_token: int,
                 unknown: int) -> None:
            codes = [call(envoy.target, "DescribeNamespace", rr.DescribeNamespaceRequest(
                namespace="default"), rr.DescribeNamespaceResponse, reader)
                for _ in range(allowed)]
            codes += [call(envoy.target, "StartWorkflowExecution",
                           rr.StartWorkflowExecutionRequest(namespace="default", workflow_id="w"),
                           rr.StartWorkflowExecutionResponse, reader)
                      for _ in range(denied_policy)]
            codes += [call(envoy.target, "DescribeNamespace", rr.DescribeNamespaceRequest(
                namespace="default"), rr.DescribeNamespaceResponse, None)
                for _ in range(denied_no_token)]
            codes += [call(envoy.target, UNKNOWN_RPC.removeprefix(WS),
                           rr.DescribeNamespaceRequest(namespace="default"),
                           rr.DescribeNamespaceResponse, reader)
                      for _ in range(unknown)]
            assert codes.count("OK") == allowed, codes
            assert codes.count("PERMISSION_DENIED") == denied_policy + unknown, codes
            assert codes.count("UNAUTHENTICATED") == denied_no_token, codes

        # phase 1 creates every series; Prometheus scrapes them; phase 2 then shows up in rates
        send(4, 3, 2, 1)
        wait_until(lambda: _safe(lambda: prom.value("sum(extauthz_decisions_total)") == 10
                                 and prom.value("sum(envoy_http_ext_authz_ok)") == 4
                                 and len(prom.query("extauthz_denied_subjects_total")) == 1),
                   30, "Prometheus to see phase 1", interval=0.3)
        send(ALLOWED - 4, DENIED_POLICY - 3, DENIED_NO_TOKEN - 2, DENIED_UNKNOWN - 1)

        def scraped() -> bool:
            # the last scrape saw all the traffic, the token counters were synced, and there are
            # enough samples since for 1m rates
            try:
                return (prom.value("sum(extauthz_decisions_total)") == ALLOWED + DENIED_POLICY
                        + DENIED_NO_TOKEN + DENIED_UNKNOWN
                        and prom.value("sum(extauthz_unknown_method_paths_total)")
                        == DENIED_UNKNOWN
                        and prom.value("sum(envoy_http_ext_authz_ok)") == ALLOWED
                        and prom.value("sum(extauthz_token_cache_hits_total) + "
                                       "sum(extauthz_token_cache_misses_total)")
                        == ALLOWED + DENIED_POLICY
                        and prom.value("min(count_over_time(extauthz_decisions_total[1m]))") >= 3
                        and prom.value("min(count_over_time(extauthz_denied_subjects_total[1m]))")
                        >= 3)
            except AssertionError:
                return False

        wait_until(scraped, 30, "Prometheus to scrape the traffic", interval=0.5)
        yield Stack(envoy, extauthz, metrics_port, prometheus, issuer)
    finally:
        if prometheus is not None:
            prometheus.proc.stop()
        if envoy is not None:
            envoy.stop()
        extauthz.proc.stop()


def _safe(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except AssertionError:
        return False


def panels() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return [p for p in data if p["type"] != "row"]


def expand(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def by(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}


def only(result: list[dict[str, Any]]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


DENIED = DENIED_POLICY + DENIED_NO_TOKEN + DENIED_UNKNOWN
Check = Callable[[list[list[dict[str, Any]]], "Stack"], object]

# panel title -> check of its targets' results (in target order); every listed panel must show
# data, and what it shows must agree with the traffic sent
MUST_SHOW_DATA: dict[str, Check] = {
    "Checks/s by result": lambda r, s: (
        set(by(r[0], "result")) == {"allow", "deny"} or pytest.fail(str(r))),
    "Deny reasons": lambda r, s: (
        set(by(r[0], "reason")) == {"permission_denied", "missing_token", "unknown_method"}
        or pytest.fail(str(r))),
    "Decisions by result (counter totals)": lambda r, s: (
        by(r[0], "result") == {"allow": ALLOWED, "deny": DENIED} or pytest.fail(str(r))),
    "Top denied methods": lambda r, s: (
        set(by(r[0], "method")) == {"WorkflowService/StartWorkflowExecution",
                                    "WorkflowService/DescribeNamespace", "unknown"}
        or pytest.fail(str(r))),
    "Unknown methods by path": lambda r, s: (
        set(by(r[0], "path")) == {UNKNOWN_RPC} or pytest.fail(str(r))),
    "Top denied subjects": lambda r, s: (
        set(by(r[0], "subject")) == {"bob"} or pytest.fail(str(r))),
    "Checks/s by API category": lambda r, s: (
        {"read", "write"} <= set(by(r[0], "category")) or pytest.fail(str(r))),
    "Check latency p50 / p90 / p99": lambda r, s: [
        (0 < only(q) < 1) or pytest.fail(str(q)) for q in r],
    "Checks in flight": lambda r, s: (only(r[0]) == 0 or pytest.fail(str(r))),
    "Token cache hit ratio": lambda r, s: (
        len(r[0]) == 1 or pytest.fail(str(r))),
    "Token cache (counter totals)": lambda r, s: (
        (only(r[0]) + only(r[1]) == ALLOWED + DENIED_POLICY and 1 <= only(r[1]) <= 2)
        or pytest.fail(str(r))),
    "Keys loaded per issuer": lambda r, s: (
        by(r[0], "issuer").get(s.issuer.url, 0) >= 1 or pytest.fail(str(r))),
    "JWKS freshness": lambda r, s: (
        0 <= by(r[0], "issuer")[s.issuer.url] < 120 or pytest.fail(str(r))),
    "JWKS fetches by issuer and result": lambda r, s: (
        any(x["metric"] == {"issuer": s.issuer.url, "result": "ok"} for x in r[0])
        or pytest.fail(str(r))),
    "Envoy ext_authz decisions/s": lambda r, s: [
        (len(q) == 1 or pytest.fail(str(q))) for q in r],
    "Envoy minus extauthz (checks/s)": lambda r, s: [
        (len(q) == 1 or pytest.fail(str(q))) for q in r],
    "Envoy ext_authz (counter totals)": lambda r, s: (
        [only(q) for q in r] == [ALLOWED, DENIED, 0, 0] or pytest.fail(str(r))),
    "Build info": lambda r, s: (only(r[0]) == 1 or pytest.fail(str(r))),
}
# no policy engine reports reloads in this stack and no call is dry-run: these must parse only
PARSE_ONLY = {"Policy reloads by result", "Last policy reload", "Policy in force",
              "Dry-run decisions/s"}


def test_every_panel_is_accounted_for() -> None:
    """Each panel is either checked for data or explicitly parse-only."""
    titles = {p["title"] for p in panels()}
    assert titles == set(MUST_SHOW_DATA) | PARSE_ONLY


def test_every_dashboard_query_parses_and_must_show_panels_agree_with_traffic(
        stack: Stack) -> None:
    """Every panel query runs in Prometheus; the must-show panels return data matching the
    allowed and denied calls sent through Envoy."""
    for panel in panels():
        results = [stack.prometheus.query(expand(t["expr"])) for t in panel["targets"]]
        check = MUST_SHOW_DATA.get(panel["title"])
        if check is not None:
            assert all(results), (panel["title"], results)
            check(results, stack)


def test_every_alert_expression_runs_and_rules_load(stack: Stack) -> None:
    """Prometheus loaded the rules file with every rule healthy, each alert expression runs,
    and on this healthy traffic only ExtauthzUnknownMethods fires, for this Prometheus' job and
    the unknown RPC's path (the up/absent alerts see both targets up)."""
    rules = yaml.safe_load(RULES.read_text())
    exprs = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    for name, expr in exprs.items():
        result = stack.prometheus.query(expr)
        if name == "ExtauthzUnknownMethods":
            assert [r["metric"] for r in result] == [{"job": "extauthz", "path": UNKNOWN_RPC}]
        else:
            assert result == [], name
    assert stack.prometheus.value('count by (job) (up{job="extauthz"} == 1)') == 1
    _, body = http_get(f"{stack.prometheus.url}/api/v1/rules", timeout=5)
    loaded = {r["name"]: r for g in json.loads(body)["data"]["groups"] for r in g["rules"]}
    assert set(loaded) == set(exprs)

    def evaluated() -> bool:
        _, text = http_get(f"{stack.prometheus.url}/api/v1/rules", timeout=5)
        groups = json.loads(text)["data"]["groups"]
        return all(r["health"] == "ok" for g in groups for r in g["rules"])

    wait_until(evaluated, 10, "every rule evaluated ok")


def test_latency_quantiles_are_plausible(stack: Stack) -> None:
    """p99 ≥ p50, both below Envoy's ext_authz timeout."""
    q = {p: stack.prometheus.value(
        f"histogram_quantile({p}, sum by (le) (rate(extauthz_check_duration_seconds_bucket[1m])))")
        for p in (0.5, 0.99)}
    assert not math.isnan(q[0.5]) and q[0.5] <= q[0.99] < 1.0


def test_scrape_passes_promtool_check_metrics(stack: Stack) -> None:
    """`promtool check metrics` on the live /metrics of the stack."""
    promtool = shutil.which("promtool")
    assert promtool
    status, body = http_get(f"http://{LOOPBACK}:{stack.metrics_port}/metrics")
    assert status == 200
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_audit_log_names_denials_and_holds_no_token(stack: Stack) -> None:
    """The run's log has an audit event per denied call with the subject and reason, and no
    token or signature anywhere."""
    token = stack.issuer.mint(sub="bob", permissions=["default:read"])
    log = stack.extauthz.proc.log_path.read_text()
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    audit = [e for e in events if e.get("event") == "authz.decision"]
    denied = [e for e in audit if e["decision"] == "deny"]
    assert len(denied) == DENIED
    assert {e["reason"] for e in denied} == {"permission_denied", "missing_token",
                                             "unknown_method"}
    assert all(e["client_name"] == "e2e-observability" for e in denied)
    assert all(e["request_id"] for e in denied)  # Envoy's x-request-id
    assert {e["subject"] for e in denied if e["reason"] == "permission_denied"} == {"bob"}
    signature = token.rpartition(".")[2]
    assert signature not in log and token not in log
