"""The hand-framed gRPC listener (``grpc_server: h2``) end to end: real Envoy (envoy/envoy.yaml)
as its ext_authz client and gRPC health checker, real Temporal SDK and CLI calls, a real Temporal
dev server, the dev issuer; and a SIGTERM drain under Envoy's traffic that never turns into an
allow."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
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
from devkit.procs import find_binary, wait_until

RPC_TIMEOUT = timedelta(seconds=10)
H2 = {"EXTAUTHZ_GRPC_SERVER": "h2"}  # shutdown_delay_seconds: the default 2 s


@pytest.fixture(scope="module")
def h2_stack(tmp_path_factory: pytest.TempPathFactory, temporal: TemporalInstance,
             issuer: IssuerInstance) -> Iterator[tuple[ExtauthzInstance, EnvoyInstance, Path]]:
    """extauthz with ``grpc_server: h2`` behind Envoy in front of Temporal."""
    workdir = tmp_path_factory.mktemp("grpc-h2")
    authz = start_extauthz(workdir, issuer.url, name="extauthz-h2", extra_env=H2)
    envoy = start_envoy(workdir, authz=authz.address, upstream=temporal.address,
                        transport="grpc", http_upstream=temporal.http_address)
    try:
        yield authz, envoy, workdir
    finally:
        envoy.stop()
        authz.proc.stop()


async def _describe(envoy: EnvoyInstance, token: str | None) -> rr.DescribeNamespaceResponse:
    client = await Client.connect(envoy.target, namespace="default", api_key=token, tls=False)
    return await client.workflow_service.describe_namespace(
        rr.DescribeNamespaceRequest(namespace="default"), retry=False, timeout=RPC_TIMEOUT)


def test_envoy_health_checks_the_h2_listener_healthy(
        h2_stack: tuple[ExtauthzInstance, EnvoyInstance, Path]) -> None:
    """Envoy's gRPC health checker (grpc.health.v1 Check, service
    envoy.service.auth.v3.Authorization) passes against the h2 listener and keeps passing."""
    _, envoy, _ = h2_stack

    def healthy() -> bool:
        stats = envoy.stats()
        return (stats.get("cluster.extauthz.health_check.success", 0) >= 2
                and stats.get("cluster.extauthz.membership_healthy", 0) == 1)

    wait_until(healthy, 20, "Envoy sees the h2 listener healthy")
    assert envoy.stats().get("cluster.extauthz.health_check.failure", 0) == 0


async def test_sdk_calls_through_envoy_are_decided_by_the_h2_listener(
        h2_stack: tuple[ExtauthzInstance, EnvoyInstance, Path], issuer: IssuerInstance) -> None:
    """Through Envoy: a reader describes default; a reader's terminate is PERMISSION_DENIED with
    the reason; no token is UNAUTHENTICATED; Envoy counts them ok and denied, no errors."""
    _, envoy, _ = h2_stack
    reader = issuer.mint(sub="bob", permissions=["default:read"])
    assert (await _describe(envoy, reader)).namespace_info.name == "default"
    client = await Client.connect(envoy.target, namespace="default", api_key=reader, tls=False)
    with pytest.raises(RPCError) as denied:
        await client.workflow_service.terminate_workflow_execution(
            rr.TerminateWorkflowExecutionRequest(namespace="default"), retry=False,
            timeout=RPC_TIMEOUT)
    assert denied.value.status == RPCStatusCode.PERMISSION_DENIED
    assert denied.value.message.startswith('permission_denied: subject "bob"')
    with pytest.raises(RPCError) as anonymous:
        await _describe(envoy, None)
    assert anonymous.value.status == RPCStatusCode.UNAUTHENTICATED
    stats = envoy.stats()
    assert stats["http.external.ext_authz.extauthz.ok"] >= 1
    assert stats["http.external.ext_authz.extauthz.denied"] >= 2
    assert stats["http.external.ext_authz.extauthz.error"] == 0


def test_temporal_cli_through_envoy_and_the_h2_listener(
        h2_stack: tuple[ExtauthzInstance, EnvoyInstance, Path], issuer: IssuerInstance) -> None:
    """The temporal CLI lists workflows with a reader token and is refused without one."""
    _, envoy, _ = h2_stack
    cli = find_binary("temporal")
    token = issuer.mint(sub="carol", permissions=["default:read"])
    base = [cli, "workflow", "list", "--address", envoy.target, "--namespace", "default",
            "--tls=false"]
    ok = subprocess.run([*base, "--api-key", token], capture_output=True, text=True,
                        timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(base, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode != 0 and "Unauthenticated" in refused.stderr + refused.stdout


async def test_sigterm_drains_under_envoy_traffic_and_never_allows_after(
        tmp_path: Path, temporal: TemporalInstance, issuer: IssuerInstance) -> None:
    """Calls keep flowing through Envoy while the h2 listener drains on SIGTERM; every call is
    OK or UNAVAILABLE (never another status), OK ones only before the process exits, and once
    it is gone a no-token call is still not an allow."""
    authz = start_extauthz(tmp_path, issuer.url, name="extauthz-h2-drain", extra_env=H2)
    envoy = start_envoy(tmp_path, authz=authz.address, upstream=temporal.address,
                        transport="grpc", http_upstream=temporal.http_address)
    try:
        token = issuer.mint(sub="dan", permissions=["default:read"])
        client = await Client.connect(envoy.target, namespace="default", api_key=token,
                                      tls=False)
        outcomes: list[tuple[float, str]] = []
        exited_at: list[float] = []

        async def call() -> None:
            try:
                await client.workflow_service.describe_namespace(
                    rr.DescribeNamespaceRequest(namespace="default"), retry=False,
                    timeout=RPC_TIMEOUT)
                outcomes.append((time.monotonic(), "OK"))
            except RPCError as exc:
                outcomes.append((time.monotonic(), exc.status.name))

        for _ in range(20):
            await call()
        authz.proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not exited_at:
            await asyncio.gather(*(call() for _ in range(4)))
            if not authz.proc.running():
                exited_at.append(time.monotonic())
        assert exited_at, "extauthz did not exit within 15 s of SIGTERM"
        assert authz.proc.returncode == 0
        for _ in range(5):
            await call()
        kinds = {kind for _, kind in outcomes}
        assert kinds <= {"OK", "UNAVAILABLE"}, kinds
        assert sum(kind == "OK" for _, kind in outcomes) >= 20  # the shutdown delay served
        assert all(kind != "OK" for at, kind in outcomes if at > exited_at[0])
    finally:
        envoy.stop()
        authz.proc.stop()
