"""The transport-neutral check: attributes → authenticate → map claims → authorize.

A tiny fake ``TokenVerifier`` stands in below the seam: tokens are looked up in a dict.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Mapping
from typing import Any

import pytest
from temporalio.api.command.v1 import message_pb2 as command_pb2
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from devkit.grpcframe import frame
from extauthz import methods, wire
from extauthz.auth.types import AuthError, IssuerConfig, VerifiedToken
from extauthz.model import CheckInput, Decision, Principal, Reason, Target
from extauthz.phases.attributes import bearer_token
from extauthz.pipeline import Pipeline

WF = f"/{methods.WORKFLOW_SERVICE}"
START = f"{WF}/StartWorkflowExecution"
COMPLETE = f"{WF}/RespondWorkflowTaskCompleted"
DESCRIBE_WF = f"{WF}/DescribeWorkflowExecution"
ISSUER = IssuerConfig(issuer="https://issuer.example")
# a token that must never show up in a decision
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ3cml0ZXIifQ.c2VjcmV0LXNpZ25hdHVyZQ"
CLAIMS: dict[str, dict[str, Any]] = {
    TOKEN: {"sub": "writer", "permissions": ["default:write"]},
    "reader-token": {"sub": "reader", "permissions": ["default:read"]},
    "admin-token": {"sub": "nsadmin", "permissions": ["default:admin"]},
    "sys-token": {"sub": "root", "permissions": ["temporal-system:admin"]},
}


class FakeVerifier:
    """Verifies tokens from a dict; raises what it is told to; records what it saw."""

    def __init__(self, claims: Mapping[str, Mapping[str, Any]] = CLAIMS,
                 error: BaseException | None = None):
        self.claims = claims
        self.error = error
        self.seen: list[str] = []

    async def verify(self, token: str) -> VerifiedToken:
        self.seen.append(token)
        if self.error is not None:
            raise self.error
        if token not in self.claims:
            raise AuthError(Reason.BAD_SIGNATURE, "token signature does not verify")
        return VerifiedToken(ISSUER, self.claims[token], time.time() + 60)


def start_body(namespace: str = "default") -> bytes:
    """A framed StartWorkflowExecutionRequest."""
    return frame(rr.StartWorkflowExecutionRequest(
        namespace=namespace, workflow_id="wf").SerializeToString())


def request(path: str = START, body: bytes | None = None, token: str | None = TOKEN,
            method: str = "POST", extra: Mapping[str, str] | None = None,
            **headers: str) -> CheckInput:
    """A CheckInput as Envoy would describe a gRPC call (``content_type=`` → content-type)."""
    h = {"content-type": "application/grpc"}
    if token is not None:
        h["authorization"] = f"Bearer {token}"
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    h.update(extra or {})
    return CheckInput(path=path, headers=h, body=start_body() if body is None else body,
                      method=method)


async def decide(req: CheckInput, verifier: FakeVerifier | None = None, **kw: Any) -> Decision:
    """Run one check through a fresh pipeline."""
    return await Pipeline(verifier or FakeVerifier(), **kw).check(req)


async def test_writer_may_start_a_workflow_in_their_namespace() -> None:
    """The happy path: a verified writer on `default` starts a workflow there."""
    d = await decide(request())
    assert (d.allowed, d.reason, d.status) == (True, Reason.ALLOWED, 200)
    assert d.principal is not None and d.principal.subject == "writer"
    assert d.target is not None and d.target.namespace == "default"


async def test_writer_may_not_start_a_workflow_elsewhere() -> None:
    """The body's namespace decides: writer on `default` is denied in `payments`."""
    d = await decide(request(body=start_body("payments")))
    assert (d.allowed, d.reason, d.status) == (False, Reason.PERMISSION_DENIED, 403)


