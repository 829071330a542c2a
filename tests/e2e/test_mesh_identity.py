"""Mesh identity end to end: workloads authenticated by the client certificate Envoy verified.

Real parts only: the mTLS variant of the project's Envoy config (``envoy/envoy-mtls.yaml``,
``envoy/envoy-http-mtls.yaml``, rendered by ``devkit.envoyconfig --mtls``), the authz server
with ``peer_identity`` on and a policy naming workloads by SPIFFE ID and subject DN, the real
Temporal dev server, the ``temporalio`` SDK connecting with client certificates generated here
(``cryptography``, SPIFFE URI SANs), and tokens from the dev issuer. Every test runs with
Envoy's gRPC ext_authz protocol (``attributes.source`` with ``include_peer_certificate``) and
its HTTP one (the ``x-forwarded-client-cert`` Envoy sets with SANITIZE_SET).
"""

from __future__ import annotations

import gzip
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.x509.oid import NameOID
from support.meshpki import Leaf, MeshCA, RawAnswer, cn, raw_grpc
from support.workflows import GreetingWorkflow, greet
from temporalio.api.common.v1 import message_pb2 as common_pb2
from temporalio.api.taskqueue.v1 import message_pb2 as taskqueue_pb2
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode, TLSConfig
from temporalio.worker import Worker

from devkit import envoyconfig
from devkit.components import (
    EnvoyInstance,
    ExtauthzInstance,
    IssuerInstance,
    TemporalInstance,
    start_envoy,
    start_extauthz,
)
from devkit.grpcframe import frame
from devkit.ports import free_addresses
from extauthz.model import Reason

TD = "spiffe://cluster.local"
BILLING = f"{TD}/ns/billing/sa/billing-worker"
OTHER = f"{TD}/ns/other/sa/other-worker"
OPS = f"{TD}/ns/ops/sa/ops-tool"
REVOKED = "spiffe://revoked.example/ns/billing/sa/billing-worker"
LEGACY_DN = "CN=legacy-worker,O=acme"
RPC_TIMEOUT = timedelta(seconds=10)
START = "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution"

POLICY = """\
version: 1
profile: extended
bindings:
  - name: billing-workers           # workers by SPIFFE ID: their own queues only
    match: {spiffe: ["spiffe://cluster.local/ns/billing/sa/*"]}
    roles: [worker, write]
    namespaces: [default]
    task_queues: ["billing-*"]
  - name: legacy-readers            # a certificate without a SPIFFE ID, by subject DN
    match: {x509_subject: ["CN=legacy-worker,O=acme"]}
    roles: [read]
    namespaces: [default]
  - name: ops-with-their-tool       # a token AND a certificate: both must hold
    match: {groups: [ops], spiffe: ["spiffe://cluster.local/ns/ops/sa/*"]}
    roles: [write]
    namespaces: [default]
"""

CONFIG = """\
policy_file: {policy}
peer_identity:
  enabled: true
  fields: [spiffe, subject]
  trust_domains: [cluster.local]
  listeners: [{listener}]
"""


@dataclass
class Mesh:
    """The mTLS stack of one transport, and its certificates on disk."""

    envoy: EnvoyInstance  # the mTLS variant
    plain: EnvoyInstance  # the plain variant in front of the same authz server
    authz: ExtauthzInstance
    certs: Path
    ca: MeshCA
    leaves: dict[str, Leaf]
    work: Path
    listener_dir: Path
    transport: str

    def tls(self, who: str | None) -> TLSConfig:
        """The SDK's TLS settings presenting ``who``'s certificate (None: no certificate)."""
        leaf = self.leaves[who] if who else None
        return TLSConfig(server_root_ca_cert=self.ca.pem, domain="localhost",
                         client_cert=leaf.cert if leaf else None,
                         client_private_key=leaf.key if leaf else None)

    async def client(self, who: str | None, token: str | None = None) -> Client:
        """An SDK client through the mTLS listener."""
        return await Client.connect(self.envoy.target, namespace="default", api_key=token,
                                    tls=self.tls(who))

    def raw(self, who: str, body: bytes, headers: tuple[tuple[str, str], ...] = ()
            ) -> RawAnswer:
        """A raw StartWorkflowExecution through the mTLS listener as ``who``."""
        return raw_grpc(self.envoy.listen, START, body, ca=self.certs / "ca.pem",
                        cert=self.certs / f"{who}.crt", key=self.certs / f"{who}.key",
                        headers=headers)


