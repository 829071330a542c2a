"""The Web UI's shape: the access token in ``authorization``, the ID token in
``authorization-extras``. The ID token may label the caller (email, name) for the audit log; it
never grants, never denies, and is never logged.

A fake verifier stands in below the seam (the real ``Authenticator`` is exercised in
``tests/integration/auth/test_id_token_extras.py``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest
import structlog
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from extauthz import methods
from extauthz.auth.types import AuthError, IssuerConfig, VerifiedToken
from extauthz.model import CheckInput, Decision, Reason
from extauthz.phases.attributes import extras_token
from extauthz.pipeline import Pipeline

START = f"/{methods.WORKFLOW_SERVICE}/StartWorkflowExecution"
ISSUER = IssuerConfig(issuer="https://issuer.example")
WRITER = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ3cml0ZXIifQ.d3JpdGVyLXNpZ25hdHVyZQ"
READER = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZWFkZXIifQ.cmVhZGVyLXNpZ25hdHVyZQ"
ID_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJlbWFpbCI6IngifQ.aWQtdG9rZW4tc2lnbmF0dXJl"
DISPLAY = {"email": "writer@example.com", "name": "Wendy Writer"}


class ExtrasVerifier:
    """Access tokens from a dict; ``verify_extras`` answers what it is told and records calls."""

    def __init__(self, extras: Mapping[str, str] | BaseException | None = None):
        self.extras = DISPLAY if extras is None else extras
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def verify(self, token: str) -> VerifiedToken:
        claims = {WRITER: {"sub": "writer", "permissions": ["default:write"]},
                  READER: {"sub": "reader", "permissions": ["default:read"]}}
        if token not in claims:
            raise AuthError(Reason.BAD_SIGNATURE, "token signature does not verify")
        return VerifiedToken(ISSUER, claims[token], time.time() + 60)

    async def verify_extras(self, token: str, **expect: Any) -> Mapping[str, str]:
        self.calls.append((token, expect))
        if isinstance(self.extras, BaseException):
            raise self.extras
        return self.extras


def start_request(token: str, extras: str | None = ID_TOKEN) -> CheckInput:
    body = rr.StartWorkflowExecutionRequest(namespace="default", workflow_id="w")
    message = body.SerializeToString()
    headers = {"content-type": "application/grpc", "authorization": f"Bearer {token}"}
    if extras is not None:
        headers["authorization-extras"] = extras
    return CheckInput(START, headers, b"\0" + len(message).to_bytes(4, "big") + message)


def same_decision(a: Decision, b: Decision) -> bool:
    return (a.allowed, a.reason, a.status, a.message, a.principal, a.target, a.rule) == (
        b.allowed, b.reason, b.status, b.message, b.principal, b.target, b.rule)


async def test_verified_id_token_labels_an_allowed_decision() -> None:
    """The UI shape (bare ID token in authorization-extras) adds email and name to the
    decision, checked against the access token's issuer and subject."""
    verifier = ExtrasVerifier()
    decision = await Pipeline(verifier).check(start_request(WRITER))
    assert decision.allowed and decision.display == DISPLAY
    assert verifier.calls == [(ID_TOKEN, {"issuer": ISSUER.issuer, "subject": "writer"})]


async def test_id_token_labels_but_never_grants() -> None:
    """A reader with a (verified) ID token is still denied a write: the label changes
    nothing but the label."""
    pipeline = Pipeline(ExtrasVerifier())
    labelled = await pipeline.check(start_request(READER))
    plain = await Pipeline(ExtrasVerifier()).check(start_request(READER, extras=None))
    assert not labelled.allowed and labelled.reason == Reason.PERMISSION_DENIED
    assert labelled.display == DISPLAY and plain.display is None
    assert same_decision(labelled, plain)


