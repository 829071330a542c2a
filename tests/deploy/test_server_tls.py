"""Server TLS/mTLS from files (extauthz.server.tls, the `tls:` config block): files are checked
before use, re-read when they change (as a Secret volume rotates them), a broken rotation keeps
the current set, and the in-process server enforces client certificates with a plaintext
health-only port beside it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pki import CA, Issued, write_secret_volume

from devkit.ports import LOOPBACK, free_port, free_ports
from extauthz import config
from extauthz.auth.types import IssuerConfig
from extauthz.config import ConfigError, Settings, TLSSettings
from extauthz.server.app import Server
from extauthz.server.tls import CertificateFiles, TLSFilesError, load_files


def _tls(directory: Path, *, mtls: bool = True) -> TLSSettings:
    return TLSSettings(cert_file=str(directory / "tls.crt"), key_file=str(directory / "tls.key"),
                       client_ca_file=str(directory / "ca.crt") if mtls else "",
                       require_client_cert=mtls)


@pytest.fixture
def server_ca() -> CA:
    """The CA of the server certificate."""
    return CA("server-ca")


@pytest.fixture
def client_ca() -> CA:
    """The CA of the clients' certificates."""
    return CA("client-ca")


@pytest.fixture
def secret(tmp_path: Path, server_ca: CA, client_ca: CA) -> Path:
    """A Secret volume with the server certificate and the client CA."""
    directory = tmp_path / "tls"
    write_secret_volume(directory, server_ca.issue("extauthz", dns=("localhost",),
                                                   ips=("127.0.0.1",)), ca=client_ca.pem)
    return directory


# ---- configuration ---------------------------------------------------------------------------


def test_tls_block_parses_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    """`tls:` keys are read, paths are relative to the config file, and a client CA turns
    require_client_cert on by default."""
    path = tmp_path / "config.yaml"
    path.write_text("tls:\n  cert_file: tls.crt\n  key_file: tls.key\n  client_ca_file: ca.crt\n"
                    "health_listen: 127.0.0.1:9192\n")
    settings = config.load(path, env={})
    assert settings.tls == TLSSettings(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"),
                                       str(tmp_path / "ca.crt"), True)
    assert settings.tls.enabled
    assert settings.health_listen == "127.0.0.1:9192"


@pytest.mark.parametrize(("tls", "message"), [
    ({"cert_file": "a"}, "cert_file and key_file go together"),
    ({"key_file": "a"}, "cert_file and key_file go together"),
    ({"client_ca_file": "ca"}, "mTLS is TLS first"),
    ({"cert_file": "a", "key_file": "b", "require_client_cert": True}, "needs client_ca_file"),
    ({"cert_file": "a", "key_file": "b", "cert": "c"}, "tls.cert: unknown key"),
    ({"cert_file": "a", "key_file": "b", "require_client_cert": "yes"}, "expected bool"),
])
def test_incomplete_tls_settings_are_errors_naming_the_key(tls: dict[str, object],
                                                           message: str) -> None:
    """Half a key pair, mTLS without TLS, client certificates without a CA, unknown keys and
    wrong types are errors that name the `tls` key."""
    with pytest.raises(ConfigError, match=message) as info:
        config.from_mapping({"tls": tls}, "c.yaml")
    assert str(info.value).startswith("c.yaml: tls")


def test_environment_overrides_the_tls_block() -> None:
    """EXTAUTHZ_TLS_* and EXTAUTHZ_HEALTH_LISTEN apply on top of the file; a CA from the
    environment requires client certificates unless told otherwise."""
    env = {"EXTAUTHZ_TLS_CERT_FILE": "/t/tls.crt", "EXTAUTHZ_TLS_KEY_FILE": "/t/tls.key",
           "EXTAUTHZ_TLS_CLIENT_CA_FILE": "/t/ca.crt", "EXTAUTHZ_HEALTH_LISTEN": "0.0.0.0:9192"}
    settings = config.apply_env(Settings(), env)
    assert settings.tls == TLSSettings("/t/tls.crt", "/t/tls.key", "/t/ca.crt", True)
    assert settings.health_listen == "0.0.0.0:9192"
    relaxed = config.apply_env(Settings(), {**env, "EXTAUTHZ_TLS_REQUIRE_CLIENT_CERT": "false"})
    assert relaxed.tls.require_client_cert is False
    with pytest.raises(ConfigError, match="EXTAUTHZ_TLS"):
        config.apply_env(Settings(), {"EXTAUTHZ_TLS_CERT_FILE": "/t/tls.crt"})
    with pytest.raises(ConfigError, match="EXTAUTHZ_HEALTH_LISTEN"):
        config.apply_env(Settings(), {"EXTAUTHZ_HEALTH_LISTEN": "nope"})
    assert config.apply_env(Settings(), {}).tls == TLSSettings()


# ---- files -----------------------------------------------------------------------------------


def test_files_are_checked_before_use(tmp_path: Path, server_ca: CA, secret: Path) -> None:
    """A missing file, a file that is not PEM, and a key that does not belong to the
    certificate are errors naming the file."""
    with pytest.raises(TLSFilesError, match="cannot read"):
        load_files(_tls(tmp_path / "nowhere"))
    other = server_ca.issue("other")
    mismatched = tmp_path / "mismatched"
    write_secret_volume(mismatched, Issued(server_ca.issue("x").cert, other.key, server_ca.pem))
    with pytest.raises(TLSFilesError, match="does not belong"):
        load_files(_tls(mismatched))
    garbage = tmp_path / "garbage"
    write_secret_volume(garbage, Issued(b"not pem", other.key, server_ca.pem))
    with pytest.raises(TLSFilesError, match="no PEM certificate"):
        load_files(_tls(garbage))
    loaded = load_files(_tls(secret))
    assert loaded.subject == "CN=extauthz"


