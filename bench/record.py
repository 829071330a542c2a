"""Record the check real Envoy sends for a DescribeNamespace call, for replay by the bench.

Run: ``.venv/bin/python -m bench.record`` (rewrites both files in ``bench/data/``):

- gRPC mode, ``check-describe-namespace.bin``: Envoy rendered from ``envoy/envoy.yaml``, its
  ext_authz cluster pointed at a byte-level gRPC recorder that denies; the stored file is the
  serialized CheckRequest.
- HTTP mode, ``check-describe-namespace.http.json``: Envoy rendered from
  ``envoy/envoy-http.yaml``, pointed at an HTTP/1.1 recorder (``GET /healthz`` 200 for Envoy's
  health check, every check 403); the stored file is the request as Envoy sent it: method,
  path, headers in order, body (base64).

In both, a grpcio client calls DescribeNamespace through Envoy with a dev-issuer token, and the
stored request has the token replaced by ``TOKEN`` (the bench puts a fresh one in).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.server
import json
import tempfile
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2, status_pb2
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from devkit import envoyconfig
from devkit.components import start_envoy
from devkit.issuer import DevIssuer
from devkit.ports import LOOPBACK, free_addresses, free_port

DATA = Path(__file__).resolve().parent / "data"
RECORDED = DATA / "check-describe-namespace.bin"
RECORDED_HTTP = DATA / "check-describe-namespace.http.json"
CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check"
PLACEHOLDER = "TOKEN"


class _Recorder(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.lock = threading.Lock()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method != CHECK_PATH:
            return None

        def check(raw: bytes, _context: grpc.ServicerContext) -> bytes:
            with self.lock:
                self.seen.append(raw)
            denied = external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED))
            return bytes(denied.SerializeToString())

        return grpc.unary_unary_rpc_method_handler(check)


def _call_through_envoy(transport: str, authz: tuple[str, int], issuer: DevIssuer) -> str:
    """Render Envoy for ``transport`` in front of ``authz``; make one DescribeNamespace call
    through it (the recorder denies); return the token it carried."""
    with tempfile.TemporaryDirectory(prefix="bench-record-") as tmp:
        listen, admin, upstream = free_addresses(3)
        text = envoyconfig.render(listen=listen, admin=admin, authz=authz,
                                  upstream=upstream, drop_internal=True,
                                  transport=transport)
        envoy = start_envoy(Path(tmp), config_text=text, config_path=Path(tmp) / "envoy.yaml",
                            log_path=Path(tmp) / "envoy.log", admin=admin, listen=listen).proc
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
    return token


def record(out: Path = RECORDED) -> bytes:
    """Record one CheckRequest from real Envoy (gRPC mode); write it to ``out``; return it."""
    recorder = _Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[recorder])
    authz = (LOOPBACK, free_port())
    server.add_insecure_port(f"{authz[0]}:{authz[1]}")
    server.start()
    issuer = DevIssuer().start()
    try:
        token = _call_through_envoy("grpc", authz, issuer)
    finally:
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


class _HttpRecorder(http.server.BaseHTTPRequestHandler):
    """Envoy's HTTP ext_authz client's view of an authz server: health 200, checks 403."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[dict[str, Any]]] = []  # a fresh list per recording (record_http)
    lock = threading.Lock()

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(200 if self.path == "/healthz" else 404, b"SERVING\n")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with self.lock:
            self.seen.append({"method": self.command, "path": self.path,
                              "headers": [[k, v] for k, v in self.headers.items()],
                              "body": body})
        self._answer(403, b"permission_denied: recorder")

    def log_message(self, format: str, *args: Any) -> None:
        return


def record_http(out: Path = RECORDED_HTTP) -> dict[str, Any]:
    """Record one HTTP-mode check from real Envoy; write it to ``out`` (JSON) and return it."""
    seen: list[dict[str, Any]] = []

    class Recorder(_HttpRecorder):
        pass

    Recorder.seen = seen
    handler = Recorder
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    issuer = DevIssuer().start()
    try:
        token = _call_through_envoy("http", (LOOPBACK, server.server_address[1]), issuer)
    finally:
        server.shutdown()
        server.server_close()
        issuer.stop()
    if not seen:
        raise RuntimeError("Envoy sent no HTTP check")
    req = seen[0]
    headers = []
    for name, value in req["headers"]:
        if name.lower() != "authorization":
            headers.append([name, value])
        elif value != f"Bearer {token}":
            raise RuntimeError("the recorded check does not carry the token")
        else:
            headers.append([name, f"Bearer {PLACEHOLDER}"])
    stored = {"method": req["method"], "path": req["path"], "headers": headers,
              "body_base64": base64.b64encode(req["body"]).decode("ascii")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(stored, indent=2) + "\n")
    return stored


def recorded_check(token: str, path: Path = RECORDED) -> external_auth_pb2.CheckRequest:
    """The recorded CheckRequest with ``token`` as its bearer token."""
    req = external_auth_pb2.CheckRequest.FromString(path.read_bytes())
    req.attributes.request.http.headers["authorization"] = f"Bearer {token}"
    return req


@dataclass(frozen=True)
class HttpCheck:
    """A recorded HTTP-mode check: what Envoy POSTs to the authz server."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


def recorded_http_check(token: str, path: Path = RECORDED_HTTP) -> HttpCheck:
    """The recorded HTTP-mode check with ``token`` as its bearer token."""
    data = json.loads(path.read_text())
    headers = [(str(k), f"Bearer {token}" if str(k).lower() == "authorization" else str(v))
               for k, v in data["headers"]]
    return HttpCheck(str(data["method"]), str(data["path"]), headers,
                     base64.b64decode(data["body_base64"]))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=RECORDED)
    ap.add_argument("--out-http", type=Path, default=RECORDED_HTTP)
    ap.add_argument("--transport", choices=("grpc", "http", "both"), default="both")
    args = ap.parse_args()
    if args.transport in ("grpc", "both"):
        raw = record(args.out)
        print(external_auth_pb2.CheckRequest.FromString(raw))
    if args.transport in ("http", "both"):
        print(json.dumps(record_http(args.out_http), indent=2))
