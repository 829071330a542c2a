"""Decisions to Envoy CheckResponses (and Envoy CheckRequests to the pipeline's input)."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from google.rpc import code_pb2

from extauthz.model import Decision, Principal, Reason
from extauthz.server.responses import (
    REASON_HEADER,
    BodyNotBytesError,
    HttpResponses,
    ResponseBuilder,
    check_input,
    http_denied,
)

OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
IDENTITY = ("x-temporal-authz-subject", "x-temporal-authz-issuer", "x-temporal-authz-kind")


def allowed(principal: Principal | None) -> Decision:
    """An allowed decision for ``principal``."""
    return Decision.allow(Reason.ALLOWED, "ok", principal)


def headers_of(response: external_auth_pb2.CheckResponse) -> dict[str, str]:
    """The headers an OK response sets, by name."""
    return {h.header.key: h.header.value for h in response.ok_response.headers}


def test_allow_with_principal_sets_identity_headers_with_overwrite() -> None:
    """An allow carries subject, issuer and kind, each OVERWRITE_IF_EXISTS_OR_ADD."""
    p = Principal(subject="alice", issuer="https://idp.example", kind="human")
    response = ResponseBuilder().build(allowed(p))
    assert response.status.code == code_pb2.OK
    assert response.WhichOneof("http_response") == "ok_response"
    assert headers_of(response) == {
        "x-temporal-authz-subject": "alice",
        "x-temporal-authz-issuer": "https://idp.example",
        "x-temporal-authz-kind": "human",
    }
    assert {h.append_action for h in response.ok_response.headers} == {OVERWRITE}


def test_allow_without_principal_removes_identity_headers() -> None:
    """An anonymous allow (health check) strips client-supplied identity headers."""
    response = ResponseBuilder().build(
        Decision.allow(Reason.HEALTH_CHECK, "health check"))
    assert response.status.code == code_pb2.OK
    assert list(response.ok_response.headers) == []
    assert set(response.ok_response.headers_to_remove) == set(IDENTITY)


def test_custom_subject_header_names_the_others() -> None:
    """A custom subject header gives issuer and kind headers with the same prefix."""
    b = ResponseBuilder("x-auth-subject")
    assert headers_of(b.build(allowed(Principal(subject="s", issuer="i", kind="service")))) == {
        "x-auth-subject": "s", "x-auth-issuer": "i", "x-auth-kind": "service"}
    assert set(b.build(Decision.allow(Reason.HEALTH_CHECK, "h")).ok_response.headers_to_remove
               ) == {"x-auth-subject", "x-auth-issuer", "x-auth-kind"}


def test_each_identity_gets_its_own_headers() -> None:
    """Responses reused per identity never leak one caller's subject to another."""
    b = ResponseBuilder()
    first = b.build(allowed(Principal(subject="alice", issuer="i")))
    second = b.build(allowed(Principal(subject="bob", issuer="i")))
    again = b.build(allowed(Principal(subject="alice", issuer="i")))
    assert headers_of(first)["x-temporal-authz-subject"] == "alice"
    assert headers_of(second)["x-temporal-authz-subject"] == "bob"
    assert headers_of(again)["x-temporal-authz-subject"] == "alice"


@pytest.mark.parametrize(("status", "grpc_code"), [
    (401, code_pb2.UNAUTHENTICATED),
    (403, code_pb2.PERMISSION_DENIED),
    (503, code_pb2.UNAVAILABLE),
])
def test_denial_maps_http_status_to_grpc_code(status: int, grpc_code: int) -> None:
    """401 → UNAUTHENTICATED, 403 → PERMISSION_DENIED, 503 → UNAVAILABLE; body is code: msg."""
    d = Decision.deny(Reason.PERMISSION_DENIED, 'subject "a" may not', status=status)
    response = ResponseBuilder().build(d)
    assert response.status.code == grpc_code
    assert response.WhichOneof("http_response") == "denied_response"
    assert response.denied_response.status.code == status
    assert response.denied_response.body == 'permission_denied: subject "a" may not'
    assert response.status.message == response.denied_response.body
    assert [(h.header.key, h.header.value, h.append_action)
            for h in response.denied_response.headers] == [
        (REASON_HEADER, "permission_denied", OVERWRITE)]


def test_unexpected_status_is_still_a_denial() -> None:
    """A status without a mapping is PERMISSION_DENIED to the client, never OK."""
    response = ResponseBuilder.denied(500, Reason.INTERNAL_ERROR, "x")
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert response.denied_response.body == "internal_error: x"


