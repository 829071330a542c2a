"""The mesh-identity e2e stack: certificates for every case, the policy and config, the mTLS
Envoy variant and a plain one in front of one authz server, and the clients that call through
them (tests/e2e/test_mesh_*.py)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography.x509.oid import NameOID
from temporalio.api.common.v1 import message_pb2 as common_pb2
from temporalio.api.taskqueue.v1 import message_pb2 as taskqueue_pb2
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.client import Client
from temporalio.service import TLSConfig

from devkit import envoyconfig
from devkit.components import (
    EnvoyInstance,
    ExtauthzInstance,
    IssuerInstance,
    TemporalInstance,
    start_envoy,
    start_extauthz,
)
from devkit.ports import free_addresses
from support.meshpki import Leaf, MeshCA, RawAnswer, cn, raw_grpc
from support.workflows import GreetingWorkflow

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


FORGED = (
    ("x-forwarded-client-cert", f'By={TD}/ns/x/sa/y;URI={BILLING};Subject="{LEGACY_DN}"'),
    ("x-envoy-peer-metadata-id", f"sidecar~10.0.0.1~billing-worker.billing~{BILLING}"),
    ("x-envoy-client-cert", BILLING),
)


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


def start_mtls_envoy(work: Path, authz: ExtauthzInstance, temporal: TemporalInstance,
                     transport: str, tls_dir: Path, name: str) -> EnvoyInstance:
    """The mTLS variant (devkit.envoyconfig --mtls) in front of ``authz`` and ``temporal``."""
    ext, internal, admin, http_upstream = free_addresses(4)
    text = envoyconfig.render(
        listen=ext, internal_listen=internal, admin=admin, authz=authz.address,
        upstream=temporal.address, http_upstream=temporal.http_address or http_upstream,
        transport=transport, mtls=True, tls_dir=tls_dir)
    return start_envoy(work, config_text=text, listen=ext, internal_listen=internal,
                       admin=admin, config_path=work / f"{name}.yaml")


@contextlib.contextmanager
def mesh_stack(work: Path, temporal: TemporalInstance, issuer: IssuerInstance,
               transport: str) -> Iterator[Mesh]:
    """Envoy (mTLS variant) and a plain Envoy → extauthz (peer_identity on, POLICY) →
    Temporal, with every certificate the tests present written under ``work``."""
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
        envoy = start_mtls_envoy(work, authz, temporal, transport, listener, "envoy-mtls")
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


def start_request(queue: str, namespace: str = "default") -> rr.StartWorkflowExecutionRequest:
    """A StartWorkflowExecutionRequest of GreetingWorkflow on ``queue``."""
    return rr.StartWorkflowExecutionRequest(
        namespace=namespace, workflow_id=f"mesh-{uuid.uuid4()}",
        workflow_type=common_pb2.WorkflowType(name="GreetingWorkflow"),
        task_queue=taskqueue_pb2.TaskQueue(name=queue), request_id=str(uuid.uuid4()))


async def start(client: Client, queue: str) -> None:
    """Start a GreetingWorkflow on ``queue`` (no worker runs it)."""
    await client.start_workflow(GreetingWorkflow.run, "x", id=f"mesh-{uuid.uuid4()}",
                                task_queue=queue, rpc_timeout=RPC_TIMEOUT)