@pytest.mark.parametrize("path", [
    f"{WF}/NoSuchMethod", f"/{START}", f"{START}/", f"{START}?x", START.lower(),
    f"{WF}%2FStartWorkflowExecution", f"{WF}/../{START[1:]}",
])
async def test_unknown_method_is_denied_before_authentication(path: str) -> None:
    """A path not exactly in the table is UNKNOWN_METHOD 403; the token is never verified."""
    verifier = FakeVerifier()
    d = await decide(request(path=path), verifier)
    assert (d.allowed, d.reason, d.status) == (False, Reason.UNKNOWN_METHOD, 403)
    assert verifier.seen == []


@pytest.mark.parametrize("http_method", ["GET", "PUT", "OPTIONS", "post", ""])
async def test_non_post_is_unknown_method(http_method: str) -> None:
    """A gRPC path reached with an HTTP method other than POST is not a gRPC call."""
    d = await decide(request(method=http_method))
    assert (d.allowed, d.reason) == (False, Reason.UNKNOWN_METHOD)


@pytest.mark.parametrize("path", ["/grpc.health.v1.Health/Check", f"{WF}/GetSystemInfo"])
async def test_always_allowed_methods_need_no_token(path: str) -> None:
    """Health check and GetSystemInfo are allowed without any token (Temporal's default)."""
    verifier = FakeVerifier()
    d = await decide(request(path=path, token=None, body=frame(b"")), verifier)
    assert (d.allowed, d.reason) == (True, Reason.HEALTH_CHECK)
    assert verifier.seen == []


async def test_get_cluster_info_is_not_always_allowed() -> None:
    """Only the two bypass methods skip authentication; GetClusterInfo needs a token."""
    d = await decide(request(path=f"{WF}/GetClusterInfo", token=None, body=frame(b"")))
    assert (d.allowed, d.reason, d.status) == (False, Reason.MISSING_TOKEN, 401)


@pytest.mark.parametrize("value", ["true", "TRUE", " True "])
async def test_partial_body_header_is_denied(value: str) -> None:
    """`x-envoy-auth-partial-body: true` is PARTIAL_BODY even when the frame looks whole."""
    d = await decide(request(extra={"x-envoy-auth-partial-body": value}))
    assert (d.allowed, d.reason, d.status) == (False, Reason.PARTIAL_BODY, 403)


async def test_partial_body_false_is_judged_normally() -> None:
    """`x-envoy-auth-partial-body: false` does not block the decision."""
    assert (await decide(request(extra={"x-envoy-auth-partial-body": "false"}))).allowed


@pytest.mark.parametrize("content_type", [
    "application/grpc-web", "application/grpc-web+proto", "application/grpc-web-text",
    "application/json", "text/plain", "", "application/grpcx",
])
async def test_non_grpc_content_type_is_unsupported_protocol(content_type: str) -> None:
    """gRPC-Web, JSON or no content type: UNSUPPORTED_PROTOCOL, never a guess at the body."""
    d = await decide(request(content_type=content_type))
    assert (d.allowed, d.reason, d.status) == (False, Reason.UNSUPPORTED_PROTOCOL, 403)


@pytest.mark.parametrize("content_type", ["application/grpc+proto", "application/grpc; x=y"])
async def test_grpc_content_type_variants_are_accepted(content_type: str) -> None:
    """`application/grpc+proto` and parameters after `;` are still gRPC."""
    assert (await decide(request(content_type=content_type))).allowed


async def test_missing_token_is_401() -> None:
    """No authorization header: 401 MISSING_TOKEN."""
    d = await decide(request(token=None))
    assert (d.allowed, d.reason, d.status) == (False, Reason.MISSING_TOKEN, 401)


