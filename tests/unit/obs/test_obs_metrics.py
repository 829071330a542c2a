"""Metrics: labels of a decision, caps on opt-in labels, authenticator state, policy reloads,
the exposition format (promtool) and the cost of one observation."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import generate_latest

from extauthz import methods
from extauthz.model import (
    STATUS_UNAUTHENTICATED,
    STATUS_UNAVAILABLE,
    CheckInput,
    Decision,
    Principal,
    Reason,
    Target,
)
from extauthz.obs import metrics as m
from extauthz.obs.observer import Telemetry

WS = "/temporal.api.workflowservice.v1.WorkflowService/"
OPS = "/temporal.api.operatorservice.v1.OperatorService/"


def method(path: str) -> Any:
    entry = methods.lookup(path)
    assert entry is not None, path
    return entry.method


START = method(WS + "StartWorkflowExecution")
DESCRIBE = method(WS + "DescribeNamespace")


def value(metrics: m.Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def allow(ns: str = "default", meth: Any = START, sub: str = "alice") -> Decision:
    return Decision.allow(Reason.ALLOWED, "ok", Principal(sub), Target(meth, ns))


def deny(ns: str = "default", meth: Any = START, sub: str = "bob") -> Decision:
    return Decision.deny(Reason.PERMISSION_DENIED, "no", principal=Principal(sub),
                         target=Target(meth, ns))


def test_decision_is_counted_with_result_reason_category_and_method() -> None:
    """An allowed and a denied check land in the decisions counter with their labels."""
    metrics = m.Metrics()
    metrics.observe(allow(), START, 0.0003)
    metrics.observe(deny(meth=DESCRIBE), DESCRIBE, 0.0004)
    metrics.observe(deny(meth=DESCRIBE), DESCRIBE, 0.0004)
    assert value(metrics, "extauthz_decisions_total", result="allow", reason="allowed",
                 category="write", method="WorkflowService/StartWorkflowExecution",
                 dry_run="false") == 1
    assert value(metrics, "extauthz_decisions_total", result="deny",
                 reason="permission_denied", category="read",
                 method="WorkflowService/DescribeNamespace", dry_run="false") == 2


def test_unavailable_is_an_error_and_dry_run_is_marked() -> None:
    """A 503 denial counts as result=error; a dry-run decision carries dry_run=true."""
    metrics = m.Metrics()
    metrics.observe(Decision.deny(Reason.KEYS_UNAVAILABLE, "x", status=STATUS_UNAVAILABLE),
                    START, 0.001)
    dry = Decision(True, Reason.PERMISSION_DENIED, "would deny", target=Target(START, "x"),
                   dry_run=True)
    metrics.observe(dry, START, 0.001)
    assert value(metrics, "extauthz_decisions_total", result="error", reason="keys_unavailable",
                 category="write", method="WorkflowService/StartWorkflowExecution",
                 dry_run="false") == 1
    assert value(metrics, "extauthz_decisions_total", result="allow",
                 reason="permission_denied", category="write",
                 method="WorkflowService/StartWorkflowExecution", dry_run="true") == 1
    assert value(metrics, "extauthz_check_duration_seconds_count", result="error") == 1


def test_observer_names_the_method_of_a_denial_without_target() -> None:
    """A missing-token denial (no target) is labelled with the method of its path; an unknown
    path is method=unknown, category=unknown."""
    metrics = m.Metrics()
    telemetry = Telemetry(metrics)
    no_token = Decision.deny(Reason.MISSING_TOKEN, "no", status=STATUS_UNAUTHENTICATED)
    telemetry.check_started()
    telemetry.checked(CheckInput(WS + "StartWorkflowExecution", {}, b""), no_token, 0.0001)
    telemetry.check_started()
    telemetry.checked(CheckInput("/nope/Nope", {}, b""),
                      Decision.deny(Reason.UNKNOWN_METHOD, "?"), 0.0001)
    telemetry.check_started()
    telemetry.checked(None, Decision.deny(Reason.MALFORMED_BODY, "?"), 0.0001)
    assert value(metrics, "extauthz_decisions_total", result="deny", reason="missing_token",
                 category="write", method="WorkflowService/StartWorkflowExecution",
                 dry_run="false") == 1
    assert value(metrics, "extauthz_decisions_total", result="deny", reason="unknown_method",
                 category="unknown", method="unknown", dry_run="false") == 1
    assert value(metrics, "extauthz_decisions_total", result="deny", reason="malformed_body",
                 category="unknown", method="unknown", dry_run="false") == 1
    assert value(metrics, "extauthz_checks_in_flight") == 0


def test_in_flight_gauge_follows_started_and_checked() -> None:
    """check_started raises the in-flight gauge; checked lowers it."""
    metrics = m.Metrics()
    telemetry = Telemetry(metrics)
    telemetry.check_started()
    telemetry.check_started()
    assert value(metrics, "extauthz_checks_in_flight") == 2
    telemetry.checked(None, allow(), 0.0)
    assert value(metrics, "extauthz_checks_in_flight") == 1


def test_categories_cover_every_method_and_match_the_rules_partition() -> None:
    """Every method has one of the bounded categories; cluster and admin methods are labelled
    so, as the policy engine's categories say."""
    seen = {m.category(e.method) for e in methods.table().values()}
    assert seen <= {"read", "write", "admin", "cluster", "health"}
    assert m.category(method(OPS + "AddSearchAttributes")) in {"cluster", "admin"}
    assert m.category(method("/grpc.health.v1.Health/Check")) == "health"
    assert m.category(None) == "unknown"


