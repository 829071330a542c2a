"""Decisions to answers Envoy's ext_authz filter reads: CheckResponses (gRPC mode, the only
place that builds Envoy protobufs) and HTTP/1.1 response bytes (HTTP mode); and Envoy's
CheckRequest to the pipeline's input."""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from extauthz.model import CheckInput, Decision, PeerEvidence, Reason
from extauthz.peers import LISTENER_KEY
from extauthz.server.http1.wire import STATUS_TEXT, Response

_GRPC_CODE = {
    401: code_pb2.UNAUTHENTICATED,
    403: code_pb2.PERMISSION_DENIED,
    503: code_pb2.UNAVAILABLE,
}
_OK_CACHE_ENTRIES = 10_000
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
REASON_HEADER = "x-temporal-authz-reason"


class BodyNotBytesError(Exception):
    """Envoy sent the body as a string: ``pack_as_bytes`` is off."""


def check_input(request: external_auth_pb2.CheckRequest) -> CheckInput:
    """The transport-neutral view of Envoy's CheckRequest."""
    http: attribute_context_pb2.AttributeContext.HttpRequest = request.attributes.request.http
    # the protobuf map itself (a read-only Mapping here): copying it into a dict cost ~5 µs
    # per check, and the pipeline reads only a few keys
    headers: Mapping[str, str] = http.headers
    if not headers and len(http.header_map.headers):
        joined: dict[str, str] = {}
        headers = joined
        for hv in http.header_map.headers:
            value = hv.raw_value.decode("utf-8", "replace") if hv.raw_value else hv.value
            key = hv.key.lower()
            joined[key] = f"{joined[key]},{value}" if key in joined else value
    body = http.raw_body
    if not body and http.body:
        raise BodyNotBytesError
    # the client certificate Envoy verified (downstream mTLS): never read from a header here
    source = request.attributes.source
    peer = (PeerEvidence(certificate=source.certificate, principal=source.principal,
                         listener=request.attributes.context_extensions.get(LISTENER_KEY, ""))
            if source.certificate or source.principal else None)
    return CheckInput(path=http.path, headers=headers, body=body, method=http.method, peer=peer)


class ResponseBuilder:
    """Builds CheckResponses; identity header names are fixed at construction."""

    def __init__(self, subject_header: str = "x-temporal-authz-subject"):
        prefix = subject_header.rsplit("-", 1)[0]
        self.subject_header = subject_header
        self.issuer_header = f"{prefix}-issuer"
        self.kind_header = f"{prefix}-kind"
        self._identity = (self.subject_header, self.issuer_header, self.kind_header)
        self._ok_cache: dict[tuple[str, str, str], external_auth_pb2.CheckResponse] = {}
        self._ok_anonymous = external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(headers_to_remove=self._identity),
        )

    def build(self, decision: Decision) -> external_auth_pb2.CheckResponse:
        """The CheckResponse for a decision."""
        if decision.allowed:
            return self._ok(decision)
        return self.denied(decision.status, decision.reason, decision.message)

    def _ok(self, decision: Decision) -> external_auth_pb2.CheckResponse:
        p = decision.principal
        if p is None:
            return self._ok_anonymous
        key = (p.subject, p.issuer, p.kind)
        response = self._ok_cache.get(key)
        if response is None:
            if len(self._ok_cache) >= _OK_CACHE_ENTRIES:
                self._ok_cache.clear()
            response = self._ok_cache[key] = self._ok_for(*key)
        return response

    def _ok_for(self, subject: str, issuer: str, kind: str) -> external_auth_pb2.CheckResponse:
        """An OK response carrying one identity (built once per identity, then reused)."""
        values = ((self.subject_header, subject), (self.issuer_header, issuer),
                  (self.kind_header, kind))
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[
                    base_pb2.HeaderValueOption(
                        header=base_pb2.HeaderValue(key=k, value=_header_safe(v)),
                        append_action=_OVERWRITE,
                    )
                    for k, v in values
                ],
            ),
        )

    @staticmethod
    def denied(status: int, reason: Reason | str, message: str) -> external_auth_pb2.CheckResponse:
        """A denial the client sees as UNAUTHENTICATED / PERMISSION_DENIED / UNAVAILABLE."""
        text = f"{reason}: {message}"
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=_GRPC_CODE.get(status, code_pb2.PERMISSION_DENIED),
                                     message=text),
            denied_response=external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=status),  # type: ignore[arg-type, unused-ignore]
                body=text,
                headers=[base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key=REASON_HEADER, value=str(reason)),
                    append_action=_OVERWRITE,
                )],
            ),
        )


class HttpResponses:
    """HTTP mode: response bytes for decisions; identity header names as in ``ResponseBuilder``.

    Allow: ``200`` with the identity headers, or, without an identity,
    ``x-envoy-auth-headers-to-remove`` naming them; deny: ``http_denied``."""

    def __init__(self, subject_header: str = "x-temporal-authz-subject"):
        grpc_builder = ResponseBuilder(subject_header)
        self._names = (grpc_builder.subject_header, grpc_builder.issuer_header,
                       grpc_builder.kind_header)
        self._ok_cache: dict[tuple[str, str, str], bytes] = {}
        self._ok_anonymous = (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n"
                              b"x-envoy-auth-headers-to-remove: "
                              + ",".join(self._names).encode() + b"\r\n")

    def build(self, decision: Decision) -> Response:
        """(status line and headers without the final CRLF, body) for a decision."""
        if decision.allowed:
            p = decision.principal
            if p is None:
                return self._ok_anonymous, b""
            key = (p.subject, p.issuer, p.kind)
            head = self._ok_cache.get(key)
            if head is None:
                if len(self._ok_cache) >= _OK_CACHE_ENTRIES:
                    self._ok_cache.clear()
                head = self._ok_cache[key] = self._ok_for(*key)
            return head, b""
        return http_denied(decision.status, str(decision.reason), decision.message)

    def _ok_for(self, subject: str, issuer: str, kind: str) -> bytes:
        lines = b"".join(f"{name}: {_header_safe(value)}\r\n".encode("ascii")
                         for name, value in zip(self._names, (subject, issuer, kind),
                                                strict=True))
        return b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n" + lines


def http_denied(status: int, reason: str, message: str) -> Response:
    """An HTTP-mode denial: ``<code>: <message>`` as the body, the code in
    ``x-temporal-authz-reason``."""
    body = f"{reason}: {message}".encode()
    head = (b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\n%s: %s\r\n"
            % (status, STATUS_TEXT.get(status, b"Error"), len(body), REASON_HEADER.encode(),
               _header_safe(reason).encode("ascii")))
    return head, body


def _header_safe(value: str) -> str:
    """Printable ASCII only, at most 256 characters: claims are attacker-influenced."""
    if value.isascii() and value.isprintable():
        return value[:256]
    return "".join(ch if " " <= ch < "\x7f" else "?" for ch in value)[:256]
