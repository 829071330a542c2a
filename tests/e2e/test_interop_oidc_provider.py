"""Interop with a real third-party OpenID Provider: panva's ``oidc-provider`` (npm, a certified
OpenID Provider), run on loopback by ``tests/interop/oidc_provider.mjs``. The package comes from
the npm registry at test time (``npm install`` in ``tests/interop``; never vendored).

The authz server is configured with nothing but the provider's issuer URL (OIDC discovery), the
audience and ``required_typ: at+jwt``. A client-credentials token (RFC 9068 JWT access token via
resource indicators, Temporal's ``permissions`` claim added by the provider) goes through real
Envoy to a real Temporal and is mapped to a service principal; then the provider is restarted
with a new signing key (old one still published), then without the old key.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from support.identity import Authz, retry_port_clash, start_authz
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from devkit import procs
from devkit.components import AUDIENCE, EnvoyInstance, TemporalInstance, start_envoy
from devkit.ports import LOOPBACK, free_port
from devkit.procs import ManagedProcess
from extauthz.model import Reason

INTEROP = Path(__file__).resolve().parent.parent / "interop"
SCRIPT = INTEROP / "oidc_provider.mjs"
PACKAGE = "oidc-provider"
MAJOR = "9"
RESOURCE = "urn:temporal"
RPC_TIMEOUT = timedelta(seconds=10)
# (client_id, client_secret, Temporal permissions the provider puts in its access tokens)
OidcClient = tuple[str, str, list[str]]
READER: OidcClient = ("temporal-reader-svc", "reader-secret-0123456789abcdef0123456789",
                      ["default:read"])
NOBODY: OidcClient = ("no-permissions-svc", "nobody-secret-0123456789abcdef0123456789", [])


def ensure_provider_installed() -> None:
    """``npm install`` the provider into ``tests/interop/node_modules`` unless a 9.x is there
    (under a file lock: parallel test runs install once). Fails, never skips, without npm."""
    installed = INTEROP / "node_modules" / PACKAGE / "package.json"

    def present() -> bool:
        with contextlib.suppress(OSError, ValueError, KeyError):
            return str(json.loads(installed.read_text())["version"]).startswith(f"{MAJOR}.")
        return False

    if present():
        return
    npm = shutil.which("npm")
    assert npm is not None and shutil.which("node"), (
        "the OIDC interop test needs Node.js and npm (Debian: apt-get install nodejs npm)")
    with (INTEROP / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not present():
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--no-package-lock"],
                cwd=INTEROP, capture_output=True, text=True, timeout=300, check=False)
            assert done.returncode == 0, f"npm install failed:\n{done.stdout}\n{done.stderr}"
    assert present(), f"npm install did not install {PACKAGE}@{MAJOR}"


def rsa_jwk(kid: str) -> dict[str, Any]:
    """A private RS256 signing JWK for the provider's keystore."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key))
    jwk.pop("key_ops", None)  # PyJWT marks it ["sign"]; the provider would publish that as is
    jwk.update(kid=kid, alg="RS256", use="sig")
    return jwk


