"""The mTLS variants of the Envoy configs (envoy/envoy-mtls.yaml, envoy/envoy-http-mtls.yaml):
each is its plain twin plus exactly the client-TLS pieces, validates with the real Envoy binary
as committed and as rendered by devkit.envoyconfig, and its settings are the invariants
docs/mesh.md relies on."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from devkit import components, envoyconfig
from devkit.ports import free_addresses

MTLS = {"grpc": "envoy-mtls.yaml", "http": "envoy-http-mtls.yaml"}
PLAIN = {"grpc": "envoy.yaml", "http": "envoy-http.yaml"}


def _load(repo_root: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((repo_root / "envoy" / name).read_text())
    return data


def test_mtls_variant_is_the_plain_config_plus_client_tls(repo_root: Path,
                                                          transport: str) -> None:
    """Removing the downstream TLS, the XFCC settings, the certificate hand-over and the
    listener label from the mTLS variant gives back the plain config, byte for byte as data."""
    mtls = _load(repo_root, MTLS[transport])
    plain = _load(repo_root, PLAIN[transport])
    stripped = copy.deepcopy(mtls)
    external = envoyconfig.listener(stripped, envoyconfig.EXTERNAL_LISTENER)
    del external["filter_chains"][0]["transport_socket"]
    hcm = envoyconfig.http_connection_manager(external)
    del hcm["forward_client_cert_details"], hcm["set_current_client_cert_details"]
    authz = envoyconfig.ext_authz_filter(stripped)
    if transport == "grpc":
        del authz["include_peer_certificate"]
        del hcm["route_config"]["virtual_hosts"][0]["typed_per_filter_config"]
    else:
        authz["allowed_headers"]["patterns"].remove({"exact": "x-forwarded-client-cert"})
        authz["http_service"]["authorization_request"]["headers_to_add"].remove(
            {"key": "x-extauthz-listener", "value": "external"})
    assert stripped == plain


def test_mtls_settings_are_the_invariants(repo_root: Path, transport: str) -> None:
    """Client certificates are required and checked against a CA; XFCC is SANITIZE_SET with
    subject, URI and DNS; the certificate reaches the authz server with the listener's label."""
    mtls = _load(repo_root, MTLS[transport])
    tls = envoyconfig.downstream_tls(mtls)
    assert tls["require_client_certificate"] is True
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"]
    hcm = envoyconfig.http_connection_manager(
        envoyconfig.listener(mtls, envoyconfig.EXTERNAL_LISTENER))
    assert hcm["forward_client_cert_details"] == "SANITIZE_SET"
    assert hcm["set_current_client_cert_details"] == {"cert": True, "subject": True,
                                                      "uri": True, "dns": True}
    authz = envoyconfig.ext_authz_filter(mtls)
    if transport == "grpc":
        assert authz["include_peer_certificate"] is True
        label = hcm["route_config"]["virtual_hosts"][0]["typed_per_filter_config"][
            envoyconfig.EXT_AUTHZ_FILTER]["check_settings"]["context_extensions"]
    else:
        assert {"exact": "x-forwarded-client-cert"} in authz["allowed_headers"]["patterns"]
        label = {h["key"]: h["value"]
                 for h in authz["http_service"]["authorization_request"]["headers_to_add"]}
    assert label["extauthz-listener" if transport == "grpc" else "x-extauthz-listener"] == (
        "external")


def test_mtls_variants_validate_committed_and_rendered(repo_root: Path, tmp_path: Path,
                                                       transport: str) -> None:
    """`envoy --mode validate` accepts the variant rendered with other addresses and a
    certificate directory (the committed paths are /etc/envoy/mtls, absent here)."""
    from support.meshpki import MeshCA, cn

    ca = MeshCA("ca")
    tls_dir = ca.write_listener_dir(tmp_path / "tls", ca.issue(cn("envoy"), dns=["localhost"],
                                                               server=True))
    ext, internal, admin, authz = free_addresses(4)
    text = envoyconfig.render(listen=ext, internal_listen=internal, admin=admin, authz=authz,
                              transport=transport, mtls=True, tls_dir=tls_dir)
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    rendered = yaml.safe_load(text)
    files = envoyconfig.downstream_tls(rendered)["common_tls_context"]
    assert files["validation_context"]["trusted_ca"]["filename"] == str(tls_dir / "ca.crt")
    result = components.validate_envoy_config(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_render_cli_mtls_points_at_the_tls_dir(tmp_path: Path) -> None:
    """`python -m devkit.envoyconfig --mtls --tls-dir D` writes the variant with D's files;
    a plain config has no downstream TLS to point anywhere."""
    out = tmp_path / "e.yaml"
    assert envoyconfig.main(["--mtls", "--tls-dir", "/certs", "--out", str(out)]) == 0
    tls = envoyconfig.downstream_tls(yaml.safe_load(out.read_text()))
    assert tls["common_tls_context"]["tls_certificates"][0]["certificate_chain"] == {
        "filename": "/certs/tls.crt"}
    assert envoyconfig.main(["--tls-dir", "/certs", "--out", str(out)]) == 2
