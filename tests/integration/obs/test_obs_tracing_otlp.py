"""Tracing end to end below Envoy: ``extauthz serve`` (both transports, real OpenTelemetry SDK
and OTLP/HTTP exporter) sends its spans to a real OTLP receiver on loopback; and with tracing
off, a server that answered checks on both transports has imported nothing of OpenTelemetry."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from google.rpc import code_pb2
from support.checks import check_request
from support.otlp import OtlpReceiver
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from devkit.grpcframe import frame
from devkit.issuer import DevIssuer
from devkit.ports import free_ports
from devkit.procs import ManagedProcess, http_get, wait_until

WS = "/temporal.api.workflowservice.v1.WorkflowService/"
REPO = Path(__file__).resolve().parents[3]
TRACE = {name: f"{n:032x}" for n, name in enumerate(("grpc_allow", "grpc_deny", "http_deny"),
                                                    start=0xA1B2C3D4E5F60000)}
PARENT = "00f067aa0ba902b7"


def traceparent(name: str) -> str:
    return f"00-{TRACE[name]}-{PARENT}-01"


def http_check(port: int, path: str, body: bytes, headers: dict[str, str]) -> int:
    """One check as Envoy's HTTP ext_authz client sends it; the response status."""
    head = "".join(f"{k}: {v}\r\n" for k, v in {
        "host": "extauthz", "x-extauthz-content-type": "application/grpc",
        "content-length": str(len(body)), "connection": "close", **headers}.items())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST /check{path} HTTP/1.1\r\n{head}\r\n".encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver().start()
    try:
        yield r
    finally:
        r.stop()


