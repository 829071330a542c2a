"""In-process fakes for testing Envoy itself: a recording ext_authz server and a recording
upstream. Both are real gRPC servers (grpcio, h2c) on free loopback ports, so Envoy talks to them
exactly as it talks to the real authz server and to Temporal."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from devkit.ports import LOOPBACK, free_port

T = TypeVar("T")


class _Recorder(Generic[T]):
    """What every recording fake shares: a thread-safe list of what it saw."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[T] = []

    def _record(self, item: T) -> None:
        with self._lock:
            self._seen.append(item)

    @property
    def seen(self) -> list[T]:
        """A snapshot of what was seen so far."""
        with self._lock:
            return list(self._seen)

    def clear(self) -> None:
        """Forget what was seen so far."""
        with self._lock:
            self._seen.clear()


@dataclass(frozen=True)
class SeenCheck:
    """What the authorizer was asked."""

    path: str
    method: str
    headers: dict[str, str]
    raw_body: bytes
    request_id: str


@dataclass
class Decision:
    """What the recorder answers: allow (optionally adding headers) or deny with an HTTP status."""

    allow: bool = False
    status: int = 403
    body: str = "recorder: denied"
    add_headers: Sequence[tuple[str, str]] = ()
    delay: float = 0.0


class RecordingAuthz(_Recorder[SeenCheck],
                     external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """``envoy.service.auth.v3.Authorization`` that records every Check and answers ``decision``
    (deny by default)."""

    def __init__(self) -> None:
        super().__init__()
        self.decision = Decision()
        self.port = free_port()
        self.address = (LOOPBACK, self.port)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8),
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        )
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"{LOOPBACK}:{self.port}")

    def start(self) -> RecordingAuthz:
        """Start serving."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving (connections are closed at once)."""
        self._server.stop(grace=None)

    def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        http = request.attributes.request.http
        self._record(SeenCheck(path=http.path, method=http.method, headers=dict(http.headers),
                               raw_body=bytes(http.raw_body), request_id=http.id))
        decision = self.decision
        if decision.delay:
            time.sleep(decision.delay)
        if decision.allow:
            return external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.OK),
                ok_response=external_auth_pb2.OkHttpResponse(
                    headers=[
                        base_pb2.HeaderValueOption(
                            header=base_pb2.HeaderValue(key=key, value=value),
                            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                        )
                        for key, value in decision.add_headers
                    ]
                ),
            )
        code = code_pb2.UNAUTHENTICATED if decision.status == 401 else code_pb2.PERMISSION_DENIED
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code, message=decision.body),
            denied_response=external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=decision.status),
                body=decision.body,
            ),
        )


@dataclass(frozen=True)
class SeenCall:
    """A call that reached the upstream."""

    method: str
    metadata: dict[str, list[str]]
    body: bytes


@dataclass
class _Handler(grpc.GenericRpcHandler):  # type: ignore[misc]
    record: Callable[[SeenCall], None]
    reply: Callable[[], bytes]
    extra: dict[str, Any] = field(default_factory=dict)

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = str(handler_call_details.method)
        metadata: dict[str, list[str]] = {}
        for key, value in handler_call_details.invocation_metadata:
            metadata.setdefault(str(key), []).append(
                value.decode("latin-1") if isinstance(value, bytes) else str(value)
            )

        def unary(body: bytes, context: grpc.ServicerContext) -> bytes:
            self.record(SeenCall(method=method, metadata=metadata, body=body))
            return self.reply()

        return grpc.unary_unary_rpc_method_handler(unary)


class RecordingUpstream(_Recorder["SeenCall"]):
    """A gRPC server that accepts ANY method path, records it and answers an empty message."""

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()
        self.address = (LOOPBACK, self.port)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8),
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        )
        self._server.add_generic_rpc_handlers([_Handler(self._record, lambda: b"")])
        self._server.add_insecure_port(f"{LOOPBACK}:{self.port}")

    def start(self) -> RecordingUpstream:
        """Start serving."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.stop(grace=None)



class RecordingHttpAuthz(_Recorder[SeenCheck]):
    """Envoy's HTTP ext_authz protocol, recording every check and answering ``decision`` (deny
    by default): the HTTP-mode twin of :class:`RecordingAuthz`, with the same ``seen`` records
    (``path`` without the ``/check`` prefix; ``request_id`` from ``x-request-id``)."""

    PREFIX = "/check"

    def __init__(self) -> None:
        import http.server

        super().__init__()
        self.decision = Decision()
        self.raw_paths: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def _answer(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length) if length else b""
                if self.path == "/healthz":
                    self._send(200, b"SERVING", ())
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                path = self.path.removeprefix(owner.PREFIX)
                with owner._lock:
                    owner.raw_paths.append(self.path)
                    owner._seen.append(SeenCheck(path=path, method=self.command, headers=headers,
                                                 raw_body=body,
                                                 request_id=headers.get("x-request-id", "")))
                decision = owner.decision
                if decision.delay:
                    time.sleep(decision.delay)
                if decision.allow:
                    self._send(200, b"", decision.add_headers)
                else:
                    self._send(decision.status, decision.body.encode(), ())

            def _send(self, status: int, body: bytes, headers: Sequence[tuple[str, str]]) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET = do_PUT = do_HEAD = do_DELETE = do_OPTIONS = do_PATCH = _answer

        self.port = free_port()
        self.address = (LOOPBACK, self.port)
        self._server = http.server.ThreadingHTTPServer(self.address, Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> RecordingHttpAuthz:
        """Start serving."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def clear(self) -> None:
        """Forget the checks (and raw paths) so far."""
        with self._lock:
            self._seen.clear()
            self.raw_paths.clear()