@pytest.fixture(scope="module")
def mesh(e2e_dir: Path, temporal: TemporalInstance, issuer: IssuerInstance,
         transport: str) -> Iterator[Mesh]:
    """Envoy (mTLS variant) → extauthz (peer_identity on, the policy above) → Temporal."""
    work = e2e_dir / f"mesh-{transport}"
    certs = work / "certs"
    ca, foreign = MeshCA("mesh-ca"), MeshCA("another-ca")
    leaves = {
        "billing": ca.issue(cn("billing-worker"), uris=[BILLING]),
        "other": ca.issue(cn("other-worker"), uris=[OTHER]),
        "ops": ca.issue(cn("ops-tool"), uris=[OPS]),
        "revoked": ca.issue(cn("billing-worker"), uris=[REVOKED]),
        # the usual order, most general first: RFC 4514 text reverses it
        "legacy": ca.issue([(NameOID.ORGANIZATION_NAME, "acme"),
                            (NameOID.COMMON_NAME, "legacy-worker")]),
        "foreign": foreign.issue(cn("billing-worker"), uris=[BILLING]),
    }
    for name, leaf in leaves.items():
        leaf.write(certs, name)
    (certs / "ca.pem").write_bytes(ca.pem)
    listener = ca.write_listener_dir(work / "listener", ca.issue(
        cn("envoy"), dns=["localhost"], ips=["127.0.0.1"], server=True))
    policy = work / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    config = work / "config.yaml"
    config.write_text(CONFIG.format(policy=policy, listener="external"), encoding="utf-8")
    authz = start_extauthz(work, issuer.url, name="extauthz-mesh", transport=transport,
                           config_file=config)
    try:
        ext, internal, admin, http_upstream = free_addresses(4)
        text = envoyconfig.render(
            listen=ext, internal_listen=internal, admin=admin, authz=authz.address,
            upstream=temporal.address, http_upstream=temporal.http_address or http_upstream,
            transport=transport, mtls=True, tls_dir=listener)
        envoy = start_envoy(work, config_text=text, listen=ext, internal_listen=internal,
                            admin=admin, config_path=work / "envoy-mtls.yaml")
        try:
            plain = start_envoy(work, authz=authz.address, upstream=temporal.address,
                                transport=transport)
            try:
                yield Mesh(envoy, plain, authz, certs, ca, leaves, work, listener, transport)
            finally:
                plain.stop()
        finally:
            envoy.stop()
    finally:
        authz.proc.stop()


def _start_request(queue: str, namespace: str = "default") -> rr.StartWorkflowExecutionRequest:
    return rr.StartWorkflowExecutionRequest(
        namespace=namespace, workflow_id=f"mesh-{uuid.uuid4()}",
        workflow_type=common_pb2.WorkflowType(name="GreetingWorkflow"),
        task_queue=taskqueue_pb2.TaskQueue(name=queue), request_id=str(uuid.uuid4()))


async def _start(client: Client, queue: str) -> None:
    await client.start_workflow(GreetingWorkflow.run, "x", id=f"mesh-{uuid.uuid4()}",
                                task_queue=queue, rpc_timeout=RPC_TIMEOUT)


async def test_certificate_only_worker_completes_a_workflow_on_its_queue(mesh: Mesh) -> None:
    """A worker and a client holding only the billing workload's certificate (no token) run a
    workflow with an activity to completion on a billing-* queue."""
    client = await mesh.client("billing")
    queue = f"billing-{uuid.uuid4()}"
    async with Worker(client, task_queue=queue, workflows=[GreetingWorkflow],
                      activities=[greet]):
        result = await client.execute_workflow(
            GreetingWorkflow.run, "mesh", id=f"mesh-{uuid.uuid4()}", task_queue=queue,
            execution_timeout=timedelta(seconds=60))
    assert result == "hello, mesh"


