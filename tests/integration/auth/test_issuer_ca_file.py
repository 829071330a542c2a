"""An issuer behind a private CA: the real dev issuer serving HTTPS with a certificate from a CA
made here, the settings loaded from a real config file (and the environment), the real HTTPS
client. Without ``ca_file`` the keys are unavailable; with it the call is allowed; a bundle of
another CA is refused; a bad ``ca_file`` is a config error naming the key and the file."""

from __future__ import annotations

import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from support.checks import check_request
from support_auth import refused, running
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from devkit.components import start_extauthz
from devkit.issuer import DevIssuer
from extauthz import methods
from extauthz.config import load
from extauthz.model import CheckInput, Reason
from extauthz.pipeline import Pipeline
from extauthz.yamlread import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy"))
from pki import CA

LIST = f"/{methods.WORKFLOW_SERVICE}/ListWorkflowExecutions"


@pytest.fixture
def private_ca() -> CA:
    """A private root CA, made for this test."""
    return CA("extauthz-test-private-root")


@pytest.fixture
def tls_issuer(private_ca: CA, tmp_path: Path) -> Iterator[DevIssuer]:
    """The dev issuer over HTTPS on loopback, its certificate signed by ``private_ca``."""
    leaf = private_ca.issue("localhost", dns=("localhost",), ips=("127.0.0.1",))
    (tmp_path / "issuer.crt").write_bytes(leaf.cert)
    (tmp_path / "issuer.key").write_bytes(leaf.key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "issuer.crt", tmp_path / "issuer.key")
    with DevIssuer(tls=context) as dev:
        yield dev


def write_config(tmp_path: Path, dev: DevIssuer, ca_line: str) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(f"""
issuers:
  - issuer: {dev.url}
    audiences: [temporal]
    fetch_timeout_seconds: 2
{ca_line}
""")
    return config


def listing(token: str) -> CheckInput:
    data = rr.ListWorkflowExecutionsRequest(namespace="default").SerializeToString()
    headers = {"content-type": "application/grpc", "authorization": f"Bearer {token}"}
    return CheckInput(LIST, headers, b"\0" + len(data).to_bytes(4, "big") + data)


async def test_without_ca_file_the_keys_are_unavailable(tls_issuer: DevIssuer,
                                                        tmp_path: Path) -> None:
    """The system trust store does not know the private CA: keys_unavailable, never allowed."""
    settings = load(write_config(tmp_path, tls_issuer, ""), env={})
    assert tls_issuer.url.startswith("https://")
    async with running(*settings.issuers, ready=False) as auth:
        assert not await auth.wait_ready(3.0)
        token = tls_issuer.mint({"sub": "alice", "permissions": ["default:read"]})
        await refused(auth, token, Reason.KEYS_UNAVAILABLE)
        decision = await Pipeline(auth).check(listing(token))
    assert not decision.allowed and decision.reason == Reason.KEYS_UNAVAILABLE
    assert tls_issuer.handshake_failures >= 1
    assert tls_issuer.jwks_requests == 0


async def test_with_ca_file_relative_to_the_config_the_call_is_allowed(
        tls_issuer: DevIssuer, private_ca: CA, tmp_path: Path) -> None:
    """``ca_file: ca.pem`` (next to the config file) trusts the issuer: allowed."""
    (tmp_path / "ca.pem").write_bytes(private_ca.pem)
    settings = load(write_config(tmp_path, tls_issuer, "    ca_file: ca.pem"), env={})
    assert settings.issuers[0].ca_file == str(tmp_path / "ca.pem")
    async with running(*settings.issuers) as auth:
        token = tls_issuer.mint({"sub": "alice", "permissions": ["default:read"]})
        decision = await Pipeline(auth).check(listing(token))
    assert decision.allowed, decision.message
    assert tls_issuer.discovery_requests >= 1 and tls_issuer.jwks_requests >= 1


