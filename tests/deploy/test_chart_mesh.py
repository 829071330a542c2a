"""The chart's mesh-identity variant (``peerIdentity``): standalone Envoy terminates client mTLS
and hands the verified certificate to the server; Istio mode renders what the sidecar passes
(a STRICT PeerAuthentication, transport grpc); impossible combinations fail at render time."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from helmchart import RELEASE, envoy_config, envoy_files, find, manifests, notes, one

from devkit import envoyconfig
from extauthz.config import from_mapping
from extauthz.config.peer import envoy_problems

OIDC = {"issuerUrl": "https://login.example.com/realms/temporal", "clientId": "temporal"}


def _values(transport: str = "grpc", **extra: Any) -> dict[str, Any]:
    return {"extauthz": {"oidc": OIDC}, "transport": transport,
            "peerIdentity": {"enabled": True, "fields": ["spiffe", "subject"]},
            "envoy": {"listenerTls": {"enabled": True, "secretName": "envoy-listener"}},
            **extra}


def _server_config(values: dict[str, Any]) -> dict[str, Any]:
    cm = one(manifests(values), "ConfigMap", RELEASE)
    data: dict[str, Any] = yaml.safe_load(cm["data"]["config.yaml"])
    return data


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_standalone_variant_passes_validates_own_envoy_check(transport: str) -> None:
    """The rendered Envoy requires client certificates from the listener Secret's ca.crt, sets
    XFCC itself and hands the certificate over; `extauthz validate --envoy`'s check accepts it,
    and the server config it renders has peer_identity on with the chart's fields."""
    values = _values(transport)
    config = envoy_config(values)
    assert envoy_problems(config, transport) == []
    tls = envoyconfig.downstream_tls(config)
    assert tls["require_client_certificate"] is True
    hcm = envoyconfig.http_connection_manager(envoyconfig.listener(config, "external"))
    authz = envoyconfig.ext_authz_filter(config)
    if transport == "grpc":
        assert hcm["route_config"]["virtual_hosts"][0]["typed_per_filter_config"][
            envoyconfig.EXT_AUTHZ_FILTER]["check_settings"]["context_extensions"] == {
            "extauthz-listener": "external"}
    else:
        assert {"key": "x-extauthz-listener", "value": "external"} in authz["http_service"][
            "authorization_request"]["headers_to_add"]
    ca = yaml.safe_load(envoy_files(values)["sds-listener-client-ca.yaml"])
    assert ca["resources"][0]["validation_context"]["trusted_ca"]["filename"].endswith("/ca.crt")
    server = _server_config(values)
    assert server["peer_identity"] == {"enabled": True, "fields": ["spiffe", "subject"],
                                       "trust_domains": ["cluster.local"]}
    settings = from_mapping(server, "chart-config.yaml")
    assert settings.peer_identity.enabled


def test_off_by_default_renders_no_client_certificate_handling() -> None:
    """Without peerIdentity the Envoy and server configs carry none of it."""
    values = {"extauthz": {"oidc": OIDC},
              "envoy": {"listenerTls": {"enabled": True, "secretName": "l"}}}
    config = envoy_config(values)
    assert "require_client_certificate" not in envoyconfig.downstream_tls(config)
    hcm = envoyconfig.http_connection_manager(envoyconfig.listener(config, "external"))
    assert "forward_client_cert_details" not in hcm
    assert "include_peer_certificate" not in envoyconfig.ext_authz_filter(config)
    assert "peer_identity" not in _server_config(values)
    assert "sds-listener-client-ca.yaml" not in envoy_files(values)


def test_istio_mode_renders_strict_mtls_for_the_frontend() -> None:
    """Istio mode: a STRICT PeerAuthentication selecting the frontend pods (so the sidecar's
    Check carries the caller's SPIFFE ID), beside the CUSTOM AuthorizationPolicy."""
    docs = manifests({"extauthz": {"oidc": OIDC}, "mode": "istio",
                      "peerIdentity": {"enabled": True}})
    peer_auth = one(docs, "PeerAuthentication")
    assert peer_auth["spec"]["mtls"] == {"mode": "STRICT"}
    policy = one(docs, "AuthorizationPolicy")
    assert peer_auth["spec"]["selector"] == policy["spec"]["selector"]
    assert "attributes.source.principal" in notes(
        {"extauthz": {"oidc": OIDC}, "mode": "istio", "peerIdentity": {"enabled": True}})
    no_strict = manifests({"extauthz": {"oidc": OIDC}, "mode": "istio",
                           "peerIdentity": {"enabled": True, "istioStrictMtls": False}})
    assert find(no_strict, "PeerAuthentication") == []


@pytest.mark.parametrize(("values", "says"), [
    ({"extauthz": {"oidc": OIDC}, "peerIdentity": {"enabled": True}},
     "needs envoy.listenerTls.enabled"),
    ({"extauthz": {"oidc": OIDC}, "mode": "istio", "transport": "http",
      "peerIdentity": {"enabled": True}}, "needs transport: grpc"),
    (_values(peerIdentity={"enabled": True, "trustDomains": []}), "trustDomains is required"),
])
def test_combinations_that_cannot_vouch_for_a_certificate_fail_to_render(
        values: dict[str, Any], says: str) -> None:
    """No client TLS at Envoy, the HTTP provider in Istio, or no trust domain: a render error
    naming the value."""
    with pytest.raises(Exception, match=says):
        manifests(values)