async def test_certificate_only_worker_is_refused_elsewhere(mesh: Mesh) -> None:
    """The billing certificate may not start on another queue, nor touch another namespace,
    and the denial names the workload's SPIFFE ID."""
    client = await mesh.client("billing")
    with pytest.raises(RPCError) as info:
        await _start(client, "payments-q")
    assert info.value.status == RPCStatusCode.PERMISSION_DENIED
    assert BILLING in info.value.message
    with pytest.raises(RPCError) as info:
        await client.workflow_service.describe_namespace(
            rr.DescribeNamespaceRequest(namespace="payroll"), retry=False, timeout=RPC_TIMEOUT)
    assert info.value.status == RPCStatusCode.PERMISSION_DENIED


async def test_another_workload_of_the_trust_domain_gets_nothing(mesh: Mesh) -> None:
    """A certificate of the trusted domain that no binding names is authenticated but may do
    nothing: PERMISSION_DENIED, not UNAUTHENTICATED."""
    client = await mesh.client("other")
    with pytest.raises(RPCError) as info:
        await _start(client, "billing-q")
    assert info.value.status == RPCStatusCode.PERMISSION_DENIED
    assert OTHER in info.value.message


async def test_no_certificate_and_no_token_is_unauthenticated(mesh: Mesh) -> None:
    """Through an Envoy that does not ask for a certificate, a call with neither a certificate
    nor a token is UNAUTHENTICATED, and the message says both ways in."""
    client = await Client.connect(mesh.plain.target, namespace="default", tls=False)
    with pytest.raises(RPCError) as info:
        await client.workflow_service.describe_namespace(
            rr.DescribeNamespaceRequest(namespace="default"), retry=False, timeout=RPC_TIMEOUT)
    assert info.value.status == RPCStatusCode.UNAUTHENTICATED
    assert Reason.MISSING_TOKEN.value in info.value.message
    assert "client certificate" in info.value.message


async def test_no_certificate_is_refused_by_envoys_handshake(mesh: Mesh) -> None:
    """On the mTLS listener a client without a certificate never gets a call through."""
    before = _handshake_failures(mesh.envoy)
    with pytest.raises((RPCError, RuntimeError)):
        client = await mesh.client(None)
        await client.workflow_service.describe_namespace(
            rr.DescribeNamespaceRequest(namespace="default"), retry=False, timeout=RPC_TIMEOUT)
    assert _handshake_failures(mesh.envoy) > before


def _handshake_failures(envoy: EnvoyInstance) -> int:
    return sum(v for k, v in envoy.stats().items() if k.startswith("listener.") and (
        k.endswith(("ssl.fail_verify_no_cert", "ssl.connection_error"))))


async def test_certificate_from_another_ca_is_refused_by_envoy(mesh: Mesh) -> None:
    """A certificate with the billing SPIFFE ID but signed by another CA fails Envoy's
    handshake: no call, and Envoy counts a verification failure."""
    with pytest.raises((RPCError, RuntimeError)):
        client = await mesh.client("foreign")
        await client.workflow_service.describe_namespace(
            rr.DescribeNamespaceRequest(namespace="default"), retry=False, timeout=RPC_TIMEOUT)
    stats = mesh.envoy.stats()
    assert sum(v for k, v in stats.items()
               if k.startswith("listener.") and k.endswith("ssl.fail_verify_error")) > 0


async def test_revoked_trust_domain_is_denied(mesh: Mesh) -> None:
    """A certificate the trusted CA signed, but for a trust domain not in
    peer_identity.trust_domains, is UNAUTHENTICATED (untrusted_peer), token or not."""
    client = await mesh.client("revoked")
    with pytest.raises(RPCError) as info:
        await _start(client, "billing-q")
    assert info.value.status == RPCStatusCode.UNAUTHENTICATED
    assert Reason.UNTRUSTED_PEER.value in info.value.message


async def test_revoked_trust_domain_is_denied_even_with_a_valid_token(
        mesh: Mesh, issuer: IssuerInstance) -> None:
    """A good token does not rescue a refused certificate."""
    token = issuer.mint(sub="alice", permissions=["default:write"])
    client = await mesh.client("revoked", token)
    with pytest.raises(RPCError) as info:
        await _start(client, "billing-q")
    assert info.value.status == RPCStatusCode.UNAUTHENTICATED
    assert Reason.UNTRUSTED_PEER.value in info.value.message


FORGED = (
    ("x-forwarded-client-cert", f"By={TD}/ns/x/sa/y;URI={BILLING};Subject=\"{LEGACY_DN}\""),
    ("x-envoy-peer-metadata-id", f"sidecar~10.0.0.1~billing-worker.billing~{BILLING}"),
    ("x-envoy-client-cert", BILLING),
)