@pytest.mark.parametrize("subject", [
    "alice\r\nx-injected: 1",
    "alice\nevil",
    "\x00alice\x7f",
    "tab\there",
    "nel\x85line\u2028sep",
])
def test_control_characters_in_subject_do_not_reach_a_header(subject: str) -> None:
    """A subject claim with CR/LF/NUL/DEL or other controls is sanitised in the header."""
    response = ResponseBuilder().build(allowed(Principal(subject=subject, issuer="i\r\n")))
    for value in headers_of(response).values():
        assert all(" " <= ch < "\x7f" for ch in value), repr(value)
    assert len(headers_of(response)["x-temporal-authz-subject"]) == len(subject)


def test_header_injection_attempt_is_flattened() -> None:
    """CR/LF in a subject become '?': the value cannot start a new header line."""
    response = ResponseBuilder().build(allowed(Principal(subject="alice\r\nx-injected: 1")))
    assert headers_of(response)["x-temporal-authz-subject"] == "alice??x-injected: 1"


def test_long_subject_is_capped() -> None:
    """A very long subject claim is cut to 256 characters in the header."""
    response = ResponseBuilder().build(allowed(Principal(subject="a" * 10_000)))
    assert headers_of(response)["x-temporal-authz-subject"] == "a" * 256


def _check_request(**http: object) -> external_auth_pb2.CheckRequest:
    return external_auth_pb2.CheckRequest(attributes=attribute_context_pb2.AttributeContext(
        request=attribute_context_pb2.AttributeContext.Request(
            http=attribute_context_pb2.AttributeContext.HttpRequest(**http))))  # type: ignore[arg-type, unused-ignore]


def test_check_input_reads_path_headers_and_raw_body() -> None:
    """Path, method, headers and the raw (bytes) body are taken from the CheckRequest."""
    req = _check_request(path="/a/B", method="POST", raw_body=b"\x00\x00\x00\x00\x00",
                         headers={"content-type": "application/grpc", "authorization": "Bearer t"})
    inp = check_input(req)
    assert (inp.path, inp.method, inp.body) == ("/a/B", "POST", b"\x00\x00\x00\x00\x00")
    assert inp.headers == {"content-type": "application/grpc", "authorization": "Bearer t"}


def test_check_input_joins_repeated_header_map_values() -> None:
    """With Envoy's header_map, repeated headers are joined with a comma (two tokens → 401)."""
    req = _check_request(path="/p", method="POST", header_map=base_pb2.HeaderMap(headers=[
        base_pb2.HeaderValue(key="Authorization", raw_value=b"Bearer a"),
        base_pb2.HeaderValue(key="authorization", raw_value=b"Bearer b"),
        base_pb2.HeaderValue(key="content-type", value="application/grpc"),
    ]))
    assert check_input(req).headers == {"authorization": "Bearer a,Bearer b",
                                        "content-type": "application/grpc"}


def test_string_body_is_refused() -> None:
    """A body sent as a string (pack_as_bytes off) raises BodyNotBytesError."""
    with pytest.raises(BodyNotBytesError):
        check_input(_check_request(path="/p", method="POST", body="\x00\x00\x00\x00\x00"))


def test_http_allow_carries_the_identity_headers_byte_for_byte() -> None:
    """HTTP mode: an allow is a bodiless 200 with the three identity headers."""
    head, body = HttpResponses().build(allowed(Principal("alice", "https://idp", "user")))
    assert (head, body) == (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n"
                            b"x-temporal-authz-subject: alice\r\n"
                            b"x-temporal-authz-issuer: https://idp\r\n"
                            b"x-temporal-authz-kind: user\r\n", b"")


def test_http_anonymous_allow_asks_envoy_to_remove_identity_headers() -> None:
    """HTTP mode: an allow without a principal names the identity headers to remove."""
    head, _ = HttpResponses().build(allowed(None))
    assert head == (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n"
                    b"x-envoy-auth-headers-to-remove: " + ",".join(IDENTITY).encode() + b"\r\n")


def test_http_denial_has_the_reason_as_body_and_header() -> None:
    """HTTP mode: a denial is ``<code>: <message>`` with the code in the reason header."""
    head, body = HttpResponses().build(Decision.deny(Reason.PERMISSION_DENIED, "no"))
    assert body == b"permission_denied: no"
    assert head == (b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    b"content-length: 21\r\n" + REASON_HEADER.encode() + b": permission_denied\r\n")
    assert http_denied(599, "x", "y")[0].startswith(b"HTTP/1.1 599 Error\r\n")
