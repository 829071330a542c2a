"""Render the Helm chart with the embedded Helm of PyPI ``helm-python-sdk`` (Helm 4), offline.

The value sets below are the ones the tests render, lint and validate; each is what a user
would put in a values file for that scenario.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "temporal-extauthz"
RELEASE = "temporal-extauthz"
NAMESPACE = "temporal"

Manifest = dict[str, Any]

_OIDC = {"issuerUrl": "https://login.example.com/realms/temporal", "clientId": "temporal"}

VALUE_SETS: dict[str, dict[str, Any] | None] = {
    "defaults": None,
    "standalone": {
        "mode": "standalone",
        "extauthz": {"oidc": _OIDC, "replicas": 3, "workers": 2},
        "envoy": {"service": {"type": "LoadBalancer",
                              "loadBalancerSourceRanges": ["10.0.0.0/8"],
                              "externalTrafficPolicy": "Local"}, "replicas": 3},
        "temporal": {"namespace": "temporal-system",
                     "frontend": {"host": "prod-temporal-frontend"}},
        "tests": {"enabled": True},
    },
    "istio": {
        "mode": "istio",
        "istio": {"scope": "mesh", "provider": "temporal-extauthz"},
        "extauthz": {"oidc": _OIDC},
        "networkPolicy": {"enabled": True},
    },
    "istio-namespace": {
        "mode": "istio",
        "extauthz": {"oidc": _OIDC},
        "networkPolicy": {"enabled": True},
    },
    # Envoy's HTTP ext_authz protocol (the fast path), standalone Envoy, NetworkPolicies on
    "http": {
        "transport": "http",
        "extauthz": {"oidc": _OIDC},
        "networkPolicy": {"enabled": True},
        "temporal": {"frontend": {"networkPolicy": {"enabled": True}}},
    },
    # the same in Istio mode: an envoyExtAuthzHttp provider
    "istio-http": {
        "mode": "istio",
        "transport": "http",
        "extauthz": {"oidc": _OIDC},
        "networkPolicy": {"enabled": True},
    },
    "hpa": {
        "extauthz": {"oidc": _OIDC, "autoscaling": {"enabled": True, "minReplicas": 2,
                                                   "maxReplicas": 6}},
        "envoy": {"autoscaling": {"enabled": True, "maxReplicas": 8}},
    },
    "networkpolicy": {
        "extauthz": {"oidc": _OIDC},
        "networkPolicy": {
            "enabled": True,
            "envoyFrom": [{"namespaceSelector": {"matchLabels": {"temporal-client": "true"}}}],
            "metricsFrom": [{"namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        },
        "temporal": {"frontend": {"networkPolicy": {"enabled": True}}},
    },
    "existing-secret": {
        "extauthz": {
            "oidc": {"existingSecret": "temporal-ui-sso", "issuerUrlKey": "issuer_url",
                     "clientIdKey": "client_id"},
            "existingPolicyConfigMap": "temporal-policy",
        },
    },
    "mtls": {
        "extauthz": {"oidc": _OIDC},
        "tls": {"enabled": True, "certManager": {"enabled": True,
                                                 "issuerRef": {"name": "internal-ca",
                                                               "kind": "ClusterIssuer"}}},
        "networkPolicy": {"enabled": True},
    },
    "mtls-secrets": {
        "extauthz": {"oidc": _OIDC},
        "tls": {"enabled": True, "serverSecret": "authz-server-tls",
                "clientSecret": "authz-client-tls"},
        "envoy": {"listenerTls": {"enabled": True, "secretName": "temporal-edge-tls"}},
        "temporal": {"frontend": {"tls": {"enabled": True, "secretName": "frontend-ca",
                                          "clientCertificate": True}}},
    },
    # the HTTP ext_authz protocol over mTLS (cert-manager), NetworkPolicies on
    "http-mtls": {
        "transport": "http",
        "extauthz": {"oidc": _OIDC},
        "tls": {"enabled": True, "certManager": {"enabled": True,
                                                 "issuerRef": {"name": "internal-ca",
                                                               "kind": "ClusterIssuer"}}},
        "networkPolicy": {"enabled": True},
    },
    "monitoring": {
        "extauthz": {
            "oidc": _OIDC,
            "policy": {"version": 1, "profile": "temporal-compatible"},
            # the pre-upgrade hook then runs `extauthz validate` and `extauthz test`
            "policyCheck": {"tests": {
                "principals": {"reader": {"sub": "r", "permissions": ["default:read"]}},
                "cases": [{"name": "reader describes", "principal": "reader",
                           "method": "DescribeNamespace", "namespace": "default",
                           "expect": "allow"}]}},
            "config": {"token_cache_entries": 5000, "negative_cache_seconds": 2},
        },
        "monitoring": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "podMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "dashboard": {"enabled": True, "folder": "Temporal / Security",
                          "namespace": "monitoring"},
        },
    },
}


def merged(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Deep-merge value layers (later wins)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if isinstance(value, Mapping) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def render_files(values: Mapping[str, Any] | None = None, *,
                 name: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, str]:
    """Template path → rendered text (Helm's own render: values are schema-validated)."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(values=dict(values) if values is not None else None, name=name,
                            namespace=namespace, is_install=True)


def manifests(values: Mapping[str, Any] | None = None, *, hooks: bool = True,
              **kwargs: Any) -> list[Manifest]:
    """Every rendered object (NOTES.txt excluded); ``hooks=False`` drops ``helm test`` pods."""
    out: list[Manifest] = []
    for path, text in sorted(render_files(values, **kwargs).items()):
        if path.endswith("NOTES.txt"):
            continue
        if not hooks and "/templates/tests/" in path:
            continue
        out.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return out


def notes(values: Mapping[str, Any] | None = None) -> str:
    """The rendered NOTES.txt."""
    files = render_files(values)
    return next(text for path, text in files.items() if path.endswith("NOTES.txt"))


def find(docs: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    """Objects of ``kind`` (and ``name``)."""
    return [d for d in docs if d["kind"] == kind
            and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """Exactly one object of ``kind`` (and ``name``)."""
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def walk_strings(node: Any) -> Iterator[str]:
    """Every string value in a nested structure."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from walk_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk_strings(value)


def envoy_files(values: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The data of Envoy's ConfigMap (envoy.yaml and the SDS files)."""
    docs = manifests(values)
    cm = one(docs, "ConfigMap", f"{RELEASE}-envoy")
    data: dict[str, str] = cm["data"]
    return data


def envoy_config(values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """envoy.yaml from the rendered ConfigMap, parsed."""
    config: dict[str, Any] = yaml.safe_load(envoy_files(values)["envoy.yaml"])
    return config