async def test_client_sent_xfcc_and_envoy_headers_are_never_trusted(mesh: Mesh) -> None:
    """With another workload's certificate, headers claiming the billing identity change
    nothing: the start on a billing queue is refused as the real certificate's identity."""
    client = await Client.connect(mesh.envoy.target, namespace="default", tls=mesh.tls("other"),
                                  rpc_metadata=dict(FORGED))
    with pytest.raises(RPCError) as info:
        await _start(client, "billing-q")
    assert info.value.status == RPCStatusCode.PERMISSION_DENIED
    assert OTHER in info.value.message
    assert BILLING not in info.value.message


async def test_client_sent_xfcc_without_a_certificate_is_not_a_credential(mesh: Mesh) -> None:
    """Through an Envoy without client TLS, a forged x-forwarded-client-cert is no credential:
    UNAUTHENTICATED (missing_token)."""
    client = await Client.connect(mesh.plain.target, namespace="default", tls=False,
                                  rpc_metadata=dict(FORGED))
    with pytest.raises(RPCError) as info:
        await _start(client, "billing-q")
    assert info.value.status == RPCStatusCode.UNAUTHENTICATED
    assert Reason.MISSING_TOKEN.value in info.value.message


async def test_subject_dn_names_a_certificate_without_spiffe_id(mesh: Mesh) -> None:
    """A certificate with no URI SAN is named by its subject DN (fields: [spiffe, subject]):
    the x509_subject binding lets it read, not write, in both transports (Envoy's DN text and
    ours agree)."""
    client = await mesh.client("legacy")
    described = await client.workflow_service.describe_namespace(
        rr.DescribeNamespaceRequest(namespace="default"), retry=False, timeout=RPC_TIMEOUT)
    assert described.namespace_info.name == "default"
    with pytest.raises(RPCError) as info:
        await _start(client, "billing-q")
    assert info.value.status == RPCStatusCode.PERMISSION_DENIED
    assert LEGACY_DN in info.value.message


async def test_token_and_certificate_together(mesh: Mesh, issuer: IssuerInstance) -> None:
    """Both credentials: the token names the principal and the certificate rides along. The
    ops binding needs the ops group AND an ops workload certificate; either alone is refused;
    a bad token never falls back to the certificate."""
    ops = issuer.mint(sub="olga", groups=["ops"])
    await _start(await mesh.client("ops", ops), "ops-q")  # both: allowed
    for who in ("billing", "legacy"):  # the right token, the wrong certificate
        with pytest.raises(RPCError) as info:
            await _start(await mesh.client(who, ops), "ops-q")
        assert info.value.status == RPCStatusCode.PERMISSION_DENIED
        assert "olga" in info.value.message
    with pytest.raises(RPCError) as info:  # the right certificate, no token
        await _start(await mesh.client("ops"), "ops-q")
    assert info.value.status == RPCStatusCode.PERMISSION_DENIED
    with pytest.raises(RPCError) as info:  # a bad token with a good certificate
        await _start(await mesh.client("billing", "not.a.jwt"), "billing-q")
    assert info.value.status == RPCStatusCode.UNAUTHENTICATED


# ---- split views for a certificate-only caller ---------------------------------------------


def test_raw_certificate_only_start_is_allowed(mesh: Mesh) -> None:
    """The raw caller below is authenticated by its certificate alone: a plain start on its
    own queue is allowed (so the denials below are about the split view)."""
    answer = mesh.raw("billing", frame(_start_request("billing-raw").SerializeToString()))
    assert answer.status == 0, answer


def _field1(value: str) -> bytes:
    data = value.encode()
    return b"\x0a" + bytes([len(data)]) + data


def test_namespace_twice_is_judged_on_the_last(mesh: Mesh, temporal: TemporalInstance) -> None:
    """`default` then `payroll` in one start is judged as payroll (last one wins), and refused."""
    body = _start_request("billing-split").SerializeToString() + _field1("payroll")
    assert rr.StartWorkflowExecutionRequest.FromString(body).namespace == "payroll"
    answer = mesh.raw("billing", frame(body))
    assert answer.status == RPCStatusCode.PERMISSION_DENIED.value, answer
    assert "payroll" in answer.message


