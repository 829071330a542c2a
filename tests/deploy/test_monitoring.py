"""Monitoring for more than one release: the dashboard has a fixed uid and cluster / namespace /
job variables that every query honours, Envoy's panels count only our ext_authz filter; every
alert is grouped by namespace and job and links to its runbook section in alerts/README.md.
(The queries and alerts run against a real Prometheus in tests/e2e/test_observability.py and
under promtool in tests/unit/obs.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from extauthz.model import Decision, Reason
from extauthz.obs.metrics import UNKNOWN_PATH_CAP, Metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboards" / "extauthz.json"
RULES = REPO / "alerts" / "extauthz-rules.yml"
RUNBOOKS = REPO / "alerts" / "README.md"
RUNBOOK_BASE = ("https://github.com/temporal-extauthz/temporal-extauthz/blob/main/"
                "alerts/README.md#")
METRIC = re.compile(r"\b((?:extauthz|envoy_http_ext_authz)_[a-z_]+)(\{([^}]*)\})?")


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _dashboard()["panels"]
            for t in p.get("targets", [])]


def _alerts() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
            if "alert" in r]


def test_dashboard_has_a_fixed_uid_and_release_variables() -> None:
    """A fixed uid (links survive re-imports) and datasource, cluster, namespace, job (the
    server's), envoy_job and the ext_authz stat prefix as variables; cluster, namespace and the
    jobs allow several values and All (any value, a missing label included)."""
    data = _dashboard()
    assert data["uid"] == "temporal-extauthz"
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert list(variables) == ["datasource", "cluster", "namespace", "job", "envoy_job",
                               "ext_authz_prefix"]
    for name in ("cluster", "namespace", "job", "envoy_job"):
        v = variables[name]
        assert v["includeAll"] and v["multi"] and v["allValue"] == ".*", name
    assert variables["ext_authz_prefix"]["current"]["value"] == "extauthz"
    assert "" in {o["value"] for o in variables["ext_authz_prefix"]["options"]}


def test_every_query_is_scoped_to_the_selected_release() -> None:
    """Every metric in every panel query carries the cluster, namespace and job selectors;
    Envoy's also the ext_authz stat prefix, so other ext_authz filters in the cluster and other
    releases never add up into ours."""
    seen_envoy = 0
    for title, expr in _exprs():
        found = METRIC.findall(expr)
        assert found, (title, expr)
        for name, _, selector in found:
            assert 'cluster=~"$cluster"' in selector, (title, expr)
            assert 'namespace=~"$namespace"' in selector, (title, expr)
            if name.startswith("envoy_"):
                seen_envoy += 1
                assert 'job=~"$envoy_job"' in selector, (title, expr)
                assert 'envoy_ext_authz_prefix=~"$ext_authz_prefix"' in selector, (title, expr)
            else:
                assert 'job=~"$job"' in selector, (title, expr)
    assert seen_envoy >= 10


def test_the_stat_prefix_the_dashboard_filters_on_is_the_one_envoy_is_given() -> None:
    """The chart's and envoy/'s ext_authz filters use stat_prefix `extauthz`, the dashboard's
    default (Envoy exports it as the label envoy_ext_authz_prefix, seen in the e2e test)."""
    for path in (REPO / "envoy" / "envoy.yaml", REPO / "envoy" / "envoy-http.yaml",
                 REPO / "helm" / "temporal-extauthz" / "templates" / "envoy-configmap.yaml"):
        assert "stat_prefix: extauthz\n" in path.read_text(), path


def test_unknown_methods_have_a_panel_by_path() -> None:
    """A panel lists unknown_method denials by path (an upgrade gap shows by RPC name)."""
    [panel] = [p for p in _dashboard()["panels"] if p["title"] == "Unknown methods by path"]
    assert "sum by (path)" in panel["targets"][0]["expr"]
    assert "extauthz_unknown_method_paths_total" in panel["targets"][0]["expr"]


@pytest.mark.parametrize("alert", _alerts(), ids=lambda a: str(a["alert"]))
def test_every_alert_is_per_release_and_has_a_runbook(alert: dict[str, Any]) -> None:
    """Every aggregation groups by namespace and job (ExtauthzAbsent alone is global: there is
    nothing to group), and runbook_url is the alert's section of alerts/README.md."""
    expr = " ".join(alert["expr"].split())
    if alert["alert"] == "ExtauthzAbsent":
        assert expr.startswith("absent(")
    else:
        aggregations = re.findall(r"\b(sum|max|min|count)\b(?: by \(([^)]*)\))?", expr)
        assert aggregations, expr
        for op, labels in aggregations:
            assert {"namespace", "job"} <= {x.strip() for x in labels.split(",")}, (op, expr)
        assert "{{ $labels.namespace }}/{{ $labels.job }}" in alert["annotations"]["summary"]
    url = alert["annotations"]["runbook_url"]
    assert url == RUNBOOK_BASE + alert["alert"].lower()
    headings = {line[4:].strip().lower() for line in RUNBOOKS.read_text().splitlines()
                if line.startswith("### ")}
    assert alert["alert"].lower() in headings


def test_operations_guide_names_what_the_server_emits() -> None:
    """docs/operations.md quotes the start-up log key and the metric that the server really
    emits, and the bench command its sizing figures come from."""
    guide = (REPO / "docs" / "operations.md").read_text()
    app = (REPO / "extauthz" / "server" / "app.py").read_text()
    metrics = (REPO / "extauthz" / "obs" / "metrics.py").read_text()
    assert "temporal_api=" in guide and "temporal_api=_temporal_api()" in app
    assert "extauthz_unknown_method_paths_total" in guide
    assert '"extauthz_unknown_method_paths"' in metrics
    assert "./dev bench" in guide
    measured = (REPO / "docs" / "measurements.md").read_text()
    for figure in ("380", "52.0", "18,982", "2,625"):
        assert figure in measured, figure


def test_unknown_method_paths_are_bounded() -> None:
    """Only unknown_method denials count; Temporal gRPC paths keep their name up to the cap
    (then `other`), HTTP API routes are `http_api` and any other path (attacker-chosen text
    included) is `other_path`, so the label set stays bounded."""
    metrics = Metrics(registry=CollectorRegistry())
    unknown = Decision.deny(Reason.UNKNOWN_METHOD, "not a known method")
    paths = [f"/temporal.api.workflowservice.v1.WorkflowService/NewRpc{i}"
             for i in range(UNKNOWN_PATH_CAP + 10)]
    for path in [*paths, "/api/v1/namespaces/x/new-route", "/<script>/" + "x" * 500,
                 "/temporal.api.x/../etc"]:
        metrics.observe(unknown, None, 0.001, path)
    metrics.observe(Decision.deny(Reason.MISSING_TOKEN, "no token"), None, 0.001, paths[0])
    counts = {s.labels["path"]: s.value for m in metrics.registry.collect()
              if m.name == "extauthz_unknown_method_paths" for s in m.samples
              if s.name.endswith("_total")}
    assert len(counts) == UNKNOWN_PATH_CAP + 3
    assert counts[paths[0]] == 1  # the missing_token denial is not counted
    assert counts["other"] == 10
    assert counts["http_api"] == 1 and counts["other_path"] == 2