def test_fetcher_reports_no_change_until_the_files_change(secret: Path, server_ca: CA,
                                                          client_ca: CA) -> None:
    """Before each handshake gRPC asks the fetcher; it answers None (no change) until the Secret
    is rotated, then once with the new configuration."""
    files = CertificateFiles(_tls(secret))
    assert files() is None
    assert files() is None
    write_secret_volume(secret, server_ca.issue("extauthz-renewed"), ca=client_ca.pem)
    assert files() is not None
    assert files.current.subject == "CN=extauthz-renewed"
    assert files.reloads == 1
    assert files() is None


def test_a_broken_rotation_keeps_the_current_files(secret: Path, server_ca: CA,
                                                   client_ca: CA) -> None:
    """A rotation caught half-way (new certificate, old key) is rejected and the current set
    stays in force; the completed rotation is adopted at the next handshake."""
    files = CertificateFiles(_tls(secret))
    renewed = server_ca.issue("extauthz-renewed")
    old_key = (secret / "tls.key").read_bytes()
    write_secret_volume(secret, Issued(renewed.cert, old_key, client_ca.pem), ca=client_ca.pem)
    assert files() is None
    assert files.rejected == 1
    assert files.current.subject == "CN=extauthz"
    write_secret_volume(secret, renewed, ca=client_ca.pem)
    assert files() is not None
    assert files.current.subject == "CN=extauthz-renewed"


def test_same_contents_rewritten_is_no_change(secret: Path) -> None:
    """The kubelet rewriting identical contents (a resync) does not count as a rotation."""
    files = CertificateFiles(_tls(secret))
    same = Issued((secret / "tls.crt").read_bytes(), (secret / "tls.key").read_bytes(),
                  (secret / "ca.crt").read_bytes())
    write_secret_volume(secret, same)
    assert files() is None
    assert files.reloads == 0


# ---- the server ------------------------------------------------------------------------------


def _issuer(tmp_path: Path) -> IssuerConfig:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = "k1"
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    return IssuerConfig(issuer="https://issuer.test", audiences=("temporal",),
                        jwks_uris=(f"file://{tmp_path}/jwks.json",))


def _health(target: str, creds: grpc.ChannelCredentials | None) -> object:
    channel = (grpc.secure_channel(target, creds,
                                   (("grpc.ssl_target_name_override", "localhost"),))
               if creds is not None else grpc.insecure_channel(target))
    with channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5).status
        except grpc.RpcError as err:
            return err.code()


async def test_server_requires_client_certificates_and_follows_a_new_client_ca(
        tmp_path: Path, secret: Path, server_ca: CA, client_ca: CA) -> None:
    """The Check port answers only clients with a certificate from the client CA; after the CA
    bundle is rotated, clients of the new CA get in and those of the old one are refused; the
    plaintext health-only port answers probes throughout."""
    port, health_port = free_ports(2)
    settings = Settings(listen=f"{LOOPBACK}:{port}", issuers=(_issuer(tmp_path),),
                        tls=_tls(secret), health_listen=f"{LOOPBACK}:{health_port}",
                        shutdown_delay_seconds=0, shutdown_grace_seconds=1)
    server = Server(settings)
    await server.start()
    try:
        target = f"{LOOPBACK}:{server.port}"
        old_client = client_ca.issue("envoy", client=True)
        good = grpc.ssl_channel_credentials(server_ca.pem, old_client.key, old_client.cert)
        assert not isinstance(await asyncio.to_thread(_health, target, good), grpc.StatusCode)
        refused = grpc.StatusCode.UNAVAILABLE
        assert await asyncio.to_thread(
            _health, target, grpc.ssl_channel_credentials(server_ca.pem)) == refused
        assert await asyncio.to_thread(_health, target, None) == refused
        health = await asyncio.to_thread(_health, f"{LOOPBACK}:{health_port}", None)
        assert health in (health_pb2.HealthCheckResponse.SERVING,
                          health_pb2.HealthCheckResponse.NOT_SERVING)

        new_ca = CA("client-ca-2")
        write_secret_volume(secret, server_ca.issue("extauthz", dns=("localhost",)),
                            ca=new_ca.pem)
        new_client = new_ca.issue("envoy", client=True)
        new_creds = grpc.ssl_channel_credentials(server_ca.pem, new_client.key, new_client.cert)
        assert not isinstance(await asyncio.to_thread(_health, target, new_creds),
                              grpc.StatusCode)
        old_creds = grpc.ssl_channel_credentials(server_ca.pem, old_client.key, old_client.cert)
        assert await asyncio.to_thread(_health, target, old_creds) == refused
        assert server.tls_files is not None and server.tls_files.reloads == 1
    finally:
        await server.stop()


async def test_server_does_not_start_with_unusable_tls_files(tmp_path: Path) -> None:
    """TLS configured but its files missing: the server refuses to start (never falls back to
    plaintext)."""
    settings = Settings(listen=f"{LOOPBACK}:{free_port()}", issuers=(_issuer(tmp_path),),
                        tls=_tls(tmp_path / "missing"), shutdown_delay_seconds=0)
    server = Server(settings)
    with pytest.raises(TLSFilesError, match="cannot read"):
        await server.start()
    await server.stop()