async def test_env_ca_file_for_the_env_issuer(tls_issuer: DevIssuer, private_ca: CA,
                                              tmp_path: Path) -> None:
    """EXTAUTHZ_ISSUER_CA_FILE is the environment-configured issuer's ca_file."""
    (tmp_path / "ca.pem").write_bytes(private_ca.pem)
    settings = load(None, env={"TEMPORAL_AUTH_PROVIDER_URL": tls_issuer.url,
                               "TEMPORAL_AUTH_CLIENT_ID": "temporal",
                               "EXTAUTHZ_ISSUER_CA_FILE": str(tmp_path / "ca.pem")})
    assert settings.issuers[0].ca_file == str(tmp_path / "ca.pem")
    async with running(*settings.issuers) as auth:
        token = tls_issuer.mint({"sub": "alice", "permissions": ["default:read"]})
        assert (await Pipeline(auth).check(listing(token))).allowed


async def test_a_bundle_of_another_ca_is_refused(tls_issuer: DevIssuer, tmp_path: Path) -> None:
    """``ca_file`` is the only trust for that issuer: another CA's bundle is refused."""
    (tmp_path / "other.pem").write_bytes(CA("some-other-root").pem)
    settings = load(write_config(tmp_path, tls_issuer, "    ca_file: other.pem"), env={})
    async with running(*settings.issuers, ready=False) as auth:
        assert not await auth.wait_ready(3.0)
        token = tls_issuer.mint({"sub": "alice", "permissions": ["default:read"]})
        decision = await Pipeline(auth).check(listing(token))
    assert not decision.allowed and decision.reason == Reason.KEYS_UNAVAILABLE
    assert tls_issuer.handshake_failures >= 1 and tls_issuer.jwks_requests == 0


@pytest.mark.parametrize(("content", "problem"), [
    (None, "cannot read"),
    (b"", "no PEM certificate"),
    (b"hello", "no PEM certificate"),
    (b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
     "not a valid PEM CA bundle"),
])
def test_a_bad_ca_file_is_a_config_error_naming_key_and_file(
        tmp_path: Path, content: bytes | None, problem: str) -> None:
    """A missing, empty or garbled ca_file stops the load with the key, the file and why."""
    bundle = tmp_path / "ca.pem"
    if content is not None:
        bundle.write_bytes(content)
    config = tmp_path / "config.yaml"
    config.write_text("issuers:\n  - issuer: https://idp.example.com\n    ca_file: ca.pem\n")
    with pytest.raises(ConfigError) as info:
        load(config, env={})
    message = str(info.value)
    assert "issuers[0].ca_file" in message and str(bundle) in message and problem in message
    assert str(config) in message


def test_a_bad_env_ca_file_names_the_variable(tmp_path: Path) -> None:
    """The environment's ca_file error names EXTAUTHZ_ISSUER_CA_FILE."""
    with pytest.raises(ConfigError) as info:
        load(None, env={"TEMPORAL_AUTH_PROVIDER_URL": "https://idp.example.com",
                        "EXTAUTHZ_ISSUER_CA_FILE": str(tmp_path / "absent.pem")})
    assert "EXTAUTHZ_ISSUER_CA_FILE" in str(info.value)
    assert "absent.pem" in str(info.value)


def test_serve_process_trusts_the_issuer_through_the_env_ca_file(
        tls_issuer: DevIssuer, private_ca: CA, tmp_path: Path) -> None:
    """`extauthz serve` (a real process) with EXTAUTHZ_ISSUER_CA_FILE loads the HTTPS issuer's
    keys (health SERVING) and allows a Check carrying its token; a token it never issued is
    refused."""
    (tmp_path / "ca.pem").write_bytes(private_ca.pem)
    authz = start_extauthz(tmp_path, tls_issuer.url, name="extauthz-ca-file",
                           extra_env={"EXTAUTHZ_ISSUER_CA_FILE": str(tmp_path / "ca.pem"),
                                      "EXTAUTHZ_WORKERS": "1"})
    try:
        token = tls_issuer.mint({"sub": "alice", "permissions": ["default:read"]})
        body = listing(token).body
        with grpc.insecure_channel(authz.target) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            allowed = stub.Check(check_request(LIST, body, {"authorization": f"Bearer {token}"}),
                                 timeout=10)
            forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
            refused_ = stub.Check(check_request(LIST, body,
                                                {"authorization": f"Bearer {forged}"}),
                                  timeout=10)
    finally:
        authz.proc.stop()
    assert allowed.status.code == 0, allowed
    assert refused_.status.code != 0