@pytest.mark.parametrize(("header", "reason"), [
    ("", Reason.MISSING_TOKEN),
    ("   ", Reason.MISSING_TOKEN),
    (f"Bearer {TOKEN},Bearer {TOKEN}", Reason.MALFORMED_AUTHORIZATION),
    (f"Bearer {TOKEN}, Bearer other", Reason.MALFORMED_AUTHORIZATION),
    (f"Basic {TOKEN}", Reason.MALFORMED_AUTHORIZATION),
    ("Basic dXNlcjpwYXNz", Reason.MALFORMED_AUTHORIZATION),
    (TOKEN, Reason.MALFORMED_AUTHORIZATION),
    ("Bearer", Reason.MALFORMED_AUTHORIZATION),
    ("Bearer a b", Reason.MALFORMED_AUTHORIZATION),
    (f"Bearer {TOKEN} extra", Reason.MALFORMED_AUTHORIZATION),
    (f"Bearer\t{TOKEN}", Reason.MALFORMED_AUTHORIZATION),
    (f"Bearer {TOKEN}\nx", Reason.MALFORMED_AUTHORIZATION),
    (f"Bearer{TOKEN}", Reason.MALFORMED_AUTHORIZATION),
    (f"Token {TOKEN}", Reason.MALFORMED_AUTHORIZATION),
])
async def test_malformed_authorization_is_401(header: str, reason: Reason) -> None:
    """Anything but exactly one `Bearer <token>` is a 401 and the verifier is never called."""
    verifier = FakeVerifier()
    req = request(token=None, authorization=header)
    d = await decide(req, verifier)
    assert (d.allowed, d.reason, d.status) == (False, reason, 401)
    assert verifier.seen == []
    assert TOKEN not in d.message


@pytest.mark.parametrize("header", [f"Bearer {TOKEN},Bearer {TOKEN}", f"Bearer {TOKEN},",
                                    f"Bearer a, Bearer {TOKEN}"],
                         ids=["two-bearers", "trailing-comma", "comma-space"])
async def test_two_authorization_values_are_refused_as_such(header: str) -> None:
    """Two authorization values (Envoy joins repeated headers with a comma): 401, says so."""
    d = await decide(request(token=None, authorization=header))
    assert (d.allowed, d.reason, d.status) == (False, Reason.MALFORMED_AUTHORIZATION, 401)
    assert "more than one authorization value" in d.message


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
async def test_bearer_scheme_is_case_insensitive(scheme: str) -> None:
    """The auth scheme is case-insensitive: `bearer <token>` works."""
    verifier = FakeVerifier()
    d = await decide(request(token=None, authorization=f"{scheme} {TOKEN}"), verifier)
    assert d.allowed
    assert verifier.seen == [TOKEN]


def test_bearer_token_returns_exactly_the_token() -> None:
    """The extracted token is the credential alone, without scheme or surrounding spaces."""
    assert bearer_token(f"  Bearer   {TOKEN}  ") == TOKEN


@pytest.mark.parametrize(("error", "status"), [
    (AuthError(Reason.TOKEN_EXPIRED, "token expired 5 minutes ago"), 401),
    (AuthError(Reason.AUDIENCE_MISMATCH, "audience is not temporal"), 401),
    (AuthError(Reason.KEYS_UNAVAILABLE, "issuer keys unavailable", status=503), 503),
])
async def test_verifier_auth_error_becomes_its_denial(error: AuthError, status: int) -> None:
    """An AuthError from the verifier is a denial with its own reason, message and status."""
    d = await decide(request(), FakeVerifier(error=error))
    assert (d.allowed, d.reason, d.status, d.message) == (
        False, error.reason, status, error.message)
    assert d.target is not None and d.target.method.name == "StartWorkflowExecution"


async def test_unknown_token_is_denied() -> None:
    """A token the verifier does not accept is denied (401)."""
    d = await decide(request(token="not-a-known-token"))
    assert (d.allowed, d.reason, d.status) == (False, Reason.BAD_SIGNATURE, 401)


@pytest.mark.parametrize("error", [RuntimeError(TOKEN), KeyError("x"), ValueError("boom"),
                                   ZeroDivisionError()])
async def test_unexpected_verifier_exception_is_internal_error_503(error: Exception) -> None:
    """A verifier that raises something unexpected fails closed: INTERNAL_ERROR 503."""
    d = await decide(request(), FakeVerifier(error=error))
    assert (d.allowed, d.reason, d.status) == (False, Reason.INTERNAL_ERROR, 503)
    assert TOKEN not in d.message  # the exception text (here: the token) is not echoed


