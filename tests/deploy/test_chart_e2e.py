"""The chart's Envoy config, end to end: extracted from the rendered ConfigMap, validated by the
real ``envoy --mode validate``, then run (addresses and mount paths moved to loopback and a temp
dir) in front of a real Temporal dev server with the real authz server: an allowed call passes, a
denied one is PERMISSION_DENIED, the chart's `helm test` script passes. With ``tls.enabled`` the
same runs over mTLS between Envoy and the server, which refuses clients without a valid
certificate, and both sides pick up rotated certificates without a restart. With
``transport: http`` Envoy asks the server over its HTTP ext_authz protocol (the server started
with the Deployment's transport settings, ready by the readiness probe's path)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helmchart import CHART, RELEASE, envoy_files, manifests, one
from pki import CA, Issued, write_secret_volume
from support.workflows import GreetingWorkflow
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from devkit import components, envoyconfig, procs
from devkit.components import AUDIENCE, IssuerInstance, TemporalInstance
from devkit.ports import LOOPBACK, free_addresses
from devkit.procs import ManagedProcess, wait_until
from extauthz.model import Reason

RPC_TIMEOUT = timedelta(seconds=10)
OIDC = {"issuerUrl": "https://login.example.com/realms/temporal", "clientId": "temporal"}
MTLS_VALUES = {"extauthz": {"oidc": OIDC},
               "tls": {"enabled": True, "serverSecret": "s", "clientSecret": "c"}}
HTTP_VALUES = {"transport": "http", "extauthz": {"oidc": OIDC}}


@dataclass
class Stack:
    """Envoy from the chart's ConfigMap → extauthz → Temporal, all on loopback."""

    envoy: ManagedProcess
    extauthz: ManagedProcess
    listen: tuple[str, int]
    stats: tuple[str, int]
    admin: tuple[str, int]
    authz: tuple[str, int]

    @property
    def target(self) -> str:
        """Envoy's client-facing listener."""
        return f"{self.listen[0]}:{self.listen[1]}"


def _relocate(node: Any, moves: Mapping[str, str]) -> Any:
    """Every string starting with a key of ``moves`` gets that prefix replaced (mount paths)."""
    if isinstance(node, str):
        for old, new in moves.items():
            if node.startswith(old):
                return new + node[len(old):]
        return node
    if isinstance(node, dict):
        return {k: _relocate(v, moves) for k, v in node.items()}
    if isinstance(node, list):
        return [_relocate(v, moves) for v in node]
    return node


def _static(config: dict[str, Any], name: str) -> None:
    cluster = envoyconfig.cluster(config, name)
    cluster.pop("cluster_type", None)
    cluster["type"] = "STATIC"


def localize(files: Mapping[str, str], workdir: Path, *, authz: tuple[str, int],
             upstream: tuple[str, int], moves: Mapping[str, str],
             http_upstream: tuple[str, int] | None = None) -> tuple[Path, dict[str, Any]]:
    """Write the ConfigMap's files under ``workdir/config`` with loopback addresses and the
    Secret mount paths moved (``moves``); return envoy.yaml's path and the addresses used.
    ``http_upstream``: the frontend's HTTP API, when the chart renders that cluster."""
    config_dir = workdir / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    moves = {"/etc/envoy/config/": f"{config_dir}/", **moves}
    listen, stats, admin = free_addresses(3)
    addresses = {"listen": listen, "stats": stats, "admin": admin}
    config = envoyconfig.edit(yaml.safe_load(files["envoy.yaml"]), listen=addresses["listen"],
                              admin=addresses["admin"], authz=authz, upstream=upstream)
    envoyconfig.listener(config, "stats")["address"] = {"socket_address": {
        "address": addresses["stats"][0], "port_value": addresses["stats"][1]}}
    # the stats listener proxies to the admin interface, which moved too
    admin_cluster = envoyconfig.cluster(config, "envoy_admin")
    admin_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] = {
        "socket_address": {"address": addresses["admin"][0], "port_value": addresses["admin"][1]}}
    for name in ("extauthz", "temporal_frontend"):
        _static(config, name)
    clusters = [c["name"] for c in config["static_resources"]["clusters"]]
    if http_upstream is not None and envoyconfig.HTTP_UPSTREAM_CLUSTER in clusters:
        config = envoyconfig.edit(config, http_upstream=http_upstream)
        _static(config, envoyconfig.HTTP_UPSTREAM_CLUSTER)
    config = _relocate(config, moves)
    for name, text in files.items():
        if name != "envoy.yaml":
            (config_dir / name).write_text(yaml.safe_dump(_relocate(yaml.safe_load(text), moves)))
    path = config_dir / "envoy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, addresses