async def test_the_system_store_is_not_trusted_beside_the_bundle(
        tls_issuer: DevIssuer, private_ca: CA, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``ca_file`` replaces the system store, never adds to it: with the issuer's CA in the
    system store (OpenSSL's SSL_CERT_FILE: a public CA, a corporate root) and another CA's
    bundle as ``ca_file``, the issuer is not trusted (keys_unavailable)."""
    (tmp_path / "system.pem").write_bytes(private_ca.pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "system.pem"))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    (tmp_path / "other.pem").write_bytes(CA("some-other-root").pem)
    settings = load(write_config(tmp_path, tls_issuer, "    ca_file: other.pem"), env={})
    async with running(*settings.issuers, ready=False) as auth:
        assert not await auth.wait_ready(3.0)
        token = tls_issuer.mint({"sub": "alice", "permissions": ["default:read"]})
        decision = await Pipeline(auth).check(listing(token))
    assert not decision.allowed and decision.reason == Reason.KEYS_UNAVAILABLE
    assert tls_issuer.jwks_requests == 0


async def test_the_bundle_does_not_turn_hostname_checks_off(private_ca: CA,
                                                            tmp_path: Path) -> None:
    """The bundle's CA signed the issuer's certificate, but for another name: refused
    (keys_unavailable), so a bundle never vouches for a host the certificate does not name."""
    leaf = private_ca.issue("idp.elsewhere.example", dns=("idp.elsewhere.example",))
    (tmp_path / "issuer.crt").write_bytes(leaf.cert)
    (tmp_path / "issuer.key").write_bytes(leaf.key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "issuer.crt", tmp_path / "issuer.key")
    (tmp_path / "ca.pem").write_bytes(private_ca.pem)
    with DevIssuer(tls=context) as dev:
        settings = load(write_config(tmp_path, dev, "    ca_file: ca.pem"), env={})
        async with running(*settings.issuers, ready=False) as auth:
            assert not await auth.wait_ready(3.0)
            token = dev.mint({"sub": "alice", "permissions": ["default:read"]})
            decision = await Pipeline(auth).check(listing(token))
        assert not decision.allowed and decision.reason == Reason.KEYS_UNAVAILABLE
        assert dev.jwks_requests == 0


@pytest.mark.parametrize("with_url", [True, False])
def test_an_env_ca_file_that_no_issuer_uses_is_a_config_error(tmp_path: Path,
                                                               with_url: bool) -> None:
    """EXTAUTHZ_ISSUER_CA_FILE is the environment issuer's; when the file lists issuers (the
    chart's oidc.caBundle beside extauthz.config.issuers) or no TEMPORAL_AUTH_PROVIDER_URL is
    set, nothing would use it and every issuer would trust the system store instead of the
    bundle the operator set: refused, naming the variable."""
    (tmp_path / "ca.pem").write_bytes(CA("corp-root").pem)
    config = tmp_path / "config.yaml"
    config.write_text("issuers:\n  - issuer: https://idp.example.com\n    audiences: [t]\n")
    env = {"EXTAUTHZ_ISSUER_CA_FILE": str(tmp_path / "ca.pem")}
    if with_url:
        env["TEMPORAL_AUTH_PROVIDER_URL"] = "https://idp.example.com"
    with pytest.raises(ConfigError) as info:
        load(config, env=env)
    assert "EXTAUTHZ_ISSUER_CA_FILE" in str(info.value)
    assert "ca_file" in str(info.value)
    if not with_url:
        with pytest.raises(ConfigError, match="EXTAUTHZ_ISSUER_CA_FILE"):
            load(None, env=env)