async def test_unexpected_authorizer_exception_is_internal_error_503() -> None:
    """An authorizer that raises is a 503 denial, never an allow."""
    def broken(principal: Principal, target: Target) -> Decision:
        raise RuntimeError("bug")

    d = await decide(request(), authorizer=broken)
    assert (d.allowed, d.reason, d.status) == (False, Reason.INTERNAL_ERROR, 503)


async def test_custom_authorizer_receives_principal_and_target() -> None:
    """The pipeline hands the mapped principal and the scanned target to the authorizer."""
    seen: list[tuple[Principal, Target]] = []

    def record(principal: Principal, target: Target) -> Decision:
        seen.append((principal, target))
        return Decision.deny(Reason.EXPLICIT_DENY, "no")

    d = await decide(request(), authorizer=record)
    assert d.reason is Reason.EXPLICIT_DENY
    [(principal, target)] = seen
    assert principal.subject == "writer" and principal.issuer == ISSUER.issuer
    assert target.namespace == "default" and target.method.name == "StartWorkflowExecution"


@pytest.mark.parametrize(("body_ns", "header_ns", "allowed"), [
    ("default", "payments", True),  # header disagrees: the body still allows
    ("payments", "default", False),  # header claims an allowed namespace: still denied
    ("default", "", True),
])
async def test_temporal_namespace_header_never_changes_the_decision(
    body_ns: str, header_ns: str, allowed: bool
) -> None:
    """The `temporal-namespace` header is ignored: only the body's namespace counts."""
    plain = await decide(request(body=start_body(body_ns)))
    with_header = await decide(request(body=start_body(body_ns),
                                       extra={"temporal-namespace": header_ns}))
    assert plain.allowed is with_header.allowed is allowed
    assert (plain.reason, plain.message) == (with_header.reason, with_header.message)
    assert with_header.target is not None and with_header.target.namespace == body_ns


async def test_empty_namespace_is_missing_namespace_even_for_system_admin() -> None:
    """A namespace-scoped call with no namespace in the body is MISSING_NAMESPACE."""
    body = frame(rr.RespondActivityTaskCompletedRequest(task_token=b"tok").SerializeToString())
    d = await decide(request(path=f"{WF}/RespondActivityTaskCompleted", body=body,
                             token="sys-token"))
    assert (d.allowed, d.reason, d.status) == (False, Reason.MISSING_NAMESPACE, 403)


async def test_malformed_body_is_denied_with_the_bodys_reason() -> None:
    """A body that cannot be judged is refused with the body's reason (after authentication)."""
    d = await decide(request(body=b"\x00\x00\x00\x00\x09\x0a\x02"))
    assert (d.allowed, d.reason, d.status) == (False, Reason.MALFORMED_BODY, 403)


async def test_anonymous_caller_gets_401_before_any_body_scan() -> None:
    """No token: 401 without reading the body (a body that a scan would reject as malformed
    still gets missing_token), so an anonymous flood of huge bodies costs no scan."""
    # 50,000 fields, then one that runs past the end
    body = frame(b"\x1a\x00" * 50_000 + b"\x12\xff")
    d = await decide(request(path=COMPLETE, body=body, token=None))
    assert (d.allowed, d.reason, d.status) == (False, Reason.MISSING_TOKEN, 401)
    d = await decide(request(path=COMPLETE, body=body))
    assert (d.allowed, d.reason) == (False, Reason.MALFORMED_BODY)


