"""The Helm chart and Temporal's HTTP API: Envoy serves it beside gRPC (``httpApi.enabled``,
the default) with the canonical routes and cluster, or not at all; the frontend NetworkPolicy
opens its gRPC and HTTP ports to Envoy (and ``serverPodsFrom``) only. One end-to-end test runs
the chart's rendered Envoy against a real Temporal dev server's HTTP port."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helmchart import RELEASE, REPO, VALUE_SETS, envoy_config, envoy_files, find, manifests, one
from test_chart_e2e import Stack, start_stack

from devkit import envoyconfig
from devkit.components import IssuerInstance, TemporalInstance
from extauthz import httpapi

OIDC = {"issuerUrl": "https://login.example.com/realms/temporal", "clientId": "temporal"}
ENVOY = f"{RELEASE}-envoy"
HTTP_ROUTES = ["temporal-http-api", "temporal-http-api-namespaces", "temporal-http-api-cluster",
               "temporal-http-api-system-info"]


def _routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    hcm = envoyconfig.http_connection_manager(envoyconfig.listener(config, "external"))
    routes: list[dict[str, Any]] = hcm["route_config"]["virtual_hosts"][0]["routes"]
    return routes


def _frontend_policy(values: dict[str, Any]) -> dict[str, Any]:
    docs = manifests(values)
    policies = {p["metadata"]["name"]: p for p in find(docs, "NetworkPolicy")}
    policy: dict[str, Any] = policies[f"{RELEASE}-temporal-frontend"]
    return policy


def _np_values(**frontend_np: Any) -> dict[str, Any]:
    values = copy.deepcopy(VALUE_SETS["networkpolicy"])
    assert values is not None
    values["temporal"]["frontend"]["networkPolicy"].update(frontend_np)
    return values


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_http_api_routes_and_cluster_are_the_canonical_ones(transport: str) -> None:
    """By default the chart's Envoy routes the HTTP API prefixes (the router's first segments)
    to temporal_http through ext_authz, and that cluster equals the canonical file's but for
    discovery (DNS of the frontend Service, its httpPort)."""
    config = envoy_config(None if transport == "grpc" else {"transport": transport})
    routes = _routes(config)
    to_http = [r for r in routes if r["route"].get("cluster") == "temporal_http"]
    assert [r["name"] for r in to_http] == HTTP_ROUTES
    assert {r["match"]["path_separated_prefix"][1:] for r in to_http} == (
        httpapi.router().first_segments)
    assert all("typed_per_filter_config" not in r for r in to_http)
    chart = envoyconfig.cluster(config, "temporal_http")
    canonical_file = REPO / "envoy" / ("envoy.yaml" if transport == "grpc" else "envoy-http.yaml")
    canonical = envoyconfig.cluster(envoyconfig.load(canonical_file), "temporal_http")
    skip = ("type", "cluster_type", "load_assignment")
    assert {k: v for k, v in chart.items() if k not in skip} == {
        k: v for k, v in canonical.items() if k not in skip}
    address = chart["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {
        "address": "temporal-frontend.temporal.svc.cluster.local", "port_value": 7243}


def test_http_port_value_moves_the_cluster() -> None:
    """temporal.frontend.httpPort is the temporal_http cluster's port."""
    config = envoy_config({"temporal": {"frontend": {"httpPort": 8243}}})
    endpoint = envoyconfig.cluster(config, "temporal_http")["load_assignment"]["endpoints"][0]
    assert endpoint["lb_endpoints"][0]["endpoint"]["address"]["socket_address"][
        "port_value"] == 8243


def test_http_api_disabled_renders_no_route_and_no_cluster() -> None:
    """httpApi.enabled: false: no HTTP API route, no temporal_http cluster (such paths then go
    to the gRPC frontend route, where the authz server refuses them)."""
    config = envoy_config({"httpApi": {"enabled": False}})
    assert not [r for r in _routes(config) if r["route"].get("cluster") == "temporal_http"]
    assert "temporal_http" not in [c["name"] for c in config["static_resources"]["clusters"]]


