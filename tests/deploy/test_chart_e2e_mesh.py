"""The chart's mesh-identity variant run for real: Envoy from the rendered ConfigMap (client
mTLS, file-based SDS for the listener certificate and the client CA) and the authz server with
the chart's rendered ``peer_identity`` block, in front of a real Temporal dev server; a worker
holding only its certificate completes a workflow, a client without one never gets in. Both
ext_authz transports."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from helmchart import RELEASE, envoy_files, manifests, one
from support.meshpki import MeshCA, cn
from support.workflows import GreetingWorkflow, greet
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode, TLSConfig
from temporalio.worker import Worker
from test_chart_e2e import localize

from devkit import components
from devkit.components import EnvoyInstance, IssuerInstance, TemporalInstance
from extauthz.model import Reason

OIDC = {"issuerUrl": "https://login.example.com/realms/temporal", "clientId": "temporal"}
BILLING = "spiffe://cluster.local/ns/billing/sa/billing-worker"
POLICY = {"bindings": [{"name": "billing-workers",
                        "match": {"spiffe": ["spiffe://cluster.local/ns/billing/sa/*"]},
                        "roles": ["worker", "write"], "namespaces": ["default"],
                        "task_queues": ["billing-*"]}]}


@pytest.fixture(scope="module", params=["grpc", "http"])
def chart_mesh(request: pytest.FixtureRequest, deploy_dir: Path,
               deploy_temporal: TemporalInstance, deploy_issuer: IssuerInstance
               ) -> Iterator[tuple[EnvoyInstance, MeshCA, Path]]:
    """The chart's Envoy and server config (peerIdentity on, listener TLS) on loopback."""
    transport: str = request.param
    work = deploy_dir / f"chart-mesh-{transport}"
    values: dict[str, Any] = {
        "extauthz": {"oidc": OIDC, "policy": POLICY}, "transport": transport,
        "peerIdentity": {"enabled": True},
        "envoy": {"listenerTls": {"enabled": True, "secretName": "envoy-listener"}}}
    ca = MeshCA("mesh-ca")
    listener = ca.write_listener_dir(work / "listener-tls", ca.issue(
        cn("envoy"), dns=["localhost"], ips=["127.0.0.1"], server=True))
    ca.issue(cn("billing-worker"), uris=[BILLING]).write(work / "certs", "billing")
    rendered = yaml.safe_load(one(manifests(values), "ConfigMap", RELEASE)["data"]["config.yaml"])
    config = work / "config.yaml"
    policy = work / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    # the chart's peer_identity block as rendered; addresses and files are the test's
    config.write_text(yaml.safe_dump({"peer_identity": rendered["peer_identity"],
                                      "policy_file": str(policy)}))
    authz = components.start_extauthz(work, deploy_issuer.url, name="extauthz-chart-mesh",
                                      transport=transport, config_file=config)
    try:
        path, addresses = localize(envoy_files(values), work, authz=authz.address,
                                   upstream=deploy_temporal.address,
                                   moves={"/etc/envoy/listener-tls": str(listener)},
                                   http_upstream=deploy_temporal.http_address)
        checked = components.validate_envoy_config(path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        envoy = components.start_envoy(work, config_text=path.read_text(), config_path=path,
                                       log_path=work / "envoy.log", admin=addresses["admin"],
                                       listen=addresses["listen"])
        try:
            yield envoy, ca, work / "certs"
        finally:
            envoy.stop()
    finally:
        authz.proc.stop()


async def test_chart_envoy_lets_a_certificate_only_worker_run_its_workflow(
        chart_mesh: tuple[EnvoyInstance, MeshCA, Path]) -> None:
    """Through the chart's Envoy, the billing workload's certificate alone (no token) runs a
    workflow on a billing queue and is refused on another, naming its SPIFFE ID."""
    envoy, ca, certs = chart_mesh
    tls = TLSConfig(server_root_ca_cert=ca.pem, domain="localhost",
                    client_cert=(certs / "billing.crt").read_bytes(),
                    client_private_key=(certs / "billing.key").read_bytes())
    client = await Client.connect(envoy.target, namespace="default", tls=tls)
    queue = f"billing-{uuid.uuid4()}"
    async with Worker(client, task_queue=queue, workflows=[GreetingWorkflow],
                      activities=[greet]):
        assert await client.execute_workflow(
            GreetingWorkflow.run, "chart", id=f"mesh-{uuid.uuid4()}", task_queue=queue,
            execution_timeout=timedelta(seconds=60)) == "hello, chart"
    with pytest.raises(RPCError) as info:
        await client.start_workflow(GreetingWorkflow.run, "x", id=f"mesh-{uuid.uuid4()}",
                                    task_queue="payments", rpc_timeout=timedelta(seconds=10))
    assert info.value.status == RPCStatusCode.PERMISSION_DENIED
    assert BILLING in info.value.message
    assert Reason.TASK_QUEUE_DENIED.value in info.value.message


async def test_chart_envoy_refuses_a_client_without_a_certificate(
        chart_mesh: tuple[EnvoyInstance, MeshCA, Path]) -> None:
    """The chart's listener requires a client certificate: without one no call gets through."""
    envoy, ca, _ = chart_mesh
    with pytest.raises((RPCError, RuntimeError)):
        client = await Client.connect(envoy.target, namespace="default",
                                      tls=TLSConfig(server_root_ca_cert=ca.pem,
                                                    domain="localhost"))
        await client.count_workflows()
