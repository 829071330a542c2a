"""Istio mode, run rather than rendered: the Envoy filters istiod generates from the chart's
extensionProviders entry and AuthorizationPolicy (tests/e2e/istio/, reproduced from Istio's
ext-authz builder; each file names the source), in real Envoy, in front of the real authz
server and the real Temporal dev server, for envoyExtAuthzGrpc and envoyExtAuthzHttp: allowed,
denied, a port the policy does not name (the shadow RBAC keeps it from ext_authz), a 4 MiB
body, and the authz server down (fails closed)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.taskqueue.v1 import message_pb2 as tq
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from devkit.components import (
    EnvoyInstance,
    ExtauthzInstance,
    IssuerInstance,
    TemporalInstance,
    start_envoy,
    start_extauthz,
)
from devkit.ports import free_addresses, target

ISTIO_DIR = Path(__file__).resolve().parent / "istio"
TRANSPORTS = ("grpc", "http")
WS = "/temporal.api.workflowservice.v1.WorkflowService"
MAX_REQUEST_BYTES = 4194309  # the chart's envoy.maxRequestBytes: 4 MiB + 5 bytes of framing
# the RBAC filter's shadow counters under Istio's prefix: the CUSTOM rule (action DENY) matched
# ("denied": ext_authz runs) or not ("allowed": it is skipped)
SHADOW_MATCHED = "rbac.istio_ext_authz_.shadow_denied"
SHADOW_UNMATCHED = "rbac.istio_ext_authz_.shadow_allowed"
POLICY_PORT_SLOT = 7233  # the frontend's gRPC port in the file; the test's listener replaces it


@dataclass
class IstioStack:
    """Envoy with Istio's generated filters → the authz server → Temporal."""

    envoy: EnvoyInstance
    authz: ExtauthzInstance
    other: str  # the listener on a port the AuthorizationPolicy does not name
    transport: str

    def counter(self, suffix: str, listener: str = "inbound_0.0.0.0_7233") -> int:
        """An ext_authz or RBAC counter of a listener (0 before its first increment)."""
        return self.envoy.stats().get(f"http.{listener}.{suffix}", 0)


def render(transport: str, *, listen: tuple[str, int], other: tuple[str, int],
           admin: tuple[str, int], authz: tuple[str, int], upstream: tuple[str, int]) -> str:
    """The committed Istio-equivalent config with local addresses, edited structurally: the
    policy's port becomes the listener's, and a copy of the listener serves ``other``."""
    config: dict[str, Any] = yaml.safe_load(
        (ISTIO_DIR / f"envoy-istio-{transport}.yaml").read_text())
    config["admin"]["address"]["socket_address"] = {"address": admin[0], "port_value": admin[1]}
    resources = config["static_resources"]
    (policy_listener,) = resources["listeners"]
    policy_listener["address"]["socket_address"] = {"address": listen[0],
                                                    "port_value": listen[1]}
    hcm = policy_listener["filter_chains"][0]["filters"][0]["typed_config"]
    rbac = hcm["http_filters"][0]["typed_config"]
    (policy,) = rbac["shadow_rules"]["policies"].values()
    ports = policy["permissions"][0]["and_rules"]["rules"][0]["or_rules"]["rules"]
    assert ports[0] == {"destination_port": POLICY_PORT_SLOT}
    ports[0] = {"destination_port": listen[1]}
    copy_ = copy.deepcopy(policy_listener)
    copy_["name"] = "inbound_other"
    copy_["address"]["socket_address"] = {"address": other[0], "port_value": other[1]}
    copy_["filter_chains"][0]["filters"][0]["typed_config"]["stat_prefix"] = "inbound_other"
    resources["listeners"].append(copy_)
    for cluster in resources["clusters"]:
        address = upstream if cluster["name"].startswith("inbound|") else authz
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        endpoint["address"]["socket_address"] = {"address": address[0],
                                                 "port_value": address[1]}
    return yaml.safe_dump(config, sort_keys=False)