def test_header_namespace_never_overrides_the_body(mesh: Mesh) -> None:
    """`temporal-namespace: default` with a body naming payroll is judged on the body."""
    body = _start_request("billing-hdr", namespace="payroll").SerializeToString()
    answer = mesh.raw("billing", frame(body), headers=(("temporal-namespace", "default"),))
    assert answer.status == RPCStatusCode.PERMISSION_DENIED.value, answer


def test_every_gzip_member_is_judged(mesh: Mesh) -> None:
    """A gzip body of two members, the second naming payroll, is judged as payroll."""
    first = _start_request("billing-gz").SerializeToString()
    body = gzip.compress(first) + gzip.compress(_field1("payroll"))
    answer = mesh.raw("billing", frame(body, flag=1), headers=(("grpc-encoding", "gzip"),))
    assert answer.status == RPCStatusCode.PERMISSION_DENIED.value, answer


def test_over_limit_body_is_never_allowed(mesh: Mesh) -> None:
    """A message over Envoy's 4 MiB + 5 buffer is never let through on a certificate."""
    request = _start_request("billing-big")
    request.identity = "x" * (4 * 1024 * 1024 + 64)
    answer = mesh.raw("billing", frame(request.SerializeToString()))
    assert answer.status not in (0, None), answer


# ---- Temporal's HTTP API on the same mTLS listener -----------------------------------------


def _https(mesh: Mesh, who: str, forged: bool = False) -> httpx.Client:
    headers = dict(FORGED) if forged else {}
    return httpx.Client(base_url=f"https://localhost:{mesh.envoy.listen[1]}",
                        verify=ssl_context(mesh, who), headers=headers, timeout=10)


def ssl_context(mesh: Mesh, who: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(mesh.certs / "ca.pem"))
    context.load_cert_chain(str(mesh.certs / f"{who}.crt"), str(mesh.certs / f"{who}.key"))
    return context


def test_http_api_takes_the_certificate_too(mesh: Mesh) -> None:
    """A GET of Temporal's HTTP API with the billing certificate and no token is allowed in its
    namespace and refused in payroll (403, with the SPIFFE ID); another workload's certificate
    with headers claiming the billing identity is refused."""
    with _https(mesh, "billing") as client:
        ok = client.get("/api/v1/namespaces/default")
        assert ok.status_code == 200, ok.text
        assert ok.json()["namespaceInfo"]["name"] == "default"
        refused = client.get("/api/v1/namespaces/payroll")
        assert refused.status_code == 403
        assert BILLING in refused.text
    with _https(mesh, "other", forged=True) as client:
        forged = client.get("/api/v1/namespaces/default")
        assert forged.status_code == 403
        assert OTHER in forged.text


async def test_a_certificate_counts_only_from_a_listed_listener(
        mesh: Mesh, temporal: TemporalInstance, issuer: IssuerInstance) -> None:
    """With peer_identity.listeners naming another listener, the certificate this Envoy's
    `external` listener verified is no credential (missing_token); the fixture's server,
    listing `external`, is what lets every other test's certificate through."""
    config = mesh.work / "config-other-listener.yaml"
    config.write_text(CONFIG.format(policy=mesh.work / "policy.yaml", listener="mesh-internal"),
                      encoding="utf-8")
    authz = start_extauthz(mesh.work, issuer.url, name="extauthz-mesh-other",
                           transport=mesh.transport, config_file=config)
    try:
        ext, internal, admin, http_upstream = free_addresses(4)
        text = envoyconfig.render(
            listen=ext, internal_listen=internal, admin=admin, authz=authz.address,
            upstream=temporal.address, http_upstream=temporal.http_address or http_upstream,
            transport=mesh.transport, mtls=True, tls_dir=mesh.listener_dir)
        envoy = start_envoy(mesh.work, config_text=text, listen=ext, internal_listen=internal,
                            admin=admin, config_path=mesh.work / "envoy-mtls-other.yaml")
        try:
            client = await Client.connect(envoy.target, namespace="default",
                                          tls=mesh.tls("billing"))
            with pytest.raises(RPCError) as info:
                await _start(client, "billing-q")
            assert info.value.status == RPCStatusCode.UNAUTHENTICATED
            assert Reason.MISSING_TOKEN.value in info.value.message
        finally:
            envoy.stop()
    finally:
        authz.proc.stop()