def test_spans_continue_the_callers_trace_on_both_transports_and_reach_the_collector(
        tmp_path: Path, dev: DevIssuer, receiver: OtlpReceiver) -> None:
    """Each check's span carries the trace id of its traceparent, the caller's span as parent,
    the decision, reason, method, namespace and principal kind; a denial carries its reason; a
    malformed traceparent starts a new trace without changing the decision; the collector gets
    the configured headers, service.name temporal-extauthz, and never the token; SIGTERM
    flushes what is queued."""
    grpc_port, http_port, health_port = free_ports(3)
    cfg = tmp_path / "extauthz.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        listen: 127.0.0.1:{grpc_port}
        http_listen: 127.0.0.1:{http_port}
        health_listen: 127.0.0.1:{health_port}
        transport: both
        shutdown_delay_seconds: 0
        tracing:
          enabled: true
          endpoint: {receiver.endpoint}
          headers: {{x-collector-key: k-123}}
        """))
    env = {**os.environ, "TEMPORAL_AUTH_PROVIDER_URL": dev.url,
           "TEMPORAL_AUTH_CLIENT_ID": "temporal", "EXTAUTHZ_ALLOW_INSECURE_ISSUER": "1",
           "EXTAUTHZ_WORKERS": "1", "EXTAUTHZ_AUDIT_ALLOW_SAMPLE_RATE": "0"}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    proc = ManagedProcess("extauthz", [sys.executable, "-m", "extauthz", "serve", "--config",
                                       str(cfg)], log_path=tmp_path / "extauthz.log",
                          env=env).start()
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{http_port}/healthz")[0] == 200, 30,
                   "extauthz ready", alive=proc.check_alive)
        reader = dev.mint({"sub": "svc-1", "permissions": ["default:read"]})
        describe = frame(rr.DescribeNamespaceRequest(namespace="default").SerializeToString())
        start = frame(rr.StartWorkflowExecutionRequest(namespace="default").SerializeToString())
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            allowed = stub.Check(check_request(WS + "DescribeNamespace", describe, {
                "authorization": f"Bearer {reader}", "traceparent": traceparent("grpc_allow"),
                "tracestate": "congo=t61rcWkgMzE", "x-request-id": "req-allow"}), timeout=10)
            denied = stub.Check(check_request(WS + "DescribeNamespace", describe, {
                "traceparent": traceparent("grpc_deny")}), timeout=10)
            malformed = stub.Check(check_request(WS + "DescribeNamespace", describe, {
                "authorization": f"Bearer {reader}",
                "traceparent": traceparent("grpc_allow").upper()}), timeout=10)
        assert allowed.status.code == code_pb2.OK
        assert denied.status.code == code_pb2.UNAUTHENTICATED
        assert malformed.status.code == code_pb2.OK  # the header never changes the decision
        assert http_check(http_port, WS + "StartWorkflowExecution", start, {
            "authorization": f"Bearer {reader}", "traceparent": traceparent("http_deny")}) == 403
        proc.signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.stop()

    spans = receiver.wait_for(4)
    assert len(spans) == 4
    by_trace = {s.trace_id: s for s in spans}
    allow = by_trace[TRACE["grpc_allow"]]
    assert allow.span.name == "extauthz.check"
    assert allow.parent_span_id == PARENT
    assert allow.span.trace_state == "congo=t61rcWkgMzE"
    assert allow.attributes == {
        "extauthz.decision": "allow", "extauthz.reason": "allowed", "extauthz.dry_run": False,
        "extauthz.method": "WorkflowService/DescribeNamespace", "temporal.namespace": "default",
        "extauthz.principal.kind": "human", "extauthz.rule": "temporal-default",
        "extauthz.request_id": "req-allow"}
    assert allow.resource["service.name"] == "temporal-extauthz"
    assert allow.span.end_time_unix_nano > allow.span.start_time_unix_nano

    deny = by_trace[TRACE["grpc_deny"]]
    assert deny.parent_span_id == PARENT
    assert deny.attributes["extauthz.decision"] == "deny"
    assert deny.attributes["extauthz.reason"] == "missing_token"

    http = by_trace[TRACE["http_deny"]]
    assert http.parent_span_id == PARENT
    assert http.attributes["extauthz.reason"] == "permission_denied"
    assert http.attributes["extauthz.method"] == "WorkflowService/StartWorkflowExecution"

    (root,) = [s for s in spans if s.trace_id not in TRACE.values()]
    assert root.parent_span_id == ""
    assert root.attributes["extauthz.decision"] == "allow"

    assert {path for path, _, _ in receiver.requests} == {"/v1/traces"}
    assert all(h.get("x-collector-key") == "k-123" for _, h, _ in receiver.requests)
    assert all(reader.encode() not in body and reader.split(".")[2].encode() not in body
               for body in receiver.bodies)


_SERVE_AND_LIST_MODULES = textwrap.dedent("""
    import asyncio, json, socket, sys
    import grpc
    from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
    from extauthz import config
    from extauthz.server.app import Server

    async def main() -> None:
        server = Server(config.load(sys.argv[1]))
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            req = external_auth_pb2.CheckRequest()
            req.attributes.request.http.path = (
                "/temporal.api.workflowservice.v1.WorkflowService/DescribeNamespace")
            req.attributes.request.http.method = "POST"
            req.attributes.request.http.headers["content-type"] = "application/grpc"
            req.attributes.request.http.headers["traceparent"] = sys.argv[2]
            answer = await external_auth_pb2_grpc.AuthorizationStub(channel).Check(req, timeout=10)
            assert answer.status.code == 16, answer  # UNAUTHENTICATED: no token
        reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
        path = "/check/temporal.api.workflowservice.v1.WorkflowService/DescribeNamespace"
        writer.write((f"POST {path} HTTP/1.1\\r\\nhost: a\\r\\ntraceparent: {sys.argv[2]}\\r\\n"
                      "x-extauthz-content-type: application/grpc\\r\\ncontent-length: 0\\r\\n"
                      "connection: close\\r\\n\\r\\n").encode())
        assert (await reader.read()).startswith(b"HTTP/1.1 401 "), "http check"
        writer.close()
        await server.stop()

    asyncio.run(main())
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")))
""")


@pytest.mark.parametrize("enabled", [False, True])
def test_tracing_off_imports_nothing_of_opentelemetry(tmp_path: Path, enabled: bool,
                                                       receiver: OtlpReceiver,
                                                       dev: DevIssuer) -> None:
    """Off (the default), a server that answered a gRPC and an HTTP check has not imported a
    single opentelemetry module; on (the control), it has, and both checks became spans."""
    cfg = tmp_path / "c.yaml"
    listen_port, http_listen_port = free_ports(2)
    cfg.write_text(textwrap.dedent(f"""\
        listen: 127.0.0.1:{listen_port}
        http_listen: 127.0.0.1:{http_listen_port}
        transport: both
        shutdown_delay_seconds: 0
        audit_allow_sample_rate: 0
        tracing: {{enabled: {str(enabled).lower()}, endpoint: "{receiver.endpoint}"}}
        """))
    out = subprocess.run([sys.executable, "-c", _SERVE_AND_LIST_MODULES, str(cfg),
                          traceparent("grpc_allow")], capture_output=True, text=True,
                         cwd=REPO, timeout=120, check=False,
                         env={**os.environ, "TEMPORAL_AUTH_PROVIDER_URL": dev.url,
                              "EXTAUTHZ_ALLOW_INSECURE_ISSUER": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    imported = json.loads(out.stdout.strip().splitlines()[-1])
    if enabled:
        assert "opentelemetry.sdk.trace" in imported
        assert [s.trace_id for s in receiver.wait_for(2)] == [TRACE["grpc_allow"]] * 2
    else:
        assert imported == []
        assert receiver.spans() == []

