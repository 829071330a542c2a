"""A real OTLP/HTTP trace receiver on loopback, for tests of ``extauthz.obs.tracing``.

It accepts ``POST /v1/traces`` (protobuf, optionally gzip), decodes each body as an
``ExportTraceServiceRequest`` with ``opentelemetry-proto`` and keeps it: the receiver sits below
the exporter seam, the SDK and the OTLP exporter under test are the real ones.
"""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span


def value_of(v: AnyValue) -> Any:
    """An OTLP attribute value as a Python value."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return tuple(value_of(x) for x in v.array_value.values)
    return getattr(v, kind) if kind else None


@dataclass(frozen=True)
class Received:
    """One span as the collector saw it, with its resource's attributes."""

    span: Span
    resource: dict[str, Any]

    @property
    def attributes(self) -> dict[str, Any]:
        return {a.key: value_of(a.value) for a in self.span.attributes}

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def parent_span_id(self) -> str:
        return self.span.parent_span_id.hex()


class OtlpReceiver:
    """``start()`` → ``endpoint``; ``spans()`` → every span received so far."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []  # as sent (decompressed), to grep for secrets
        self.requests: list[tuple[str, dict[str, str], ExportTraceServiceRequest]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> OtlpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                message = ExportTraceServiceRequest.FromString(body)
                with receiver._lock:
                    receiver.bodies.append(body)
                    receiver.requests.append(
                        (self.path, {k.lower(): v for k, v in self.headers.items()}, message))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def spans(self) -> list[Received]:
        out: list[Received] = []
        with self._lock:
            requests = list(self.requests)
        for _, _, message in requests:
            for rs in message.resource_spans:
                resource = {a.key: value_of(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    out.extend(Received(span, resource) for span in ss.spans)
        return out

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        """At least ``count`` spans, waiting up to ``timeout`` seconds for the exporter."""
        deadline = time.monotonic() + timeout
        while len(spans := self.spans()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return spans