@dataclass
class OidcProvider:
    """The npm provider as a subprocess on a fixed loopback port (restartable with new keys)."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: ManagedProcess | None = None
    starts: int = 0

    @property
    def issuer(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, keys: list[dict[str, Any]]) -> None:
        """(Re)start serving ``keys``: the first one signs, all are published."""
        self.stop()
        self.starts += 1
        config = {"issuer": self.issuer, "port": self.port, "audience": AUDIENCE,
                  "resource": RESOURCE, "keys": keys,
                  "clients": [{"client_id": c, "client_secret": s, "permissions": p}
                              for c, s, p in (READER, NOBODY)]}
        path = self.workdir / f"oidc-provider-{self.starts}.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        path.chmod(0o600)
        self.proc = ManagedProcess("oidc-provider", [str(shutil.which("node")), str(SCRIPT),
                                                     str(path)],
                                   log_path=self.workdir / "oidc-provider.log", cwd=INTEROP)
        self.proc.start()
        url = f"{self.issuer}/.well-known/openid-configuration"
        self.proc.wait_ready(lambda: procs.http_get(url)[0] == 200, 30, f"discovery at {url}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def discovery(self) -> dict[str, Any]:
        status, body = procs.http_get(f"{self.issuer}/.well-known/openid-configuration")
        assert status == 200
        document: dict[str, Any] = json.loads(body)
        return document

    def published_kids(self) -> list[str]:
        status, body = procs.http_get(self.discovery()["jwks_uri"])
        assert status == 200
        return [k["kid"] for k in json.loads(body)["keys"]]

    def client_credentials(self, client: OidcClient) -> str:
        """An access token from the token endpoint (client_secret_basic, scope temporal)."""
        client_id, secret = client[0], client[1]
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        request = urllib.request.Request(
            self.discovery()["token_endpoint"], method="POST",
            data=b"grant_type=client_credentials&scope=temporal",
            headers={"authorization": f"Basic {basic}",
                     "content-type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
        assert answer["token_type"] == "Bearer"
        token: str = answer["access_token"]
        return token


def jose_header(token: str) -> dict[str, Any]:
    head = token.split(".", maxsplit=1)[0]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    return decoded


def claims_of(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return decoded


@dataclass
class Interop:
    provider: OidcProvider
    authz: Authz
    envoy: EnvoyInstance
    key_a: dict[str, Any]
    key_b: dict[str, Any]


@pytest.fixture(scope="module")
def interop(e2e_dir: Path, temporal: TemporalInstance) -> Iterator[Interop]:
    """Provider (signing with key A) → authz server (issuer URL only) → Envoy → Temporal."""
    ensure_provider_installed()
    provider = OidcProvider(e2e_dir)
    key_a, key_b = rsa_jwk("key-a"), rsa_jwk("key-b")
    provider.start([key_a])
    authz: Authz | None = None
    envoy: EnvoyInstance | None = None
    try:
        authz = retry_port_clash(lambda: start_authz(
            e2e_dir, "interop", provider.issuer, "grpc", server={"audit_allow_sample_rate": 1.0},
            required_typ="at+jwt", refresh_interval_seconds=1.0, unknown_kid_refetch_seconds=1.0))
        address = authz.address
        envoy = retry_port_clash(lambda: start_envoy(e2e_dir, authz=address,
                                                     upstream=temporal.address))
        yield Interop(provider, authz, envoy, key_a, key_b)
    finally:
        if envoy is not None:
            envoy.stop()
        if authz is not None:
            authz.proc.stop()
        provider.stop()


async def _describe(envoy: EnvoyInstance, token: str,
                    namespace: str = "default") -> rr.DescribeNamespaceResponse:
    client = await Client.connect(envoy.target, namespace=namespace, tls=False)
    return await client.workflow_service.describe_namespace(
        rr.DescribeNamespaceRequest(namespace=namespace), retry=False, timeout=RPC_TIMEOUT,
        metadata={"authorization": f"Bearer {token}"})


async def _refused(envoy: EnvoyInstance, token: str, namespace: str = "default") -> RPCError:
    with pytest.raises(RPCError) as info:
        await _describe(envoy, token, namespace)
    return info.value


async def test_client_credentials_token_through_envoy_to_temporal(interop: Interop) -> None:
    """Discovery and JWKS of the real provider, its client-credentials JWT (`at+jwt`, our
    audience, `permissions` claim) accepted through Envoy by Temporal and mapped to a service
    principal named by the client id; the same provider's token without permissions and the
    reader's token on another namespace are PERMISSION_DENIED."""
    provider, envoy = interop.provider, interop.envoy
    discovery = provider.discovery()
    assert discovery["issuer"] == provider.issuer
    assert discovery["jwks_uri"].startswith(provider.issuer + "/")
    assert provider.published_kids() == ["key-a"]

    token = provider.client_credentials(READER)
    assert jose_header(token) == {"alg": "RS256", "typ": "at+jwt", "kid": "key-a"}
    claims = claims_of(token)
    assert (claims["iss"], claims["aud"], claims["sub"], claims["client_id"]) == (
        provider.issuer, AUDIENCE, READER[0], READER[0])
    assert claims["permissions"] == ["default:read"]

    assert (await _describe(envoy, token)).namespace_info.name == "default"
    allowed = [e for e in interop.authz.events("authz.decision")
               if e["decision"] == "allow" and e["subject"] == READER[0]]
    assert allowed, interop.authz.log_path
    assert (allowed[-1]["principal_kind"], allowed[-1]["issuer"]) == ("service",
                                                                        provider.issuer)

    denied = await _refused(envoy, token, namespace="payroll")
    assert denied.status == RPCStatusCode.PERMISSION_DENIED
    nobody = await _refused(envoy, provider.client_credentials(NOBODY))
    assert nobody.status == RPCStatusCode.PERMISSION_DENIED
    assert Reason.PERMISSION_DENIED.value in nobody.message and NOBODY[0] in nobody.message


async def test_rotated_provider_key_is_accepted_then_the_removed_one_refused(
    interop: Interop,
) -> None:
    """The provider restarts signing with key B while still publishing key A: its new token
    (kid B) works, and so do kid-A tokens, one the server has cached and one it sees for the
    first time (verified with key A from the provider's new JWK Set). It restarts again
    without key A: after the server's next refresh the cached kid-A token, and an unseen one,
    are UNAUTHENTICATED `unknown_key`, while kid-B tokens (earlier and new) keep working."""
    provider, envoy = interop.provider, interop.envoy
    provider.start([interop.key_a])
    old, old_unseen, old_unseen_2 = (provider.client_credentials(READER) for _ in range(3))
    assert {jose_header(t)["kid"] for t in (old, old_unseen, old_unseen_2)} == {"key-a"}
    assert (await _describe(envoy, old)).namespace_info.name == "default"

    provider.start([interop.key_b, interop.key_a])
    assert provider.published_kids() == ["key-b", "key-a"]
    new = provider.client_credentials(READER)
    assert jose_header(new)["kid"] == "key-b"
    assert (await _describe(envoy, new)).namespace_info.name == "default"
    assert (await _describe(envoy, old)).namespace_info.name == "default"
    assert (await _describe(envoy, old_unseen)).namespace_info.name == "default"

    provider.start([interop.key_b])
    assert provider.published_kids() == ["key-b"]
    started = time.monotonic()
    while True:
        try:
            await _describe(envoy, old)
        except RPCError as exc:
            assert exc.status == RPCStatusCode.UNAUTHENTICATED, exc.message
            assert Reason.UNKNOWN_KEY.value in exc.message, exc.message
            break
        assert time.monotonic() - started < 5.0, "the removed key was still accepted"
        await asyncio.sleep(0.1)
    unseen = await _refused(envoy, old_unseen_2)
    assert unseen.status == RPCStatusCode.UNAUTHENTICATED
    assert Reason.UNKNOWN_KEY.value in unseen.message
    assert (await _describe(envoy, new)).namespace_info.name == "default"
    fresh = provider.client_credentials(READER)
    assert jose_header(fresh)["kid"] == "key-b"
    assert (await _describe(envoy, fresh)).namespace_info.name == "default"
