"""Envoy's HTTP ext_authz protocol over mTLS, end to end: the real authz server with ``tls:``
and ``transport: http`` (ready by its plaintext gRPC health port, as the chart's probes use it),
real Envoy with a client certificate, a real Temporal dev server behind it. Two Envoy configs:
the chart's (``transport: http`` + ``tls.enabled``, file-based SDS), and envoy/envoy-http.yaml
with its commented ``authz-tls`` block switched on. An allowed call passes, a denied one is
PERMISSION_DENIED, Envoy's TLS handshakes to the server succeed; an Envoy whose client
certificate the server does not trust is refused in the handshake and fails closed
(UNAVAILABLE, never an allow)."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from grpc_health.v1 import health_pb2
from helmchart import REPO, envoy_files
from pki import CA, Issued, write_secret_volume
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.service import RPCError, RPCStatusCode
from test_chart_e2e import (
    OIDC,
    RPC_TIMEOUT,
    Stack,
    _allowed_and_denied,
    _connect,
    _health,
    _relocate,
    localize,
)

from devkit import components, envoyconfig, procs
from devkit.components import AUDIENCE, IssuerInstance, TemporalInstance
from devkit.ports import free_addresses
from devkit.procs import ManagedProcess

HTTP_MTLS_VALUES = {"transport": "http", "extauthz": {"oidc": OIDC},
                    "tls": {"enabled": True, "serverSecret": "s", "clientSecret": "c"}}
EXAMPLE_NAME = "extauthz.temporal.svc.cluster.local"  # the name in envoy-http.yaml's block
ENVOY_TLS_DIR = "/etc/envoy/authz-tls"


@dataclass
class Pki:
    """The server's Secret (its certificate + the client CA) and Envoy's (its client
    certificate + the server CA)."""

    server_ca: CA
    client_ca: CA
    server_dir: Path
    client_dir: Path


def _chart_server_name() -> str:
    config = yaml.safe_load(envoy_files(HTTP_MTLS_VALUES)["envoy.yaml"])
    return str(envoyconfig.cluster(config, "extauthz")["transport_socket"]["typed_config"]["sni"])


@pytest.fixture(scope="module")
def pki(deploy_dir: Path) -> Pki:
    server_ca, client_ca = CA("http-authz-server-ca"), CA("http-authz-client-ca")
    names = (_chart_server_name(), EXAMPLE_NAME)
    server_dir, client_dir = deploy_dir / "http-server-tls", deploy_dir / "http-client-tls"
    write_secret_volume(server_dir, server_ca.issue(names[0], dns=names), ca=client_ca.pem)
    write_secret_volume(client_dir, client_ca.issue("envoy", client=True), ca=server_ca.pem)
    return Pki(server_ca, client_ca, server_dir, client_dir)


@dataclass
class Server:
    """The authz server: HTTPS checks on ``address``, plaintext gRPC health on ``health``."""

    proc: ManagedProcess
    address: tuple[str, int]
    health: tuple[str, int]


@pytest.fixture(scope="module")
def server(deploy_dir: Path, deploy_issuer: IssuerInstance, pki: Pki) -> Iterator[Server]:
    """`extauthz serve` as the chart runs it with transport http and tls.enabled."""
    address, health, listen = free_addresses(3)
    tls = pki.server_dir
    env = components.extauthz_env(listen=listen, issuer_url=deploy_issuer.url,
                                  audience=AUDIENCE, extra={
        "EXTAUTHZ_TRANSPORT": "http", "EXTAUTHZ_HTTP_LISTEN": f"{address[0]}:{address[1]}",
        "EXTAUTHZ_HEALTH_LISTEN": f"{health[0]}:{health[1]}",
        "EXTAUTHZ_TLS_CERT_FILE": str(tls / "tls.crt"),
        "EXTAUTHZ_TLS_KEY_FILE": str(tls / "tls.key"),
        "EXTAUTHZ_TLS_CLIENT_CA_FILE": str(tls / "ca.crt")})
    proc = ManagedProcess("extauthz", [sys.executable, "-m", "extauthz", "serve"],
                          log_path=deploy_dir / "extauthz-http-tls.log", env=env).start()
    target = f"{health[0]}:{health[1]}"
    try:
        proc.wait_ready(lambda: _health(target) == health_pb2.HealthCheckResponse.SERVING, 30,
                        f"extauthz gRPC health at {target}")
        yield Server(proc, address, health)
    finally:
        proc.stop()


def _https(config: dict[str, Any]) -> dict[str, Any]:
    """``https://`` in http_service.server_uri (envoyconfig.edit writes ``http://``)."""
    uri = envoyconfig.ext_authz_filter(config)["http_service"]["server_uri"]
    uri["uri"] = uri["uri"].replace("http://", "https://", 1)
    return config


def example_tls_block() -> dict[str, Any]:
    """The commented ``authz-tls`` block of envoy/envoy-http.yaml, uncommented."""
    text = (REPO / "envoy" / "envoy-http.yaml").read_text()
    begin = text.index("# BEGIN authz-tls")
    block = text[text.index("\n", begin) + 1:text.index("# END authz-tls")]
    lines = [line.strip()[2:] if line.strip() != "#" else "" for line in block.splitlines()]
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    parsed = yaml.safe_load("\n".join(line[indent:] for line in lines))
    assert isinstance(parsed, dict) and set(parsed) == {"transport_socket"}
    return parsed