def test_latency_buckets_resolve_50us_to_100ms() -> None:
    """A 60 µs check is above the 50 µs bucket and inside 100 µs; 80 ms sits below 100 ms."""
    metrics = m.Metrics()
    metrics.observe(allow(), START, 0.00006)
    metrics.observe(allow(), START, 0.08)

    def bucket(le: str) -> float | None:
        return value(metrics, "extauthz_check_duration_seconds_bucket", result="allow", le=le)

    assert bucket("5e-05") == 0
    assert bucket("0.0001") == 1
    assert bucket("0.05") == 1
    assert bucket("0.1") == 2


def test_namespace_label_is_absent_unless_opted_in() -> None:
    """By default no series has a namespace label."""
    metrics = m.Metrics()
    metrics.observe(allow("payroll"), START, 0.001)
    assert b"namespace=" not in generate_latest(metrics.registry)


def test_namespace_label_is_capped_with_an_other_bucket() -> None:
    """Opted in with cap 2: the first two namespaces keep their names, the rest are `other`."""
    metrics = m.Metrics(m.MetricsOptions(namespace_labels=True, namespace_label_cap=2))
    for ns in ("a", "b", "c", "d", "a"):
        metrics.observe(allow(ns), START, 0.001)
    labels = {"result": "allow", "reason": "allowed", "category": "write",
              "method": "WorkflowService/StartWorkflowExecution", "dry_run": "false"}
    assert value(metrics, "extauthz_decisions_total", **labels, namespace="a") == 2
    assert value(metrics, "extauthz_decisions_total", **labels, namespace="b") == 1
    assert value(metrics, "extauthz_decisions_total", **labels, namespace="other") == 2
    assert value(metrics, "extauthz_decisions_total", **labels, namespace="c") is None


def test_denied_subjects_are_counted_with_a_cap() -> None:
    """Denials count per subject for the first N subjects, then under `other`; allows never."""
    metrics = m.Metrics(m.MetricsOptions(subject_label_cap=1))
    metrics.observe(deny(sub="bob"), START, 0.001)
    metrics.observe(deny(sub="eve"), START, 0.001)
    metrics.observe(allow(sub="alice"), START, 0.001)
    assert value(metrics, "extauthz_denied_subjects_total", subject="bob") == 1
    assert value(metrics, "extauthz_denied_subjects_total", subject="other") == 1
    assert value(metrics, "extauthz_denied_subjects_total", subject="alice") is None


@dataclass
class FakeStats:
    hits: int = 0
    misses: int = 0
    negative_hits: int = 0


@dataclass
class FakeAuth:
    stats: FakeStats = field(default_factory=FakeStats)
    cache_size: int = 0
    states: dict[str, dict[str, Any]] = field(default_factory=dict)

    def issuer_states(self) -> dict[str, dict[str, Any]]:
        return self.states


