"""Mesh identity end to end, the edges: split-view bodies for a certificate-only caller,
Temporal's HTTP API on the mTLS listener, and a certificate from a listener the server does not
list. Real Envoy (the mTLS variant), the real authz server and Temporal dev server, certificates
generated here; both ext_authz transports."""

from __future__ import annotations

import gzip
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.meshstack import (
    BILLING,
    CONFIG,
    FORGED,
    OTHER,
    Mesh,
    mesh_stack,
    start,
    start_mtls_envoy,
    start_request,
)
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from devkit.components import IssuerInstance, TemporalInstance, start_extauthz
from devkit.grpcframe import frame
from extauthz.model import Reason


@pytest.fixture(scope="module")
def mesh(e2e_dir: Path, temporal: TemporalInstance, issuer: IssuerInstance,
         transport: str) -> Iterator[Mesh]:
    """Envoy (mTLS variant) → extauthz (peer_identity on, the policy) → Temporal."""
    with mesh_stack(e2e_dir / f"mesh-edges-{transport}", temporal, issuer, transport) as m:
        yield m


# ---- split views for a certificate-only caller ---------------------------------------------


def test_raw_certificate_only_start_is_allowed(mesh: Mesh) -> None:
    """The raw caller below is authenticated by its certificate alone: a plain start on its
    own queue is allowed (so the denials below are about the split view)."""
    answer = mesh.raw("billing", frame(start_request("billing-raw").SerializeToString()))
    assert answer.status == 0, answer


def _field1(value: str) -> bytes:
    data = value.encode()
    return b"\x0a" + bytes([len(data)]) + data


def test_namespace_twice_is_judged_on_the_last(mesh: Mesh, temporal: TemporalInstance) -> None:
    """`default` then `payroll` in one start is judged as payroll (last one wins), and refused."""
    body = start_request("billing-split").SerializeToString() + _field1("payroll")
    assert rr.StartWorkflowExecutionRequest.FromString(body).namespace == "payroll"
    answer = mesh.raw("billing", frame(body))
    assert answer.status == RPCStatusCode.PERMISSION_DENIED.value, answer
    assert "payroll" in answer.message


def test_header_namespace_never_overrides_the_body(mesh: Mesh) -> None:
    """`temporal-namespace: default` with a body naming payroll is judged on the body."""
    body = start_request("billing-hdr", namespace="payroll").SerializeToString()
    answer = mesh.raw("billing", frame(body), headers=(("temporal-namespace", "default"),))
    assert answer.status == RPCStatusCode.PERMISSION_DENIED.value, answer


def test_every_gzip_member_is_judged(mesh: Mesh) -> None:
    """A gzip body of two members, the second naming payroll, is judged as payroll."""
    first = start_request("billing-gz").SerializeToString()
    body = gzip.compress(first) + gzip.compress(_field1("payroll"))
    answer = mesh.raw("billing", frame(body, flag=1), headers=(("grpc-encoding", "gzip"),))
    assert answer.status == RPCStatusCode.PERMISSION_DENIED.value, answer


def test_over_limit_body_is_never_allowed(mesh: Mesh) -> None:
    """A message over Envoy's 4 MiB + 5 buffer is never let through on a certificate."""
    request = start_request("billing-big")
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
    `external` listener verified is no credential (missing_token), even with a client-sent
    label naming the listed listener; the fixture's server, listing `external`, is what lets
    every other test's certificate through."""
    config = mesh.work / "config-other-listener.yaml"
    config.write_text(CONFIG.format(policy=mesh.work / "policy.yaml", listener="mesh-internal"),
                      encoding="utf-8")
    authz = start_extauthz(mesh.work, issuer.url, name="extauthz-mesh-other",
                           transport=mesh.transport, config_file=config)
    try:
        envoy = start_mtls_envoy(mesh.work, authz, temporal, mesh.transport, mesh.listener_dir,
                                 "envoy-mtls-other")
        try:
            # a client-sent label changes nothing: Envoy's own label is the only one read
            client = await Client.connect(envoy.target, namespace="default",
                                          tls=mesh.tls("billing"),
                                          rpc_metadata={"x-extauthz-listener": "mesh-internal"})
            with pytest.raises(RPCError) as info:
                await start(client, "billing-q")
            assert info.value.status == RPCStatusCode.UNAUTHENTICATED
            assert Reason.MISSING_TOKEN.value in info.value.message
        finally:
            envoy.stop()
    finally:
        authz.proc.stop()