def _write_validated(workdir: Path, config: dict[str, Any]) -> Path:
    """envoy.yaml in ``workdir``, accepted by the real ``envoy --mode validate``."""
    path = workdir / "envoy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    checked = components.validate_envoy_config(path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Deprecated" not in checked.stdout + checked.stderr
    return path


def chart_stack(workdir: Path, server: Server, pki: Pki, temporal: TemporalInstance) -> Stack:
    """Envoy from the chart rendered with transport http + tls.enabled, Secrets moved."""
    files = envoy_files(HTTP_MTLS_VALUES)
    path, addresses = localize(files, workdir, authz=server.address, upstream=temporal.address,
                               moves={ENVOY_TLS_DIR: str(pki.client_dir)},
                               http_upstream=temporal.http_address)
    config = _https(yaml.safe_load(path.read_text()))
    return _run(workdir, config, addresses, server)


def example_stack(workdir: Path, server: Server, client_dir: Path,
                  temporal: TemporalInstance) -> Stack:
    """envoy/envoy-http.yaml on free ports with its authz-tls block on (files from
    ``client_dir``)."""
    listen, admin, internal = free_addresses(3)
    addresses = {"listen": listen, "admin": admin}
    config = yaml.safe_load(envoyconfig.render(
        listen=addresses["listen"], internal_listen=internal,
        admin=addresses["admin"], authz=server.address, upstream=temporal.address,
        transport="http", http_upstream=temporal.http_address))
    block = _relocate(example_tls_block(), {ENVOY_TLS_DIR: str(client_dir)})
    envoyconfig.cluster(config, "extauthz").update(block)
    addresses["stats"] = addresses["admin"]
    return _run(workdir, _https(config), addresses, server)


def _run(workdir: Path, config: dict[str, Any], addresses: Mapping[str, tuple[str, int]],
         server: Server) -> Stack:
    workdir.mkdir(parents=True, exist_ok=True)
    path = _write_validated(workdir, config)
    envoy = components.start_envoy(
        workdir, config_text=path.read_text(), config_path=path, log_path=workdir / "envoy.log",
        admin=addresses["admin"], listen=addresses["listen"]).proc
    return Stack(envoy, server.proc, addresses["listen"], addresses["stats"],
                 addresses["admin"], server.address)


def _handshakes(stack: Stack) -> int:
    status, body = procs.http_get(
        f"http://{stack.admin[0]}:{stack.admin[1]}/stats?filter=cluster.extauthz.ssl.handshake")
    assert status == 200
    lines = [line for line in body.decode().splitlines()
             if line.startswith("cluster.extauthz.ssl.handshake:")]
    return int(lines[0].split(":")[1]) if lines else 0


@pytest.mark.parametrize("source", ["chart", "example"])
async def test_envoy_over_mtls_to_the_http_server_allows_and_denies(
        source: str, deploy_dir: Path, server: Server, pki: Pki,
        deploy_temporal: TemporalInstance, deploy_issuer: IssuerInstance) -> None:
    """Real Envoy (the chart's config, or envoy-http.yaml's authz-tls block) with a client
    certificate, over mTLS to the HTTP ext_authz server, in front of Temporal: allowed call
    passes, denied call is PERMISSION_DENIED, no token is UNAUTHENTICATED, and Envoy's TLS
    handshakes with the server succeeded."""
    workdir = deploy_dir / f"http-mtls-{source}"
    stack = (chart_stack(workdir, server, pki, deploy_temporal) if source == "chart"
             else example_stack(workdir, server, pki.client_dir, deploy_temporal))
    try:
        await _allowed_and_denied(stack, deploy_issuer)
        assert _handshakes(stack) > 0
    finally:
        stack.envoy.stop()


async def test_envoy_with_an_untrusted_client_certificate_fails_closed(
        deploy_dir: Path, server: Server, pki: Pki, deploy_temporal: TemporalInstance,
        deploy_issuer: IssuerInstance) -> None:
    """An Envoy whose client certificate is from a CA the server does not trust cannot reach
    the server: a call with a valid token is UNAVAILABLE (status_on_error), never allowed."""
    rogue_dir = deploy_dir / "http-rogue-client-tls"
    rogue = CA("rogue").issue("envoy", client=True)
    write_secret_volume(rogue_dir, Issued(rogue.cert, rogue.key, pki.server_ca.pem))
    stack = example_stack(deploy_dir / "http-mtls-rogue", server, rogue_dir, deploy_temporal)
    try:
        token = deploy_issuer.mint(sub="alice", permissions=["default:read"])
        # the SDK's connect already calls GetSystemInfo through Envoy
        # either the connect or the first call is refused: both are the refusal under test
        with pytest.raises((RPCError, RuntimeError)) as failed:
            client = await _connect(stack, token)
            await client.workflow_service.describe_namespace(
                rr.DescribeNamespaceRequest(namespace="default"), retry=False,
                timeout=RPC_TIMEOUT)
        err = failed.value
        if isinstance(err, RPCError):
            assert err.status == RPCStatusCode.UNAVAILABLE
        else:
            assert "code: Unavailable" in str(err), err
        # TLS 1.3: Envoy counts its side of the handshake as done; the server refused it
        assert "http.tls_handshake_failed" in server.proc.log_tail(400)
    finally:
        stack.envoy.stop()
