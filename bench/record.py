"""Record the CheckRequest real Envoy sends for a DescribeNamespace call, for replay by the bench.

Run: ``.venv/bin/python -m bench.record`` (rewrites ``bench/data/check-describe-namespace.bin``).
Envoy is rendered from ``envoy/envoy.yaml``; its ext_authz cluster points at a byte-level gRPC
recorder that denies; a grpcio client calls DescribeNamespace through Envoy with a dev-issuer
token. The stored request has the token replaced by ``TOKEN`` (the bench puts a fresh one in).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
from concurrent import futures
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2, status_pb2
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from bench.common import LOOPBACK, free_port
from extauthz import envoyconfig, procs
from extauthz.devissuer import DevIssuer

DATA = Path(__file__).resolve().parent / "data"
RECORDED = DATA / "check-describe-namespace.bin"
CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check"
PLACEHOLDER = "TOKEN"


class _Recorder(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.lock = threading.Lock()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method != CHECK_PATH:
            return None

        def check(raw: bytes, context: grpc.ServicerContext) -> bytes:
            with self.lock:
                self.seen.append(raw)
            denied = external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED))
            return bytes(denied.SerializeToString())

        return grpc.unary_unary_rpc_method_handler(check)


def record(out: Path = RECORDED) -> bytes:
    """Record one CheckRequest from real Envoy; write it to ``out`` and return it."""
    recorder = _Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[recorder])
    authz = (LOOPBACK, free_port())
    server.add_insecure_port(f"{authz[0]}:{authz[1]}")
    server.start()
    issuer = DevIssuer().start()
    with tempfile.TemporaryDirectory(prefix="bench-record-") as tmp:
        listen, admin = (LOOPBACK, free_port()), (LOOPBACK, free_port())
        text = envoyconfig.render(listen=listen, admin=admin, authz=authz,
                                  upstream=(LOOPBACK, free_port()), drop_internal=True)
        envoy = procs.start_envoy(text, config_path=Path(tmp) / "envoy.yaml",
                                  log_path=Path(tmp) / "envoy.log", admin=admin)
        try:
            token = issuer.mint({"sub": "bench", "permissions": ["default:write"]})
            with grpc.insecure_channel(f"{listen[0]}:{listen[1]}") as channel:
                describe = channel.unary_unary(
                    "/temporal.api.workflowservice.v1.WorkflowService/DescribeNamespace",
                    request_serializer=rr.DescribeNamespaceRequest.SerializeToString,
                    response_deserializer=rr.DescribeNamespaceResponse.FromString)
                with contextlib.suppress(grpc.RpcError):  # the recorder denies
                    describe(rr.DescribeNamespaceRequest(namespace="default"), timeout=5,
                             metadata=[("authorization", f"Bearer {token}"),
                                       ("temporal-namespace", "default"),
                                       ("client-name", "temporal-python"),
                                       ("client-version", "1.35.0")])
        finally:
            envoy.stop()
            server.stop(None)
            issuer.stop()
    if not recorder.seen:
        raise RuntimeError("Envoy sent no CheckRequest")
    req = external_auth_pb2.CheckRequest.FromString(recorder.seen[0])
    http = req.attributes.request.http
    if http.headers.get("authorization") != f"Bearer {token}":
        raise RuntimeError("the recorded request does not carry the token in headers")
    http.headers["authorization"] = f"Bearer {PLACEHOLDER}"
    raw = bytes(req.SerializeToString())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(raw)
    return raw


def recorded_check(token: str, path: Path = RECORDED) -> external_auth_pb2.CheckRequest:
    """The recorded CheckRequest with ``token`` as its bearer token."""
    req = external_auth_pb2.CheckRequest.FromString(path.read_bytes())
    req.attributes.request.http.headers["authorization"] = f"Bearer {token}"
    return req


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=RECORDED)
    raw = record(ap.parse_args().out)
    print(external_auth_pb2.CheckRequest.FromString(raw))
