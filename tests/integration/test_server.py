"""`extauthz serve` as a real process: health lifecycle, Check over gRPC, limits, shutdown."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from devkit.grpcframe import frame
from devkit.issuer import DevIssuer
from devkit.ports import free_port
from devkit.procs import ManagedProcess, wait_until

WS = "/temporal.api.workflowservice.v1.WorkflowService/"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def check_request(path: str, body: bytes, token: str | None) -> external_auth_pb2.CheckRequest:
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.path, http.method, http.raw_body = path, "POST", body
    http.headers["content-type"] = "application/grpc"
    if token:
        http.headers["authorization"] = f"Bearer {token}"
    return req


def start_server(tmp: Path, issuer_url: str, *extra_env: tuple[str, str],
                 config: Path | None = None) -> tuple[ManagedProcess, str]:
    port = free_port()
    env = {**os.environ, "EXTAUTHZ_LISTEN": f"127.0.0.1:{port}",
           "TEMPORAL_AUTH_PROVIDER_URL": issuer_url, "TEMPORAL_AUTH_CLIENT_ID": "temporal",
           "EXTAUTHZ_ALLOW_INSECURE_ISSUER": "1", "EXTAUTHZ_WORKERS": "1", **dict(extra_env)}
    argv = [sys.executable, "-m", "extauthz", "serve"]
    if config is not None:
        argv += ["--config", str(config)]
    proc = ManagedProcess("extauthz", argv, log_path=tmp / f"extauthz-{port}.log",
                          env=env).start()
    return proc, f"127.0.0.1:{port}"


def health(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1).status)


def wait_health(proc: ManagedProcess, target: str, status: int, timeout: float = 20) -> None:
    def ok() -> bool:
        return health(target) == status
    wait_until(ok, timeout, f"health {status}", alive=proc.check_alive)


def test_health_is_not_serving_until_keys_load_then_serving(tmp_path: Path) -> None:
    """Health reports NOT_SERVING while the issuer is unreachable, SERVING once keys load."""
    port = free_port()
    dev = DevIssuer(port=port)
    url = f"http://127.0.0.1:{port}"
    # retry the failed fetch after 1 s, not the default 30 s (the behaviour is the same)
    config = tmp_path / "extauthz.yaml"
    config.write_text(f"issuers:\n  - issuer: {url}\n    audiences: [temporal]\n"
                      "    allow_insecure_http: true\n    min_refresh_interval_seconds: 1\n")
    proc, target = start_server(tmp_path, url, config=config)
    try:
        wait_health(proc, target, NOT_SERVING)
        time.sleep(1.0)
        assert health(target, "envoy.service.auth.v3.Authorization") == NOT_SERVING
        dev.start()
        wait_health(proc, target, SERVING, timeout=60)
        assert health(target, "envoy.service.auth.v3.Authorization") == SERVING
    finally:
        proc.stop()
        dev.stop()


def test_check_allows_and_denies_with_reasons_over_grpc(tmp_path: Path,
                                                        dev: DevIssuer) -> None:
    """A real gRPC Check: writer allowed with the subject header, reader denied with the reason."""
    proc, target = start_server(tmp_path, dev.url)
    try:
        wait_health(proc, target, SERVING)
        body = frame(rr.StartWorkflowExecutionRequest(namespace="default").SerializeToString())
        writer = dev.mint({"sub": "alice", "permissions": ["default:write"]})
        reader = dev.mint({"sub": "bob", "permissions": ["default:read"]})
        with grpc.insecure_channel(target) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            ok = stub.Check(check_request(WS + "StartWorkflowExecution", body, writer), timeout=5)
            no = stub.Check(check_request(WS + "StartWorkflowExecution", body, reader), timeout=5)
            anon = stub.Check(check_request(WS + "StartWorkflowExecution", body, None), timeout=5)
        assert ok.status.code == code_pb2.OK
        headers = {h.header.key: h.header.value for h in ok.ok_response.headers}
        assert headers["x-temporal-authz-subject"] == "alice"
        assert no.status.code == code_pb2.PERMISSION_DENIED
        assert no.denied_response.status.code == 403
        assert no.denied_response.body.startswith("permission_denied: ")
        assert '"bob"' in no.denied_response.body and '"default"' in no.denied_response.body
        assert anon.status.code == code_pb2.UNAUTHENTICATED
        assert anon.denied_response.status.code == 401
        for response in (no, anon):
            assert writer not in str(response) and reader not in str(response)
        # the start-up line names the API the method table was built from (version skew)
        from importlib.metadata import version
        started = [line for line in proc.log_path.read_text().splitlines()
                   if "listening" in line]
        assert started and f"temporalio {version('temporalio')}" in started[0], started
    finally:
        proc.stop()


def test_four_mib_message_is_judged_not_refused_for_size(tmp_path: Path,
                                                         dev: DevIssuer) -> None:
    """A 4 MiB workflow input fits the server's receive limit and is decided on its namespace."""
    proc, target = start_server(tmp_path, dev.url)
    try:
        wait_health(proc, target, SERVING)
        msg = rr.StartWorkflowExecutionRequest(namespace="default")
        msg.input.payloads.add(data=b"x" * (4 * 1024 * 1024 - 64))
        body = frame(msg.SerializeToString())
        assert len(body) <= 4194309
        writer = dev.mint({"sub": "alice", "permissions": ["default:write"]})
        with grpc.insecure_channel(target) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            ok = stub.Check(check_request(WS + "StartWorkflowExecution", body, writer), timeout=10)
        assert ok.status.code == code_pb2.OK
    finally:
        proc.stop()


def test_sigterm_goes_not_serving_drains_and_exits_zero(tmp_path: Path,
                                                        dev: DevIssuer) -> None:
    """SIGTERM: health flips to NOT_SERVING, in-flight checks finish, the process exits 0."""
    proc, target = start_server(tmp_path, dev.url)
    try:
        wait_health(proc, target, SERVING)
        writer = dev.mint({"sub": "alice", "permissions": ["default:write"]})
        body = frame(rr.DescribeNamespaceRequest(namespace="default").SerializeToString())
        with grpc.insecure_channel(target) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            futures = [stub.Check.future(check_request(WS + "DescribeNamespace", body, writer),
                                         timeout=10) for _ in range(200)]
            proc.signal(signal.SIGTERM)
            wait_until(lambda: health(target) == NOT_SERVING, 1.5, "NOT_SERVING after SIGTERM")
            late = stub.Check(check_request(WS + "DescribeNamespace", body, writer), timeout=5)
            results = [f.result() for f in futures]
        assert all(r.status.code == code_pb2.OK for r in results)
        assert late.status.code == code_pb2.OK, "checks during the shutdown delay are answered"
        assert proc.wait(timeout=20) == 0
    finally:
        proc.stop()


def test_serve_without_issuer_exits_2_naming_the_variable(tmp_path: Path) -> None:
    """No issuer configured: exit 2 with a message that says which variable to set."""
    env = {k: v for k, v in os.environ.items() if k != "TEMPORAL_AUTH_PROVIDER_URL"}
    proc = ManagedProcess("extauthz", [sys.executable, "-m", "extauthz", "serve"],
                          log_path=tmp_path / "noissuer.log", env=env).start()
    assert proc.wait(timeout=30) == 2
    assert "TEMPORAL_AUTH_PROVIDER_URL" in (tmp_path / "noissuer.log").read_text()
