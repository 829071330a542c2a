"""Attacks on the certificate identity through real Envoy (both transports): a certificate the
trusted CA signed whose own fields are text that, in Envoy's ``x-forwarded-client-cert``,
would read as another identity. Envoy writes ``Subject="<RFC 2253 DN>"`` (escapes kept) and
``URI=<san>``/``DNS=<san>`` unquoted, so only the certificate itself is unambiguous; each case
must name the certificate exactly as gRPC mode (the PEM) names it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from support.meshpki import cn
from support.meshstack import BILLING, LEGACY_DN, OTHER, RPC_TIMEOUT, Mesh, mesh_stack, start
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from devkit.components import IssuerInstance, TemporalInstance


@pytest.fixture(scope="module")
def mesh(e2e_dir: Path, temporal: TemporalInstance, issuer: IssuerInstance,
         transport: str) -> Iterator[Mesh]:
    """The mesh stack, plus certificates whose fields carry forged XFCC text."""
    with mesh_stack(e2e_dir / f"mesh-forgery-{transport}", temporal, issuer, transport) as m:
        extra = {
            # one CN, "legacy-worker,O=acme": RFC 4514 text CN=legacy-worker\,O=acme
            "comma-cn": m.ca.issue(cn("legacy-worker,O=acme")),
            # a DNS SAN / a non-SPIFFE URI SAN carrying ";URI=<billing SPIFFE ID>"
            "dns-inject": m.ca.issue(cn("intruder"), dns=[f"intruder;URI={BILLING}"]),
            "uri-inject": m.ca.issue(cn("intruder"),
                                     uris=[f"https://intruder.example/x;URI={BILLING}"]),
        }
        for name, leaf in extra.items():
            leaf.write(m.certs, name)
        m.leaves.update(extra)
        yield m


async def test_escaped_comma_in_a_cn_does_not_fake_a_subject_dn(mesh: Mesh) -> None:
    """A certificate whose one CN is ``legacy-worker,O=acme`` is not ``CN=legacy-worker,O=acme``
    (the x509_subject binding): it may not read."""
    client = await mesh.client("comma-cn")
    with pytest.raises(RPCError) as info:
        await client.workflow_service.describe_namespace(
            rr.DescribeNamespaceRequest(namespace="default"), retry=False, timeout=RPC_TIMEOUT)
    assert info.value.status in (RPCStatusCode.PERMISSION_DENIED,
                                 RPCStatusCode.UNAUTHENTICATED)
    assert f"{LEGACY_DN}'" not in info.value.message


@pytest.mark.parametrize("who", ["dns-inject", "uri-inject"])
async def test_a_san_carrying_xfcc_text_does_not_fake_a_spiffe_id(mesh: Mesh, who: str) -> None:
    """A DNS or URI SAN that contains ``;URI=spiffe://...billing...`` never names the billing
    workload: the start on a billing queue is refused."""
    client = await mesh.client(who)
    with pytest.raises(RPCError) as info:
        await start(client, "billing-q")
    assert info.value.status in (RPCStatusCode.PERMISSION_DENIED,
                                 RPCStatusCode.UNAUTHENTICATED)


async def test_a_client_sent_xfcc_with_the_billing_certificate_changes_nothing(
        mesh: Mesh) -> None:
    """A certificate is public: a client connecting with the 'other' workload's certificate
    sends an x-forwarded-client-cert carrying the billing certificate's PEM (Cert=). Envoy
    replaces it (SANITIZE_SET) and gRPC mode never reads it: the call is the other workload's."""
    forged = (f'Cert="{quote(mesh.leaves["billing"].cert.decode())}";'
              f'Subject="CN=billing-worker";URI={BILLING}')
    client = await Client.connect(mesh.envoy.target, namespace="default",
                                  tls=mesh.tls("other"),
                                  rpc_metadata={"x-forwarded-client-cert": forged})
    with pytest.raises(RPCError) as info:
        await start(client, "billing-q")
    assert info.value.status == RPCStatusCode.PERMISSION_DENIED
    assert OTHER in info.value.message
