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

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from support.meshstack import (
    BILLING,
    FORGED,
    LEGACY_DN,
    OTHER,
    RPC_TIMEOUT,
    Mesh,
    mesh_stack,
    start,
)
from support.workflows import GreetingWorkflow, greet
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from devkit.components import EnvoyInstance, IssuerInstance, TemporalInstance
from extauthz.model import Reason


@pytest.fixture(scope="module")
def mesh(e2e_dir: Path, temporal: TemporalInstance, issuer: IssuerInstance,
         transport: str) -> Iterator[Mesh]:
    """Envoy (mTLS variant) → extauthz (peer_identity on, the policy) → Temporal."""
    with mesh_stack(e2e_dir / f"mesh-identity-{transport}", temporal, issuer, transport) as m:
        yield m


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
        await start(client, "payments-q")
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
        await start(client, "billing-q")
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
        await start(client, "billing-q")
    assert info.value.status == RPCStatusCode.UNAUTHENTICATED
    assert Reason.UNTRUSTED_PEER.value in info.value.message


async def test_revoked_trust_domain_is_denied_even_with_a_valid_token(
        mesh: Mesh, issuer: IssuerInstance) -> None:
    """A good token does not rescue a refused certificate."""
    token = issuer.mint(sub="alice", permissions=["default:write"])
    client = await mesh.client("revoked", token)
    with pytest.raises(RPCError) as info:
        await start(client, "billing-q")
    assert info.value.status == RPCStatusCode.UNAUTHENTICATED
    assert Reason.UNTRUSTED_PEER.value in info.value.message


async def test_client_sent_xfcc_and_envoy_headers_are_never_trusted(mesh: Mesh) -> None:
    """With another workload's certificate, headers claiming the billing identity change
    nothing: the start on a billing queue is refused as the real certificate's identity."""
    client = await Client.connect(mesh.envoy.target, namespace="default", tls=mesh.tls("other"),
                                  rpc_metadata=dict(FORGED))
    with pytest.raises(RPCError) as info:
        await start(client, "billing-q")
    assert info.value.status == RPCStatusCode.PERMISSION_DENIED
    assert OTHER in info.value.message
    assert BILLING not in info.value.message


async def test_client_sent_xfcc_without_a_certificate_is_not_a_credential(mesh: Mesh) -> None:
    """Through an Envoy without client TLS, a forged x-forwarded-client-cert is no credential:
    UNAUTHENTICATED (missing_token)."""
    client = await Client.connect(mesh.plain.target, namespace="default", tls=False,
                                  rpc_metadata=dict(FORGED))
    with pytest.raises(RPCError) as info:
        await start(client, "billing-q")
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
        await start(client, "billing-q")
    assert info.value.status == RPCStatusCode.PERMISSION_DENIED
    assert LEGACY_DN in info.value.message


async def test_token_and_certificate_together(mesh: Mesh, issuer: IssuerInstance) -> None:
    """Both credentials: the token names the principal and the certificate rides along. The
    ops binding needs the ops group AND an ops workload certificate; either alone is refused;
    a bad token never falls back to the certificate."""
    ops = issuer.mint(sub="olga", groups=["ops"])
    await start(await mesh.client("ops", ops), "ops-q")  # both: allowed
    for who in ("billing", "legacy"):  # the right token, the wrong certificate
        with pytest.raises(RPCError) as info:
            await start(await mesh.client(who, ops), "ops-q")
        assert info.value.status == RPCStatusCode.PERMISSION_DENIED
        assert "olga" in info.value.message
    with pytest.raises(RPCError) as info:  # the right certificate, no token
        await start(await mesh.client("ops"), "ops-q")
    assert info.value.status == RPCStatusCode.PERMISSION_DENIED
    with pytest.raises(RPCError) as info:  # a bad token with a good certificate
        await start(await mesh.client("billing", "not.a.jwt"), "billing-q")
    assert info.value.status == RPCStatusCode.UNAUTHENTICATED
