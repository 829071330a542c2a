"""The Grafana dashboard's structure and the alert rules under promtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "dashboards" / "extauthz.json"
RULES = REPO / "alerts" / "extauthz-rules.yml"
RULE_TESTS = REPO / "alerts" / "tests" / "extauthz-rules.test.yml"
DS = {"type": "prometheus", "uid": "${datasource}"}
REQUIRED_PANELS = {
    "Checks/s by result", "Deny reasons", "Top denied methods", "Top denied subjects",
    "Check latency p50 / p90 / p99", "Token cache hit ratio", "JWKS freshness",
    "JWKS fetches by issuer and result", "Policy reloads by result",
    "Envoy ext_authz decisions/s", "Envoy minus extauthz (checks/s)",
}
REQUIRED_ALERTS = {
    "ExtauthzEnvoyAuthzErrors", "ExtauthzDenyRateSpike", "ExtauthzJWKSStale",
    "ExtauthzCheckLatencyHigh", "ExtauthzPolicyReloadFailing",
}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool missing: apt-get install -y prometheus (./dev does it)"
    return path


def test_every_panel_has_a_title_and_a_unique_id() -> None:
    """Panels (rows included) have titles and distinct ids; data panels describe themselves."""
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert p.get("title"), p
        if p["type"] != "row":
            assert p.get("description"), p["title"]
            assert p["targets"], p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), p["title"]


def test_datasource_is_a_template_variable_and_no_uid_is_hard_coded() -> None:
    """A `datasource` variable of type datasource; every panel and query uses it; the
    dashboard's own uid is fixed (stable links) and no other datasource uid appears anywhere."""
    data = dashboard()
    [var] = [v for v in data["templating"]["list"] if v["name"] == "datasource"]
    assert var["type"] == "datasource" and var["query"] == "prometheus"
    assert data["uid"] == "temporal-extauthz"
    for p in data["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"] == DS, p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS, p["title"]
    uids = re.findall(r'"uid":\s*"([^"]*)"', DASHBOARD.read_text())
    assert set(uids) == {"${datasource}", "temporal-extauthz"}
    assert uids.count("temporal-extauthz") == 1


def test_the_panels_the_issue_lists_are_there() -> None:
    """Checks by result, deny reasons, top denied, latency quantiles, cache, JWKS, policy and
    Envoy's ext_authz counters side by side with ours."""
    titles = {p["title"] for p in dashboard()["panels"]}
    assert titles >= REQUIRED_PANELS
    exprs = " ".join(t["expr"] for p in dashboard()["panels"] for t in p.get("targets", []))
    for counter in ("ok", "denied", "error", "failure_mode_allowed"):
        assert f"envoy_http_ext_authz_{counter}" in exprs
    for q in ("0.5", "0.9", "0.99"):
        assert f"histogram_quantile({q}," in exprs


def test_panels_do_not_overlap() -> None:
    """Grid positions stay within 24 columns and no two panels share a cell."""
    cells: set[tuple[int, int]] = set()
    for p in dashboard()["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))


def test_rules_file_passes_promtool_check_rules() -> None:
    """`promtool check rules` accepts the alert file."""
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_promtool_unit_test_and_they_pass() -> None:
    """Each alert is exercised by `promtool test rules`, which passes."""
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    assert alerts >= REQUIRED_ALERTS
    tested = {c["alertname"] for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for c in t.get("alert_rule_test", [])}
    assert alerts == tested
    result = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("path", [RULES])
def test_alerts_have_severity_summary_and_description(path: Path) -> None:
    """On-call needs a severity, a one-line summary and what to do."""
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