def test_frontend_tls_applies_to_the_http_api_cluster() -> None:
    """When the frontend serves TLS, Envoy speaks TLS (HTTP/1.1 ALPN) to its HTTP port too,
    with the same CA and SNI as for gRPC."""
    config = envoy_config({"temporal": {"frontend": {"tls": {"enabled": True,
                                                             "secretName": "frontend-ca"}}}})
    grpc_tls = envoyconfig.cluster(config, "temporal_frontend")["transport_socket"]
    http_tls = envoyconfig.cluster(config, "temporal_http")["transport_socket"]
    assert http_tls["typed_config"]["common_tls_context"]["alpn_protocols"] == ["http/1.1"]
    assert http_tls["typed_config"]["sni"] == grpc_tls["typed_config"]["sni"]
    assert http_tls["typed_config"]["common_tls_context"]["validation_context_sds_secret_config"] \
        == grpc_tls["typed_config"]["common_tls_context"]["validation_context_sds_secret_config"]


def test_frontend_network_policy_opens_grpc_and_http_to_envoy_only() -> None:
    """The frontend's gRPC and HTTP API ports are in one rule whose only peer is Envoy; no
    other rule names either port."""
    policy = _frontend_policy(_np_values())
    envoy_selector = one(manifests(_np_values()), "Deployment", ENVOY)["spec"]["selector"][
        "matchLabels"]
    rules = policy["spec"]["ingress"]
    main = [r for r in rules if {p["port"] for p in r["ports"]} & {7233, 7243}]
    assert len(main) == 1
    assert [p["port"] for p in main[0]["ports"]] == [7233, 7243]
    assert main[0]["from"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "temporal"}},
        "podSelector": {"matchLabels": envoy_selector}}]


def test_frontend_network_policy_without_the_http_api_closes_its_port() -> None:
    """httpApi.enabled: false: the HTTP API port is opened to no one."""
    values = _np_values()
    values["httpApi"] = {"enabled": False}
    rules = _frontend_policy(values)["spec"]["ingress"]
    assert not [r for r in rules if 7243 in {p["port"] for p in r["ports"]}]


def test_server_pods_may_reach_both_frontend_ports() -> None:
    """serverPodsFrom (Temporal's own pods) gets a rule for the gRPC and HTTP ports, and only
    those peers."""
    peers = [{"podSelector": {"matchExpressions": [
        {"key": "app.kubernetes.io/component", "operator": "In", "values": ["worker"]}]}}]
    rules = _frontend_policy(_np_values(serverPodsFrom=peers))["spec"]["ingress"]
    server = [r for r in rules if r.get("from") == peers]
    assert len(server) == 1
    assert [p["port"] for p in server[0]["ports"]] == [7233, 7243]


def test_schema_rejects_a_misspelled_http_api_key() -> None:
    """httpApi accepts only `enabled` (a boolean)."""
    from helmchart import render_files

    with pytest.raises(Exception, match=r"/httpApi': additional properties 'enable'"):
        render_files({"httpApi": {"enable": True}})
    with pytest.raises(Exception, match=r"/httpApi/enabled': got string, want boolean"):
        render_files({"httpApi": {"enabled": "yes"}})


# ---- the chart's Envoy, for real --------------------------------------------------------------


@pytest.fixture(scope="module")
def chart_stack(deploy_dir: Path, deploy_temporal: TemporalInstance,
                deploy_issuer: IssuerInstance) -> Iterator[Stack]:
    """Envoy from the chart (default values) → extauthz → Temporal's gRPC and HTTP ports."""
    files = envoy_files({"extauthz": {"oidc": OIDC}})
    stack = start_stack(deploy_dir / "http-api", files, deploy_temporal, deploy_issuer)
    try:
        yield stack
    finally:
        stack.envoy.stop()
        stack.extauthz.stop()


def test_chart_envoy_serves_the_http_api_with_the_same_policy(
        chart_stack: Stack, deploy_issuer: IssuerInstance) -> None:
    """Through the chart's Envoy, a `default:read` token describes default over HTTP (200)
    and is denied payroll (403 permission_denied); no token is 401."""
    token = deploy_issuer.mint(sub="alice", permissions=["default:read"])
    base = f"http://{chart_stack.target}"
    with httpx.Client(base_url=base, timeout=15,
                      headers={"authorization": f"Bearer {token}"}) as client:
        ok = client.get("/api/v1/namespaces/default")
        assert ok.status_code == 200, ok.text
        assert ok.json()["namespaceInfo"]["name"] == "default"
        denied = client.get("/api/v1/namespaces/payroll")
        assert denied.status_code == 403
        assert denied.text.startswith("permission_denied: ")
    assert httpx.get(f"{base}/api/v1/namespaces/default", timeout=15).status_code == 401