@pytest.mark.parametrize("error", [
    AuthError(Reason.BAD_SIGNATURE, "token signature does not verify"),
    AuthError(Reason.TOKEN_EXPIRED, "token expired"),
    AuthError(Reason.INVALID_CLAIMS, "the ID token names another subject than the access token"),
    AuthError(Reason.KEYS_UNAVAILABLE, "keys unavailable", 503),
    RuntimeError("boom"),
])
async def test_refused_id_token_never_changes_the_decision(error: BaseException) -> None:
    """Whatever goes wrong with the ID token, the decision is the one made without it, no
    label is added, and the log names the reason but never the token."""
    for token in (WRITER, READER):
        with structlog.testing.capture_logs() as logs:
            decision = await Pipeline(ExtrasVerifier(error)).check(start_request(token))
        plain = await Pipeline(ExtrasVerifier()).check(start_request(token, extras=None))
        assert same_decision(decision, plain) and decision.display is None
        [event] = [e for e in logs if e["event"] == "auth.extras_ignored"]
        expected = str(error.reason) if isinstance(error, AuthError) else "error"
        assert event["reason"] == expected
        assert ID_TOKEN not in repr(logs) and ID_TOKEN.rsplit(".", 1)[1] not in repr(logs)


@pytest.mark.parametrize("header", ["a,b", "Basic dXNlcjpwdw==", "two tokens", " ", "x\ny"])
async def test_malformed_extras_header_is_ignored(header: str) -> None:
    """A value that is not one token is not verified at all; the decision stands."""
    verifier = ExtrasVerifier()
    decision = await Pipeline(verifier).check(start_request(WRITER, extras=header))
    assert decision.allowed and decision.display is None and verifier.calls == []


async def test_no_extras_header_costs_no_extras_verification() -> None:
    """Without the header (SDKs, CLI), verify_extras is never called."""
    verifier = ExtrasVerifier()
    decision = await Pipeline(verifier).check(start_request(WRITER, extras=None))
    assert decision.allowed and decision.display is None and verifier.calls == []


async def test_unauthenticated_request_never_looks_at_extras() -> None:
    """A bad access token is refused as before; the ID token alone authenticates nobody."""
    verifier = ExtrasVerifier()
    decision = await Pipeline(verifier).check(start_request("bad.access.token"))
    assert decision.reason == Reason.BAD_SIGNATURE and decision.display is None
    assert verifier.calls == []


async def test_verifier_without_verify_extras_still_works() -> None:
    """A verifier that has no verify_extras (offline checks, fakes) simply adds no label."""

    class Plain:
        async def verify(self, token: str) -> VerifiedToken:
            return VerifiedToken(ISSUER, {"sub": "writer", "permissions": ["default:write"]},
                                 time.time() + 60)

    decision = await Pipeline(Plain()).check(start_request(WRITER))
    assert decision.allowed and decision.display is None


@pytest.mark.parametrize(("header", "token"), [
    (ID_TOKEN, ID_TOKEN), (f"Bearer {ID_TOKEN}", ID_TOKEN), (f"  {ID_TOKEN} ", ID_TOKEN),
    (f"bearer  {ID_TOKEN}", ID_TOKEN), ("", None), ("a b", None), ("a,b", None),
])
def test_extras_token_accepts_the_bare_ui_shape(header: str, token: str | None) -> None:
    """The UI sends the bare ID token; a Bearer prefix is tolerated; anything else is None."""
    assert extras_token(header) == token


async def test_bad_extras_on_every_call_logs_one_line_per_reason() -> None:
    """A client sending a refused ID token (or a malformed header) on every call writes one
    ``auth.extras_ignored`` line per reason, not one per call; decisions are unchanged."""
    pipeline = Pipeline(ExtrasVerifier(AuthError(Reason.TOKEN_EXPIRED, "token expired")))
    with structlog.testing.capture_logs() as logs:
        for _ in range(50):
            assert (await pipeline.check(start_request(WRITER))).allowed
            assert (await pipeline.check(start_request(WRITER, extras="a,b"))).allowed
    ignored = [e for e in logs if e["event"] == "auth.extras_ignored"]
    assert sorted(e["reason"] for e in ignored) == ["malformed_authorization", "token_expired"]
    assert all(e["suppressed"] == 0 for e in ignored)