@contextlib.contextmanager
def istio_stack(workdir: Path, temporal: TemporalInstance, issuer: IssuerInstance,
                transport: str) -> Iterator[IstioStack]:
    """The authz server and an Envoy with Istio's filters; both stopped after."""
    authz = start_extauthz(workdir, issuer.url, name=f"extauthz-istio-{transport}",
                           transport=transport)
    try:
        listen, other, admin = free_addresses(3)
        text = render(transport, listen=listen, other=other, admin=admin,
                      authz=authz.address, upstream=temporal.address)
        envoy = start_envoy(workdir, config_text=text, admin=admin, listen=listen,
                            config_path=workdir / f"envoy-istio-{transport}.yaml")
        try:
            yield IstioStack(envoy, authz, target(other), transport)
        finally:
            envoy.stop()
    finally:
        authz.proc.stop()


@pytest.fixture(scope="module", params=TRANSPORTS)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          temporal: TemporalInstance, issuer: IssuerInstance) -> Iterator[IstioStack]:
    """One Istio-equivalent stack per provider kind (envoyExtAuthzGrpc, envoyExtAuthzHttp)."""
    workdir = tmp_path_factory.mktemp(f"istio-{request.param}")
    with istio_stack(workdir, temporal, issuer, request.param) as instance:
        yield instance


def call(target_: str, method: str, body: bytes, token: str | None = None
         ) -> tuple[grpc.StatusCode, str]:
    """One unary call with a raw body; its status and details."""
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(target_, options=[
            ("grpc.max_send_message_length", 8 * 1024 * 1024)]) as channel:
        try:
            channel.unary_unary(f"{WS}/{method}")(body, timeout=15, metadata=metadata)
        except grpc.RpcError as err:
            return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def describe(namespace: str = "default") -> bytes:
    return rr.DescribeNamespaceRequest(namespace=namespace).SerializeToString()


def test_allowed_call_reaches_temporal(stack: IstioStack, issuer: IssuerInstance) -> None:
    """A reader describes `default` through Istio's filters: ext_authz asked, OK from Temporal."""
    before = stack.counter("ext_authz.ok")
    token = issuer.mint(sub="alice", permissions=["default:read"])
    assert call(stack.envoy.target, "DescribeNamespace", describe(), token) == (
        grpc.StatusCode.OK, "")
    assert stack.counter("ext_authz.ok") == before + 1
    # the shadow RBAC matched the policy's port: that is what enabled ext_authz
    assert stack.counter(SHADOW_MATCHED) >= 1


async def test_temporal_sdk_client_through_istio_filters(stack: IstioStack,
                                                         issuer: IssuerInstance) -> None:
    """The Temporal SDK (its bearer token as RPC metadata, plaintext as the sidecar hop is)
    lists workflows through them; without a role it gets PERMISSION_DENIED with the reason."""
    reader = issuer.mint(sub="alice", permissions=["default:read"])
    client = await Client.connect(stack.envoy.target, namespace="default", tls=False,
                                  rpc_metadata={"authorization": f"Bearer {reader}"})
    await client.workflow_service.list_workflow_executions(
        rr.ListWorkflowExecutionsRequest(namespace="default"), retry=False,
        timeout=timedelta(seconds=10))
    eve = issuer.mint(sub="eve", permissions=["x:read"])
    stranger = await Client.connect(stack.envoy.target, namespace="default", tls=False,
                                    rpc_metadata={"authorization": f"Bearer {eve}"})
    with pytest.raises(RPCError) as info:
        await stranger.workflow_service.list_workflow_executions(
            rr.ListWorkflowExecutionsRequest(namespace="default"), retry=False,
            timeout=timedelta(seconds=10))
    assert info.value.status == RPCStatusCode.PERMISSION_DENIED
    assert info.value.message.startswith('permission_denied: subject "eve"')