def _health(target: str, creds: grpc.ChannelCredentials | None = None,
            options: tuple[tuple[str, Any], ...] = ()) -> int:
    channel = (grpc.secure_channel(target, creds, options) if creds is not None
               else grpc.insecure_channel(target))
    with channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="envoy.service.auth.v3.Authorization"),
            timeout=5)
        return int(reply.status)


@dataclass
class HttpServer:
    """How the chart runs the server with transport: http (from the rendered Deployment)."""

    transport: str
    health_path: str


def http_server(values: Mapping[str, Any]) -> HttpServer:
    """EXTAUTHZ_TRANSPORT and the readiness probe's path of the rendered server Deployment."""
    container = one(manifests(values), "Deployment", RELEASE)["spec"]["template"]["spec"][
        "containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    return HttpServer(env["EXTAUTHZ_TRANSPORT"],
                      container["readinessProbe"]["httpGet"]["path"])


def start_stack(workdir: Path, files: Mapping[str, str], temporal: TemporalInstance,
                issuer: IssuerInstance, *, server_tls: Path | None = None,
                client_tls: Path | None = None, http: HttpServer | None = None) -> Stack:
    """The authz server (TLS from ``server_tls`` when given, ready by its plaintext health port;
    with ``http``, listening for Envoy's HTTP protocol and ready by the probe's path) and Envoy
    from the chart's files."""
    assert http is None or server_tls is None, "the HTTP transport is plaintext"
    authz, grpc_listen, health = free_addresses(3)
    extra: dict[str, str] = {}
    ready_target = f"{authz[0]}:{authz[1]}"
    listen = authz
    if http is not None:
        # the gRPC `listen` is not opened with transport http; Envoy calls the HTTP port
        listen = grpc_listen
        extra = {"EXTAUTHZ_TRANSPORT": http.transport,
                 "EXTAUTHZ_HTTP_LISTEN": f"{authz[0]}:{authz[1]}"}
        ready_target = f"http://{authz[0]}:{authz[1]}{http.health_path}"
    if server_tls is not None:
        extra = {"EXTAUTHZ_TLS_CERT_FILE": str(server_tls / "tls.crt"),
                 "EXTAUTHZ_TLS_KEY_FILE": str(server_tls / "tls.key"),
                 "EXTAUTHZ_TLS_CLIENT_CA_FILE": str(server_tls / "ca.crt"),
                 "EXTAUTHZ_HEALTH_LISTEN": f"{health[0]}:{health[1]}"}
        ready_target = f"{health[0]}:{health[1]}"

    def ready() -> bool:
        if http is not None:
            return procs.http_get(ready_target)[0] == 200
        return bool(_health(ready_target) == health_pb2.HealthCheckResponse.SERVING)

    env = components.extauthz_env(listen=listen, issuer_url=issuer.url, audience=AUDIENCE,
                                  extra=extra)
    server = ManagedProcess("extauthz", [sys.executable, "-m", "extauthz", "serve"],
                            log_path=workdir / "extauthz.log", env=env).start()
    try:
        server.wait_ready(ready, 30, f"extauthz health at {ready_target}")
        moves = {"/etc/envoy/authz-tls": str(client_tls)} if client_tls is not None else {}
        path, addresses = localize(files, workdir, authz=authz, upstream=temporal.address,
                                   moves=moves, http_upstream=temporal.http_address)
        checked = components.validate_envoy_config(path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        envoy = components.start_envoy(
            workdir, config_text=path.read_text(), config_path=path,
            log_path=workdir / "envoy.log", admin=addresses["admin"],
            listen=addresses["listen"]).proc
    except BaseException:
        server.stop()
        raise
    return Stack(envoy, server, addresses["listen"], addresses["stats"], addresses["admin"],
                 authz)


async def _connect(stack: Stack, token: str | None, namespace: str = "default") -> Client:
    return await Client.connect(stack.target, namespace=namespace, api_key=token, tls=False)


async def _allowed_and_denied(stack: Stack, issuer: IssuerInstance) -> None:
    """A `default:read` token may describe its namespace; starting a workflow is
    PERMISSION_DENIED; no token is UNAUTHENTICATED."""
    client = await _connect(stack, issuer.mint(sub="alice", permissions=["default:read"]))
    described = await client.workflow_service.describe_namespace(
        rr.DescribeNamespaceRequest(namespace="default"), retry=False, timeout=RPC_TIMEOUT)
    assert described.namespace_info.name == "default"
    with pytest.raises(RPCError) as denied:
        await client.start_workflow(GreetingWorkflow.run, "x", id=f"wf-{uuid.uuid4()}",
                                    task_queue="nobody", rpc_timeout=RPC_TIMEOUT)
    assert denied.value.status == RPCStatusCode.PERMISSION_DENIED
    assert Reason.PERMISSION_DENIED.value in denied.value.message
    anonymous = await _connect(stack, None)
    with pytest.raises(RPCError) as unauthenticated:
        await anonymous.workflow_service.describe_namespace(
            rr.DescribeNamespaceRequest(namespace="default"), retry=False, timeout=RPC_TIMEOUT)
    assert unauthenticated.value.status == RPCStatusCode.UNAUTHENTICATED


def _helm_test(stack: Stack, frontend: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TARGET=stack.target, TLS="false", FRONTEND_ADDRESSES=frontend,
               DIAL_TIMEOUT="2")
    return subprocess.run([sys.executable, str(CHART / "files" / "helm-test.py")], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


# ---- plaintext (default values) --------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_stack(deploy_dir: Path, deploy_temporal: TemporalInstance,
                deploy_issuer: IssuerInstance) -> Iterator[Stack]:
    """Envoy from the chart rendered with default values (+ an issuer) → extauthz → Temporal."""
    workdir = deploy_dir / "plain"
    files = envoy_files({"extauthz": {"oidc": OIDC}})
    stack = start_stack(workdir, files, deploy_temporal, deploy_issuer)
    try:
        yield stack
    finally:
        stack.envoy.stop()
        stack.extauthz.stop()


def _validate(path: Path) -> None:
    result = components.validate_envoy_config(path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Deprecated" not in output, output


def test_rendered_envoy_config_validates(tmp_path: Path) -> None:
    """`envoy --mode validate` accepts envoy.yaml exactly as the chart renders it for the
    default values (DNS names of the Services) and for transport: http, and with every TLS
    option on once its mount paths exist (SDS files and certificates in a temp dir); no
    deprecated fields in any."""
    path = tmp_path / "envoy.yaml"
    path.write_text(envoy_files(None)["envoy.yaml"])
    _validate(path)
    http_path = tmp_path / "envoy-http.yaml"
    http_path.write_text(envoy_files({"transport": "http"})["envoy.yaml"])
    _validate(http_path)

    values = {**MTLS_VALUES,
              "envoy": {"listenerTls": {"enabled": True, "secretName": "edge"}},
              "temporal": {"frontend": {"tls": {"enabled": True, "secretName": "f",
                                                "clientCertificate": True}}}}
    ca = CA("validate")
    moves = {}
    for mount in ("authz-tls", "frontend-tls", "listener-tls"):
        write_secret_volume(tmp_path / mount, ca.issue(mount, dns=(mount,)))
        moves[f"/etc/envoy/{mount}"] = str(tmp_path / mount)
    files = envoy_files(values)
    assert {"sds-authz-client-cert.yaml", "sds-authz-server-ca.yaml", "sds-frontend-ca.yaml",
            "sds-frontend-client-cert.yaml", "sds-listener-cert.yaml"} <= set(files)
    relocated, _ = localize(files, tmp_path / "tls", authz=(LOOPBACK, 1), upstream=(LOOPBACK, 2),
                            moves=moves)
    _validate(relocated)


async def test_chart_envoy_allows_and_denies(plain_stack: Stack,
                                             deploy_issuer: IssuerInstance) -> None:
    """Through the chart's Envoy: allowed call passes, denied call is PERMISSION_DENIED."""
    await _allowed_and_denied(plain_stack, deploy_issuer)


def test_helm_test_script_passes_through_the_chart_envoy(plain_stack: Stack) -> None:
    """The `helm test` script (files/helm-test.py) passes against the chart's Envoy: health is
    SERVING without a token, ListNamespaces without one is UNAUTHENTICATED."""
    result = _helm_test(plain_stack)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "UNAUTHENTICATED" in result.stdout


def test_helm_test_script_passes_when_the_frontend_refuses_direct_connections(
        plain_stack: Stack) -> None:
    """With the frontend's ports closed to the test pod (here: nothing listens, so refused),
    the script passes: the bypass dial, an allowed GetSystemInfo answered by Temporal through
    Envoy, and an UNAUTHENTICATED ListNamespaces."""
    closed = ",".join(f"{h}:{p}" for h, p in free_addresses(2))
    result = _helm_test(plain_stack, closed)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("is closed to this pod (refused)") == 2, result.stdout
    assert "GetSystemInfo (allowed without a token) is answered" in result.stdout


def test_helm_test_script_fails_when_the_frontend_is_reachable_directly(
        plain_stack: Stack, deploy_temporal: TemporalInstance) -> None:
    """Through Envoy everything is right, but the real Temporal frontend accepts a direct
    connection from the test pod: the script fails and says how to close it."""
    host, port = deploy_temporal.address
    closed = free_addresses(1)[0]
    result = _helm_test(plain_stack, f"{host}:{port},{closed[0]}:{closed[1]}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"frontend at {host}:{port} accepts connections" in result.stdout
    assert "temporal.frontend.networkPolicy" in result.stdout
    assert "UNAUTHENTICATED" in result.stdout  # the through-Envoy half still ran


def test_helm_test_script_fails_when_authorization_is_bypassed(
        deploy_temporal: TemporalInstance) -> None:
    """Pointed straight at the frontend (no Envoy, no authz), the `helm test` script fails and
    says that authorization is not enforced."""
    env = dict(os.environ, TARGET=deploy_temporal.target, TLS="false")
    result = subprocess.run([sys.executable, str(CHART / "files" / "helm-test.py")], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "not enforced" in result.stdout


def test_stats_port_serves_only_metrics_and_readiness(plain_stack: Stack) -> None:
    """The stats listener answers GET /stats/prometheus (Envoy's ext_authz counters included)
    and /ready, and nothing else of the admin interface."""
    base = f"http://{plain_stack.stats[0]}:{plain_stack.stats[1]}"
    status, body = procs.http_get(f"{base}/stats/prometheus")
    assert status == 200
    assert b"ext_authz" in body
    assert procs.http_get(f"{base}/ready")[0] == 200
    for path in ("/config_dump", "/clusters", "/certs", "/stats", "/"):
        assert procs.http_get(f"{base}{path}")[0] == 404, path


# ---- transport: http (Envoy's HTTP ext_authz protocol) ---------------------------------------


@pytest.fixture(scope="module")
def http_stack(deploy_dir: Path, deploy_temporal: TemporalInstance,
               deploy_issuer: IssuerInstance) -> Iterator[Stack]:
    """Envoy from the chart rendered with transport: http → (HTTP/1.1) → extauthz → Temporal."""
    stack = start_stack(deploy_dir / "http", envoy_files(HTTP_VALUES), deploy_temporal,
                        deploy_issuer, http=http_server(HTTP_VALUES))
    try:
        yield stack
    finally:
        stack.envoy.stop()
        stack.extauthz.stop()


def _authz_cluster_stats(stack: Stack) -> dict[str, int]:
    status, body = procs.http_get(
        f"http://{stack.admin[0]}:{stack.admin[1]}/stats?filter=^cluster\\.extauthz\\.")
    assert status == 200
    stats: dict[str, int] = {}
    for line in body.decode().splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            stats[name] = int(value)
    return stats


async def test_chart_envoy_over_http_allows_and_denies(http_stack: Stack,
                                                       deploy_issuer: IssuerInstance) -> None:
    """transport: http, through the chart's Envoy: the server runs with the Deployment's
    EXTAUTHZ_TRANSPORT and is ready by the readiness probe's path (/healthz); allowed call
    passes, denied call is PERMISSION_DENIED with the reason, no token is UNAUTHENTICATED; the
    checks went over HTTP/1.1 to the HTTP port and no ext_authz call failed."""
    assert http_server(HTTP_VALUES) == HttpServer("http", "/healthz")
    await _allowed_and_denied(http_stack, deploy_issuer)
    stats = _authz_cluster_stats(http_stack)
    assert stats["cluster.extauthz.upstream_cx_http1_total"] > 0, stats
    assert stats.get("cluster.extauthz.upstream_cx_http2_total", 0) == 0, stats
    assert stats["cluster.extauthz.upstream_rq_200"] > 0, stats
    assert stats["cluster.extauthz.upstream_rq_403"] > 0, stats
    assert stats.get("cluster.extauthz.upstream_rq_5xx", 0) == 0, stats
    # Envoy's /healthz health checks found the server healthy
    assert stats["cluster.extauthz.health_check.healthy"] >= 1, stats


def test_helm_test_script_passes_through_the_http_chart_envoy(http_stack: Stack) -> None:
    """The `helm test` script passes against the chart's Envoy in transport: http too."""
    result = _helm_test(http_stack)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "UNAUTHENTICATED" in result.stdout


# ---- mTLS between Envoy and the server ---------------------------------------------------------


@dataclass
class Pki:
    """Two CAs (one for the server, one for the client), their leaves and Secret directories."""

    server_ca: CA
    client_ca: CA
    server: Issued
    client: Issued
    server_dir: Path
    client_dir: Path
    server_name: str


def _server_name(files: Mapping[str, str]) -> str:
    tls = envoyconfig.cluster(yaml.safe_load(files["envoy.yaml"]), "extauthz")["transport_socket"]
    return str(tls["typed_config"]["sni"])


@pytest.fixture(scope="module")
def pki(deploy_dir: Path) -> Pki:
    """Secrets as cert-manager would lay them out: the server's (tls.crt/key + ca.crt = the CA
    of the clients) and Envoy's (tls.crt/key + ca.crt = the CA of the server)."""
    name = _server_name(envoy_files(MTLS_VALUES))
    server_ca, client_ca = CA("authz-server-ca"), CA("authz-client-ca")
    server = server_ca.issue(name, dns=(name,))
    client = client_ca.issue("envoy", client=True)
    server_dir, client_dir = deploy_dir / "server-tls", deploy_dir / "client-tls"
    write_secret_volume(server_dir, server, ca=client_ca.pem)
    write_secret_volume(client_dir, client, ca=server_ca.pem)
    return Pki(server_ca, client_ca, server, client, server_dir, client_dir, name)


@pytest.fixture(scope="module")
def mtls_stack(deploy_dir: Path, deploy_temporal: TemporalInstance,
               deploy_issuer: IssuerInstance, pki: Pki) -> Iterator[Stack]:
    """Envoy from the chart rendered with tls.enabled → (mTLS) → extauthz → Temporal."""
    stack = start_stack(deploy_dir / "mtls", envoy_files(MTLS_VALUES), deploy_temporal,
                        deploy_issuer, server_tls=pki.server_dir, client_tls=pki.client_dir)
    try:
        yield stack
    finally:
        stack.envoy.stop()
        stack.extauthz.stop()


async def test_chart_envoy_over_mtls_allows_and_denies(mtls_stack: Stack,
                                                       deploy_issuer: IssuerInstance) -> None:
    """Through the chart's Envoy with a client certificate, over mTLS to the server: allowed
    call passes, denied call is PERMISSION_DENIED, and Envoy's TLS handshakes succeeded."""
    await _allowed_and_denied(mtls_stack, deploy_issuer)
    status, body = procs.http_get(
        f"http://{mtls_stack.admin[0]}:{mtls_stack.admin[1]}/stats?filter=cluster.extauthz.ssl")
    assert status == 200
    handshakes = [line for line in body.decode().splitlines()
                  if line.startswith("cluster.extauthz.ssl.handshake:")]
    assert handshakes and int(handshakes[0].split(":")[1]) > 0, body


def _check_call(stack: Stack, creds: grpc.ChannelCredentials | None, name: str) -> grpc.StatusCode:
    target = f"{stack.authz[0]}:{stack.authz[1]}"
    try:
        _health(target, creds, (("grpc.ssl_target_name_override", name),))
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_server_refuses_clients_without_a_valid_certificate(mtls_stack: Stack, pki: Pki) -> None:
    """Straight to the server's Check port: a client with the client CA's certificate gets an
    answer; without a certificate, with one from another CA, or in plaintext it is refused."""
    name = pki.server_name
    good = grpc.ssl_channel_credentials(pki.server_ca.pem, pki.client.key, pki.client.cert)
    assert _check_call(mtls_stack, good, name) == grpc.StatusCode.OK
    no_cert = grpc.ssl_channel_credentials(pki.server_ca.pem)
    assert _check_call(mtls_stack, no_cert, name) == grpc.StatusCode.UNAVAILABLE
    rogue = CA("rogue").issue("envoy", client=True)
    forged = grpc.ssl_channel_credentials(pki.server_ca.pem, rogue.key, rogue.cert)
    assert _check_call(mtls_stack, forged, name) == grpc.StatusCode.UNAVAILABLE
    assert _check_call(mtls_stack, None, name) == grpc.StatusCode.UNAVAILABLE
    # the server's certificate is signed by the server CA, not by the client CA
    wrong_root = grpc.ssl_channel_credentials(pki.client_ca.pem, pki.client.key, pki.client.cert)
    assert _check_call(mtls_stack, wrong_root, name) == grpc.StatusCode.UNAVAILABLE


def _served_serial(stack: Stack, pki: Pki) -> int:
    """The serial of the certificate the server presents in a new handshake."""
    ctx = ssl.create_default_context(cadata=pki.server_ca.pem.decode())
    ctx.set_alpn_protocols(["h2"])
    client_dir = pki.client_dir
    ctx.load_cert_chain(client_dir / "tls.crt", client_dir / "tls.key")
    with socket.create_connection(stack.authz, timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=pki.server_name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def _envoy_client_serials(stack: Stack) -> set[str]:
    status, body = procs.http_get(f"http://{stack.admin[0]}:{stack.admin[1]}/certs")
    assert status == 200
    serials: set[str] = set()
    for entry in json.loads(body).get("certificates", []):
        for cert in entry.get("cert_chain", []):
            serials.add(str(cert.get("serial_number", "")).lower().lstrip("0"))
    return serials


async def test_both_sides_follow_certificate_rotation(mtls_stack: Stack, pki: Pki,
                                                      deploy_issuer: IssuerInstance) -> None:
    """cert-manager renews both Secrets in place (kubelet's ..data swap): the server presents
    the new certificate on the next handshake, Envoy loads its new client certificate (SDS file
    watch), and calls keep working, without restarting either."""
    before = _served_serial(mtls_stack, pki)
    assert before == x509.load_pem_x509_certificate(pki.server.cert).serial_number
    renewed_server = pki.server_ca.issue(pki.server_name, dns=(pki.server_name,))
    write_secret_volume(pki.server_dir, renewed_server, ca=pki.client_ca.pem)
    renewed_client = pki.client_ca.issue("envoy", client=True)
    write_secret_volume(pki.client_dir, renewed_client, ca=pki.server_ca.pem)
    want_server = x509.load_pem_x509_certificate(renewed_server.cert).serial_number
    want_client = format(x509.load_pem_x509_certificate(renewed_client.cert).serial_number,
                         "x").lstrip("0")
    wait_until(lambda: _served_serial(mtls_stack, pki) == want_server, 10,
               "the server to present the renewed certificate")
    wait_until(lambda: want_client in _envoy_client_serials(mtls_stack), 15,
               "Envoy to load the renewed client certificate")
    await asyncio.sleep(0)
    await _allowed_and_denied(mtls_stack, deploy_issuer)
    assert mtls_stack.extauthz.running() and mtls_stack.envoy.running()
