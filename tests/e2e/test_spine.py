"""The spine, end to end: Temporal SDK and CLI → real Envoy → the real authz server (verifying
tokens from the dev issuer) → a real Temporal dev server. Every test runs with Envoy's gRPC
ext_authz protocol (envoy/envoy.yaml) and with its HTTP one (envoy/envoy-http.yaml)."""

from __future__ import annotations

import signal
import subprocess
import uuid
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from support.fakes import RecordingUpstream
from support.workflows import GreetingWorkflow, greet
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from devkit.components import (
    EnvoyInstance,
    ExtauthzInstance,
    IssuerInstance,
    TemporalInstance,
    start_envoy,
    start_extauthz,
)
from devkit.procs import find_binary
from extauthz.model import Reason

DESCRIBE_NAMESPACE = "/temporal.api.workflowservice.v1.WorkflowService/DescribeNamespace"
GET_SYSTEM_INFO = "/temporal.api.workflowservice.v1.WorkflowService/GetSystemInfo"
RPC_TIMEOUT = timedelta(seconds=10)


async def _connect(envoy: EnvoyInstance, token: str | None, namespace: str = "default") -> Client:
    # api_key alone would switch TLS on; the loopback listener is h2c
    return await Client.connect(envoy.target, namespace=namespace, api_key=token, tls=False)


async def _describe(client: Client, namespace: str) -> rr.DescribeNamespaceResponse:
    return await client.workflow_service.describe_namespace(
        rr.DescribeNamespaceRequest(namespace=namespace), retry=False, timeout=RPC_TIMEOUT
    )


async def test_health_check_needs_no_token(envoy: EnvoyInstance) -> None:
    """The gRPC health check passes through Envoy without a token (the one exemption)."""
    client = await _connect(envoy, None)
    assert await client.service_client.check_health(timeout=RPC_TIMEOUT)


async def test_worker_and_client_through_envoy_complete_a_workflow(
    envoy: EnvoyInstance, issuer: IssuerInstance
) -> None:
    """A worker and a client, both through Envoy with a `default:write` token, run a workflow
    with an activity to completion."""
    token = issuer.mint(sub="svc-greeter", permissions=["default:write"])
    client = await _connect(envoy, token)
    task_queue = f"greet-{uuid.uuid4()}"
    async with Worker(
        client, task_queue=task_queue, workflows=[GreetingWorkflow], activities=[greet]
    ):
        result = await client.execute_workflow(
            GreetingWorkflow.run,
            "envoy",
            id=f"wf-{uuid.uuid4()}",
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=60),
        )
    assert result == "hello, envoy"


async def test_read_token_can_describe_but_not_start(
    envoy: EnvoyInstance, issuer: IssuerInstance
) -> None:
    """`default:read` may describe the namespace and list workflows, but starting one is
    PERMISSION_DENIED with the reason in the message."""
    client = await _connect(envoy, issuer.mint(sub="alice", permissions=["default:read"]))
    described = await _describe(client, "default")
    assert described.namespace_info.name == "default"
    await client.workflow_service.list_workflow_executions(
        rr.ListWorkflowExecutionsRequest(namespace="default"), retry=False, timeout=RPC_TIMEOUT
    )
    with pytest.raises(RPCError) as info:
        await client.start_workflow(
            GreetingWorkflow.run, "x", id=f"wf-{uuid.uuid4()}", task_queue="nobody",
            rpc_timeout=RPC_TIMEOUT,
        )
    assert info.value.status == RPCStatusCode.PERMISSION_DENIED
    assert Reason.PERMISSION_DENIED.value in info.value.message


async def test_no_token_is_unauthenticated(envoy: EnvoyInstance) -> None:
    """Without a token, a namespace call is UNAUTHENTICATED with the reason in the message."""
    client = await _connect(envoy, None)
    with pytest.raises(RPCError) as info:
        await _describe(client, "default")
    assert info.value.status == RPCStatusCode.UNAUTHENTICATED
    assert Reason.MISSING_TOKEN.value in info.value.message


async def test_garbage_token_is_unauthenticated(envoy: EnvoyInstance) -> None:
    """A token that is not a valid JWT from the issuer is UNAUTHENTICATED."""
    client = await _connect(envoy, "not.a.jwt")
    with pytest.raises(RPCError) as info:
        await _describe(client, "default")
    assert info.value.status == RPCStatusCode.UNAUTHENTICATED


async def test_other_namespace_is_permission_denied(
    envoy: EnvoyInstance, issuer: IssuerInstance
) -> None:
    """`payroll:write` works on payroll and is PERMISSION_DENIED, with the reason, on other."""
    client = await _connect(
        envoy, issuer.mint(sub="bob", permissions=["payroll:write"]), namespace="payroll"
    )
    assert (await _describe(client, "payroll")).namespace_info.name == "payroll"
    with pytest.raises(RPCError) as info:
        await _describe(client, "other")
    assert info.value.status == RPCStatusCode.PERMISSION_DENIED
    assert Reason.PERMISSION_DENIED.value in info.value.message


def _raw_describe(envoy: EnvoyInstance, token: str, body: bytes,
                  metadata: tuple[tuple[str, str], ...] = ()) -> rr.DescribeNamespaceResponse:
    with grpc.insecure_channel(envoy.target) as channel:
        call = channel.unary_unary(
            DESCRIBE_NAMESPACE, response_deserializer=rr.DescribeNamespaceResponse.FromString
        )
        response: rr.DescribeNamespaceResponse = call(
            body, timeout=10, metadata=(("authorization", f"Bearer {token}"), *metadata)
        )
        return response