def test_denied_calls_carry_the_reason(stack: IstioStack, issuer: IssuerInstance) -> None:
    """No role: PERMISSION_DENIED with the server's reason; no token: UNAUTHENTICATED."""
    token = issuer.mint(sub="mallory", permissions=["other:read"])
    code, details = call(stack.envoy.target, "DescribeNamespace", describe(), token)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details.startswith('permission_denied: subject "mallory"')
    code, details = call(stack.envoy.target, "DescribeNamespace", describe())
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert details.startswith("missing_token")
    code, _ = call(stack.envoy.target, "DescribeNamespace//", describe(), token)
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_a_port_the_policy_does_not_name_never_reaches_ext_authz(
        stack: IstioStack, issuer: IssuerInstance) -> None:
    """The shadow RBAC selects: on a port outside `istio.ports` the call goes through without
    a check, so every client port of the frontend must be listed (the chart lists 7233, 7243)."""
    checks = stack.counter("ext_authz.ok") + stack.counter("ext_authz.denied")
    assert call(stack.other, "DescribeNamespace", describe()) == (grpc.StatusCode.OK, "")
    assert stack.counter("ext_authz.ok", "inbound_other") == 0
    assert stack.counter("ext_authz.denied", "inbound_other") == 0
    # the shadow DENY rule did not match there (shadow "allowed"): ext_authz stayed off
    assert stack.counter(SHADOW_UNMATCHED, "inbound_other") >= 1
    assert stack.counter(SHADOW_MATCHED, "inbound_other") == 0
    assert stack.counter("ext_authz.ok") + stack.counter("ext_authz.denied") == checks


def start_body(size: int) -> bytes:
    """A StartWorkflowExecutionRequest whose serialized size is exactly ``size`` bytes."""
    def build(n: int) -> bytes:
        return rr.StartWorkflowExecutionRequest(
            namespace="default", workflow_id="istio-large", request_id="istio-large",
            workflow_type=common.WorkflowType(name="Large"),
            task_queue=tq.TaskQueue(name="istio-large"),
            input=common.Payloads(payloads=[common.Payload(data=b"x" * n)]),
        ).SerializeToString()
    n = size - (len(build(size)) - size)
    body = build(n)
    while len(body) != size:  # varint lengths may shift by a byte
        n += size - len(body)
        body = build(n)
    return body


def test_a_4_mib_body_is_checked_whole(stack: IstioStack, issuer: IssuerInstance) -> None:
    """A StartWorkflowExecution at the 4 MiB limit reaches the server whole and is allowed (what
    Temporal then says about its size is Temporal's); one byte more is refused, never allowed."""
    token = issuer.mint(sub="alice", permissions=["default:write"])
    before = stack.counter("ext_authz.ok")
    code, details = call(stack.envoy.target, "StartWorkflowExecution",
                         start_body(MAX_REQUEST_BYTES - 5), token)
    assert stack.counter("ext_authz.ok") == before + 1, (code, details)
    assert code not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
                        grpc.StatusCode.UNAVAILABLE), (code, details)
    ok = stack.counter("ext_authz.ok")
    code, details = call(stack.envoy.target, "StartWorkflowExecution",
                         start_body(MAX_REQUEST_BYTES - 4), token)
    assert code != grpc.StatusCode.OK, details
    assert stack.counter("ext_authz.ok") == ok


def test_authz_down_fails_closed(tmp_path: Path, temporal: TemporalInstance,
                                 issuer: IssuerInstance) -> None:
    """With the authz server stopped, Istio's filters answer UNAVAILABLE (statusOnError 503,
    failOpen false) for a valid token: never an allow; both provider kinds."""
    token = issuer.mint(sub="alice", permissions=["default:read"])
    for transport in TRANSPORTS:
        with istio_stack(tmp_path / transport, temporal, issuer, transport) as down:
            assert call(down.envoy.target, "DescribeNamespace", describe(), token)[0] == (
                grpc.StatusCode.OK)
            down.authz.proc.stop()
            code, _ = call(down.envoy.target, "DescribeNamespace", describe(), token)
            assert code == grpc.StatusCode.UNAVAILABLE, transport
            assert down.counter("ext_authz.error") >= 1
            assert down.counter("ext_authz.ok") == 1
