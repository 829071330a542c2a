"""Istio ambient mode (istio.ambient.enabled): a waypoint Gateway and an AuthorizationPolicy with
`targetRefs` on the frontend Service, rendered by the chart and validated against the vendored
schemas (tests/data/schemas) and the rules those schemas carry only as CEL; off by default."""

from __future__ import annotations

import json
from typing import Any

import helm_python as helm
import jsonschema
import pytest
from helmchart import CHART, NAMESPACE, REPO, Manifest, find, manifests, merged, one

SCHEMAS = REPO / "tests" / "data" / "schemas"
OIDC = {"issuerUrl": "https://login.example.com/realms/temporal", "clientId": "temporal"}
AMBIENT: dict[str, Any] = {"mode": "istio", "extauthz": {"oidc": OIDC},
                           "istio": {"ambient": {"enabled": True}}}


def schema(name: str) -> Any:
    return json.loads((SCHEMAS / name).read_text())


def strict(node: Any) -> Any:
    """Unknown keys rejected wherever the schema lists properties (the CRDs allow them)."""
    if isinstance(node, dict):
        out = {k: strict(v) for k, v in node.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


def validate(doc: Manifest, name: str) -> None:
    full = schema(name)
    jsonschema.Draft7Validator(full).validate(doc)
    jsonschema.Draft7Validator(strict(full["properties"]["spec"])).validate(doc["spec"])


def ambient_docs(values: dict[str, Any] | None = None) -> tuple[Manifest, Manifest]:
    docs = manifests(merged(AMBIENT, values))
    policy = one(docs, "AuthorizationPolicy", "temporal-extauthz-ambient")
    gateways = find(docs, "Gateway")
    assert len(gateways) == 1
    return gateways[0], policy


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_ambient_renders_a_waypoint_and_a_targetrefs_policy(transport: str) -> None:
    """The waypoint (class istio-waypoint, HBONE 15008, for services) and a CUSTOM policy on the
    frontend Service through the transport's provider validate against the vendored schemas."""
    gateway, policy = ambient_docs({"transport": transport})
    validate(gateway, "gateway-gateway.networking.k8s.io-v1.json")
    validate(policy, "authorizationpolicy-security.istio.io-v1.json")
    assert gateway["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert gateway["spec"] == {"gatewayClassName": "istio-waypoint", "listeners": [
        {"name": "mesh", "port": 15008, "protocol": "HBONE"}]}
    assert gateway["metadata"]["labels"]["istio.io/waypoint-for"] == "service"
    assert gateway["metadata"]["name"] == "temporal-extauthz-waypoint"
    spec = policy["spec"]
    assert spec["targetRefs"] == [{"kind": "Service", "group": "", "name": "temporal-frontend"}]
    # the CRD's CEL rules, which jsonschema does not run: targetRefs excludes a selector, and
    # CUSTOM needs a provider
    assert "selector" not in spec and "targetRef" not in spec
    assert spec["action"] == "CUSTOM"
    provider = "temporal-extauthz-http" if transport == "http" else "temporal-extauthz"
    assert spec["provider"] == {"name": provider}
    assert spec["rules"] == [{"to": [{"operation": {"ports": ["7233", "7243"]}}]}]
    assert policy["metadata"]["namespace"] == gateway["metadata"]["namespace"] == NAMESPACE


def test_ambient_follows_temporal_namespace_frontend_name_and_existing_waypoint() -> None:
    """Temporal in another namespace, a full DNS frontend host and an existing waypoint: the
    policy goes to Temporal's namespace, targets the Service by name, no Gateway is made."""
    docs = manifests(merged(AMBIENT, {
        "temporal": {"namespace": "temporal-prod",
                     "frontend": {"host": "prod-temporal-frontend.temporal-prod.svc"}},
        "istio": {"ambient": {"waypoint": "shared-waypoint", "createWaypoint": False},
                  "ports": ["7233"]}}))
    assert find(docs, "Gateway") == []
    policy = one(docs, "AuthorizationPolicy", "temporal-extauthz-ambient")
    validate(policy, "authorizationpolicy-security.istio.io-v1.json")
    assert policy["metadata"]["namespace"] == "temporal-prod"
    assert policy["spec"]["targetRefs"][0]["name"] == "prod-temporal-frontend"
    assert policy["spec"]["rules"][0]["to"][0]["operation"]["ports"] == ["7233"]


@pytest.mark.parametrize("values", [
    {"mode": "istio", "extauthz": {"oidc": OIDC}},
    {"mode": "standalone", "extauthz": {"oidc": OIDC}, "istio": {"ambient": {"enabled": True}}},
])
def test_nothing_ambient_unless_istio_mode_and_enabled(values: dict[str, Any]) -> None:
    """Off by default, and never in standalone mode."""
    docs = manifests(values)
    assert find(docs, "Gateway") == []
    assert find(docs, "AuthorizationPolicy", "temporal-extauthz-ambient") == []


@pytest.mark.parametrize("bad", [{"enable": True}, {"enabled": "yes"},
                                 {"waypoint": "Bad_Name"}, {"createWaypoint": 1}])
def test_ambient_values_are_schema_checked(bad: dict[str, Any]) -> None:
    """A misspelled key or a wrong type under istio.ambient fails the render, naming it."""
    with pytest.raises(Exception, match="ambient") as info:  # the embedded Helm raises its own type
        manifests(merged(AMBIENT, {"istio": {"ambient": bad}}))
    assert "ambient" in str(info.value)


def test_ambient_chart_lints_strictly() -> None:
    """`helm lint --strict` reports nothing with ambient mode on."""
    report = helm.lint(CHART, AMBIENT, strict=True, kube_version="v1.34.0", namespace=NAMESPACE)
    assert report["errors"] == [] and report["messages"] == [], report