def test_sync_auth_copies_cache_counters_and_key_state() -> None:
    """Cache hits/misses become counters (by delta); keys, usability and JWKS age per issuer."""
    metrics = m.Metrics()
    auth = FakeAuth(FakeStats(5, 2, 1), 7, {
        "https://idp": {"keys_loaded": 3, "usable": True, "last_good_fetch": 1000.0},
        "https://down": {"keys_loaded": 0, "usable": False, "last_good_fetch": None},
    })
    metrics.sync_auth(auth, now=1030.0)
    auth.stats.hits = 9
    metrics.sync_auth(auth, now=1040.0)
    assert value(metrics, "extauthz_token_cache_hits_total") == 9
    assert value(metrics, "extauthz_token_cache_misses_total") == 2
    assert value(metrics, "extauthz_token_cache_negative_hits_total") == 1
    assert value(metrics, "extauthz_token_cache_entries") == 7
    assert value(metrics, "extauthz_jwks_keys", issuer="https://idp") == 3
    assert value(metrics, "extauthz_jwks_usable", issuer="https://idp") == 1
    assert value(metrics, "extauthz_jwks_usable", issuer="https://down") == 0
    assert value(metrics, "extauthz_jwks_seconds_since_last_success", issuer="https://idp") == 40
    assert value(metrics, "extauthz_jwks_last_success_timestamp_seconds",
                 issuer="https://idp") == 1000
    assert value(metrics, "extauthz_jwks_seconds_since_last_success",
                 issuer="https://down") is None


def test_jwks_fetches_are_counted_by_issuer_and_result() -> None:
    """The key stores' on_fetch callback counts fetches."""
    metrics = m.Metrics()
    metrics.jwks_fetched("https://idp", "ok")
    metrics.jwks_fetched("https://idp", "timeout")
    metrics.jwks_fetched("https://idp", "ok")
    assert value(metrics, "extauthz_jwks_fetches_total", issuer="https://idp", result="ok") == 2
    assert value(metrics, "extauthz_jwks_fetches_total", issuer="https://idp",
                 result="timeout") == 1


def test_policy_reloaded_is_a_no_op_until_installed_then_counts_and_tracks_the_hash() -> None:
    """The module-level hook: nothing before install; then reload counter, last-reload status
    and exactly one policy hash at 1."""
    m.install(None)
    m.policy_reloaded("ok", "abc")  # no server: nothing happens, nothing raises
    metrics = m.Metrics()
    m.install(metrics)
    try:
        m.policy_reloaded("ok", "abc")
        m.policy_reloaded("ok", "def")
        assert value(metrics, "extauthz_policy_info", hash="def") == 1
        assert value(metrics, "extauthz_policy_info", hash="abc") is None
        m.policy_reloaded("error")
        m.policy_reloaded("weird-result")
        assert value(metrics, "extauthz_policy_reloads_total", result="ok") == 2
        assert value(metrics, "extauthz_policy_reloads_total", result="error") == 2
        assert value(metrics, "extauthz_policy_last_reload_success", policy="default") == 0
        assert value(metrics, "extauthz_policy_info", hash="def") == 1
    finally:
        m.install(None)


def test_build_info_is_one() -> None:
    """build_info carries the version."""
    metrics = m.Metrics()
    text = generate_latest(metrics.registry).decode()
    assert 'extauthz_build_info{python_version="' in text
    assert "version=" in text


def test_exposition_passes_promtool_check_metrics() -> None:
    """`promtool check metrics` finds no naming or format problem in a populated exposition."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install -y prometheus (./dev does it)"
    metrics = m.Metrics(m.MetricsOptions(namespace_labels=True))
    metrics.observe(allow(), START, 0.001)
    metrics.observe(deny(), START, 0.001)
    metrics.jwks_fetched("https://idp", "ok")
    metrics.policy_reloaded("ok", "abc")
    metrics.sync_auth(FakeAuth(FakeStats(1, 1, 0), 1, {
        "https://idp": {"keys_loaded": 1, "usable": True, "last_good_fetch": time.time()}}))
    result = subprocess.run([promtool, "check", "metrics"], input=generate_latest(
        metrics.registry), capture_output=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == b"" and result.stderr.strip() == b"", result


@pytest.mark.parametrize("namespace_labels", [False, True])
def test_one_observation_costs_a_few_microseconds(namespace_labels: bool) -> None:
    """check_started + checked on an allowed call stays within a few µs (measured, printed)."""
    metrics = m.Metrics(m.MetricsOptions(namespace_labels=namespace_labels))
    telemetry = Telemetry(metrics)
    req = CheckInput(START.path, {"x-request-id": "r"}, b"")
    decision = allow()
    for _ in range(2000):
        telemetry.check_started()
        telemetry.checked(req, decision, 0.0003)
    best = float("inf")
    n = 20_000
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(n):
            telemetry.check_started()
            telemetry.checked(req, decision, 0.0003)
        best = min(best, (time.perf_counter() - began) / n * 1e6)
    print(f"observer: {best:.2f} µs per check (namespace_labels={namespace_labels})")
    assert best < 15.0