def _field1(value: str) -> bytes:
    data = value.encode()
    assert len(data) < 128
    return b"\x0a" + bytes([len(data)]) + data


def test_namespace_sent_twice_is_judged_on_the_last(
    envoy: EnvoyInstance, issuer: IssuerInstance
) -> None:
    """Protobuf is last-one-wins: `payroll` then `other` is judged (and denied) as `other`;
    `other` then `payroll` is allowed and Temporal indeed answers for payroll."""
    token = issuer.mint(sub="carol", permissions=["payroll:read"])
    payroll_then_other = rr.DescribeNamespaceRequest(namespace="payroll").SerializeToString()
    payroll_then_other += _field1("other")
    assert rr.DescribeNamespaceRequest.FromString(payroll_then_other).namespace == "other"
    with pytest.raises(grpc.RpcError) as info:
        _raw_describe(envoy, token, payroll_then_other)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED

    other_then_payroll = _field1("other") + _field1("payroll")
    assert _raw_describe(envoy, token, other_then_payroll).namespace_info.name == "payroll"


def test_temporal_namespace_header_is_ignored(
    envoy: EnvoyInstance, issuer: IssuerInstance
) -> None:
    """The `temporal-namespace` header does not decide anything: the body's namespace does."""
    token = issuer.mint(sub="dave", permissions=["payroll:read"])
    body = rr.DescribeNamespaceRequest(namespace="other").SerializeToString()
    with pytest.raises(grpc.RpcError) as info:
        _raw_describe(envoy, token, body, (("temporal-namespace", "payroll"),))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_stopped_authz_server_is_unavailable_never_allowed(
    e2e_dir: Path, temporal: TemporalInstance, issuer: IssuerInstance, transport: str
) -> None:
    """When the authz server stops (SIGTERM → exit 0), calls through Envoy fail UNAVAILABLE
    and none is allowed."""
    authz: ExtauthzInstance = start_extauthz(e2e_dir, issuer.url, name="extauthz-stopped",
                                             transport=transport)
    envoy = start_envoy(e2e_dir, authz=authz.address, upstream=temporal.address,
                        transport=transport)
    try:
        client = await _connect(envoy, issuer.mint(sub="erin", permissions=["default:write"]))
        assert (await _describe(client, "default")).namespace_info.name == "default"

        allowed_before = envoy.stats()["http.external.ext_authz.extauthz.ok"]
        authz.proc.signal(signal.SIGTERM)
        assert authz.proc.wait(timeout=30) == 0

        for _ in range(5):
            with pytest.raises(RPCError) as info:
                await _describe(client, "default")
            assert info.value.status == RPCStatusCode.UNAVAILABLE
        assert envoy.stats()["http.external.ext_authz.extauthz.ok"] == allowed_before
    finally:
        envoy.stop()
        authz.proc.stop()


def _cli(envoy: EnvoyInstance, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_binary("temporal"), *args, "--address", envoy.target, "--api-key", token,
         "--tls=false", "--command-timeout", "20s"],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_temporal_cli_through_envoy(envoy: EnvoyInstance, issuer: IssuerInstance) -> None:
    """The `temporal` CLI with `--api-key` (as the stack's printed examples use it) is allowed
    with a read token on its namespace and denied on another."""
    token = issuer.mint(sub="frank", permissions=["default:read"])
    allowed = _cli(envoy, token, "workflow", "list", "--namespace", "default")
    assert allowed.returncode == 0, allowed.stderr
    denied = _cli(envoy, token, "workflow", "list", "--namespace", "payroll")
    assert denied.returncode != 0
    assert "PermissionDenied" in denied.stderr or "permission" in denied.stderr.lower()


def test_identity_headers_reach_the_upstream_and_forged_ones_do_not(
    e2e_dir: Path, extauthz: ExtauthzInstance, issuer: IssuerInstance,
    upstream: RecordingUpstream,
) -> None:
    """With the real server deciding, the upstream gets the verified identity headers (subject,
    issuer, kind) and none of the client's forged copies; an always-allowed call without a
    token carries no identity at all."""
    envoy = start_envoy(e2e_dir, authz=extauthz.address, upstream=upstream.address,
                        transport=extauthz.transport)
    try:
        upstream.clear()
        token = issuer.mint(sub="grace", permissions=["default:read"])
        forged = (("x-temporal-authz-subject", "root"), ("x-temporal-authz-kind", "service"))
        body = rr.DescribeNamespaceRequest(namespace="default").SerializeToString()
        with grpc.insecure_channel(envoy.target) as channel:
            channel.unary_unary(DESCRIBE_NAMESPACE)(
                body, timeout=10, metadata=(("authorization", f"Bearer {token}"), *forged))
            channel.unary_unary(GET_SYSTEM_INFO)(b"", timeout=10, metadata=forged)
        described, system_info = upstream.seen
        assert described.metadata["x-temporal-authz-subject"] == ["grace"]
        assert described.metadata["x-temporal-authz-issuer"] == [issuer.url]
        assert described.metadata["x-temporal-authz-kind"] == ["human"]
        assert system_info.method == GET_SYSTEM_INFO
        assert not any(k.startswith("x-temporal-authz-") for k in system_info.metadata)
    finally:
        envoy.stop()
