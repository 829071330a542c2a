"""helm/examples: the values for the official Temporal chart (checked structurally: no chart
repository is fetched) and for this chart (rendered, linted and validated), and that the two
agree on addresses and the SSO Secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml
from helmchart import CHART, REPO, find, manifests, one

EXAMPLES = REPO / "helm" / "examples"
RELEASE, NAMESPACE = "authz", "temporal"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return data


def _env(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Name → value or valueFrom; for duplicates the last one wins, as in Kubernetes."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in entries}


TEMPORAL = _load("temporal-values.yaml")
OURS = _load("temporal-extauthz-values.yaml")


def _rendered() -> list[dict[str, Any]]:
    return manifests(OURS, name=RELEASE, namespace=NAMESPACE)


def test_internal_frontend_is_enabled() -> None:
    """The internal-frontend is on (the current chart's `internal-frontend` key); the frontend
    stays ClusterIP without an Ingress."""
    server = TEMPORAL["server"]
    assert server["internal-frontend"]["enabled"] is True
    assert "internalFrontend" not in server
    assert server["frontend"]["service"]["type"] == "ClusterIP"
    assert server["frontend"]["ingress"]["enabled"] is False


def test_web_ui_logs_in_with_oidc_and_goes_through_envoy() -> None:
    """The Web UI has SSO on (issuer, client id and secret from a Secret, callback, scopes) and
    its upstream (web.temporalAddress, the current chart's key) is exactly the Envoy address
    this chart prints for the example release; no env entry is given twice, none sets the
    address (the chart does), web.tls names Envoy's certificate."""
    entries = TEMPORAL["web"]["additionalEnv"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names))
    assert "TEMPORAL_ADDRESS" not in names
    env = _env(entries)
    assert env["TEMPORAL_AUTH_ENABLED"] == "true"
    for name in ("TEMPORAL_AUTH_PROVIDER_URL", "TEMPORAL_AUTH_CLIENT_ID",
                 "TEMPORAL_AUTH_CLIENT_SECRET"):
        assert env[name]["secretKeyRef"]["name"] == "temporal-ui-sso", name
    assert env["TEMPORAL_AUTH_CALLBACK_URL"].startswith("https://")
    assert env["TEMPORAL_AUTH_CALLBACK_URL"].endswith("/auth/sso/callback")
    assert "openid" in env["TEMPORAL_AUTH_SCOPES"].split(",")
    envoy = one(_rendered(), "Service", f"{RELEASE}-temporal-extauthz-envoy")
    address = (f"{envoy['metadata']['name']}.{NAMESPACE}.svc.cluster.local:"
               f"{envoy['spec']['ports'][0]['port']}")
    assert TEMPORAL["web"]["temporalAddress"] == address
    assert address in notes_for_example()
    tls = TEMPORAL["web"]["tls"]
    assert set(tls) == {"enabled", "secretName", "serverName", "enableHostVerification"}
    assert tls["serverName"] == address.rpartition(":")[0]


def notes_for_example() -> str:
    """NOTES.txt of the example release."""
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values=OURS, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in files.items() if path.endswith("NOTES.txt"))


def test_admintools_use_the_internal_frontend() -> None:
    """admintools (an operator shell) stay on the internal-frontend: the current chart's
    default, said explicitly, with no address override in env."""
    admintools = TEMPORAL["admintools"]
    assert admintools["useExternalFrontend"] is False
    assert "additionalEnv" not in admintools and "temporalAddress" not in admintools


def test_both_charts_share_the_sso_secret_and_the_frontend() -> None:
    """temporal-extauthz reads the UI's SSO Secret (issuer_url, client_id) and forwards to the
    Temporal release's frontend Service; its NetworkPolicy lets only Envoy reach that
    frontend."""
    docs = _rendered()
    deployment = one(docs, "Deployment", f"{RELEASE}-temporal-extauthz")
    env = _env(deployment["spec"]["template"]["spec"]["containers"][0]["env"])
    assert env["TEMPORAL_AUTH_PROVIDER_URL"]["secretKeyRef"] == {"name": "temporal-ui-sso",
                                                                 "key": "issuer_url"}
    assert env["TEMPORAL_AUTH_CLIENT_ID"]["secretKeyRef"]["key"] == "client_id"
    config = yaml.safe_load(one(docs, "ConfigMap", f"{RELEASE}-temporal-extauthz-envoy")
                            ["data"]["envoy.yaml"])
    frontend = next(c for c in config["static_resources"]["clusters"]
                    if c["name"] == "temporal_frontend")
    address = frontend["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
        "address"]["socket_address"]
    assert address == {"address": "temporal-frontend.temporal.svc.cluster.local",
                       "port_value": 7233}
    names = {p["metadata"]["name"] for p in find(docs, "NetworkPolicy")}
    assert f"{RELEASE}-temporal-extauthz-temporal-frontend" in names


def test_example_values_lint_and_validate() -> None:
    """The example values for this chart lint strictly and every built-in object validates
    strictly."""
    report = helm.lint(CHART, OURS, strict=True, namespace=NAMESPACE)
    assert report["messages"] == [] and report["errors"] == [], report
    for doc in _rendered():
        if doc["apiVersion"].startswith(("monitoring.coreos.com", "cert-manager.io")):
            continue
        kubernetes_validate.validate(doc, "1.34.0", strict=True)


def test_examples_are_in_the_guide() -> None:
    """docs/deploy.md walks through both example files."""
    guide = (REPO / "docs" / "deploy.md").read_text()
    for name in ("helm/examples/temporal-values.yaml",
                 "helm/examples/temporal-extauthz-values.yaml"):
        assert name in guide
    assert Path(EXAMPLES).is_dir()