async def test_scan_budget_bounds_the_cost_of_one_authenticated_request() -> None:
    """Millions of tiny repeated elements are refused as too large instead of being scanned;
    2,000 commands (Temporal's default cap on pending activities) are read."""
    over = frame(b"\x12\x00" * (wire.DEFAULT_SCAN_BUDGET // 2 + 1))
    d = await decide(request(path=COMPLETE, body=over))
    assert (d.allowed, d.reason) == (False, Reason.BODY_TOO_LARGE)
    under = rr.RespondWorkflowTaskCompletedRequest(namespace="default")
    for _ in range(2_000):
        under.commands.add()
    d = await decide(request(path=COMPLETE, body=frame(under.SerializeToString())))
    assert d.reason is not Reason.BODY_TOO_LARGE


async def test_gzip_body_is_read_through_grpc_encoding() -> None:
    """A gzip-compressed request is judged on its decompressed namespace."""
    msg = rr.StartWorkflowExecutionRequest(namespace="payments").SerializeToString()
    body = frame(gzip.compress(msg), 1)
    d = await decide(request(body=body, grpc_encoding="gzip"))
    assert (d.allowed, d.reason) == (False, Reason.PERMISSION_DENIED)
    assert d.target is not None and d.target.namespace == "payments"
    d = await decide(request(body=body, grpc_encoding="snappy"))
    assert d.reason is Reason.UNSUPPORTED_ENCODING


async def test_max_message_bytes_is_enforced() -> None:
    """A message over the pipeline's limit is BODY_TOO_LARGE."""
    d = await decide(request(), max_message_bytes=8)
    assert (d.allowed, d.reason) == (False, Reason.BODY_TOO_LARGE)


async def test_cross_namespace_command_is_denied() -> None:
    """A workflow task completion signalling into a namespace the caller lacks is denied."""
    req = rr.RespondWorkflowTaskCompletedRequest(namespace="default", commands=[
        command_pb2.Command(signal_external_workflow_execution_command_attributes=(
            command_pb2.SignalExternalWorkflowExecutionCommandAttributes(
                namespace="payments", signal_name="s")))])
    d = await decide(request(path=f"{WF}/RespondWorkflowTaskCompleted",
                             body=frame(req.SerializeToString())))
    assert (d.allowed, d.reason) == (False, Reason.PERMISSION_DENIED)
    assert '"payments"' in d.message


async def test_describe_namespace_by_id_needs_system_role() -> None:
    """DescribeNamespace{id} is refused for a namespace admin and allowed for the system role."""
    body = frame(rr.DescribeNamespaceRequest(id="0b5f-uuid").SerializeToString())
    path = f"{WF}/DescribeNamespace"
    d = await decide(request(path=path, body=body, token="admin-token"))
    assert (d.allowed, d.reason) == (False, Reason.NAMESPACE_ID_ONLY)
    assert (await decide(request(path=path, body=body, token="sys-token"))).allowed


async def test_decisions_never_contain_the_token() -> None:
    """Across allows and every kind of denial, the bearer token is never in a message."""
    cases = [
        request(), request(body=start_body("payments")), request(path=f"{WF}/Nope"),
        request(body=b"\x00"), request(content_type="application/json"),
        request(token=None, authorization=f"Bearer {TOKEN},x"),
        request(token=None, authorization=f"Basic {TOKEN}"),
        request(extra={"x-envoy-auth-partial-body": "true"}),
    ]
    for req in cases:
        d = await decide(req)
        assert TOKEN not in d.message
    d = await decide(request(), FakeVerifier(error=AuthError(Reason.BAD_SIGNATURE, "bad")))
    assert TOKEN not in d.message


async def test_principal_follows_the_verified_token() -> None:
    """Two tokens through one pipeline map to their own principals (no stale memo)."""
    pipeline = Pipeline(FakeVerifier())
    first = await pipeline.check(request(token="reader-token", path=DESCRIBE_WF,
                                         body=start_body()))
    second = await pipeline.check(request(token=TOKEN))
    third = await pipeline.check(request(token="reader-token"))
    assert first.allowed and first.principal is not None
    assert first.principal.subject == "reader"
    assert second.allowed and second.principal is not None
    assert second.principal.subject == "writer"
    assert not third.allowed  # a reader may not start a workflow
