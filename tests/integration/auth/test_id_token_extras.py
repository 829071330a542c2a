"""The Web UI's two tokens through the real pipeline and ``Authenticator`` (dev issuers over
loopback): the ID token in ``authorization-extras`` labels the audit event with email/name once
verified and matched to the access token's issuer and subject; it never grants a role, never
blocks, and neither token is ever logged."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from support_auth import config_for, running
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from devkit.grpcframe import frame
from devkit.issuer import DevIssuer
from extauthz import methods
from extauthz.model import CheckInput, Decision, Reason
from extauthz.obs.audit import AuditLog
from extauthz.pipeline import Pipeline

START = f"/{methods.WORKFLOW_SERVICE}/StartWorkflowExecution"
DESCRIBE = f"/{methods.WORKFLOW_SERVICE}/DescribeNamespace"
QUIET: dict[str, Any] = {"refresh_interval_seconds": 3600.0}


@pytest.fixture(scope="module")
def other() -> Iterator[DevIssuer]:
    """A second trusted issuer."""
    with DevIssuer() as issuer:
        yield issuer


def _call(path: str, access: str, id_token: str | None) -> CheckInput:
    message = (rr.StartWorkflowExecutionRequest(namespace="default", workflow_id="w")
               if path == START else rr.DescribeNamespaceRequest(namespace="default"))
    data = message.SerializeToString()
    headers = {"content-type": "application/grpc", "authorization": f"Bearer {access}",
               "x-request-id": "r-1"}
    if id_token is not None:
        headers["authorization-extras"] = id_token  # bare, as the Web UI sends it
    return CheckInput(path, headers, frame(data))


def _id_token(dev: DevIssuer, sub: str = "u-alice", **claims: Any) -> str:
    """An ID token as an IdP issues it to the UI: the UI's client id as audience."""
    return dev.mint({"sub": sub, "aud": "temporal-ui", "email": "alice@example.com",
                     "name": "Alice Example", **claims})


def _audit(req: CheckInput, decision: Decision) -> tuple[dict[str, Any], str]:
    out = io.StringIO()
    AuditLog(1.0, "json", stream=out).record(req, decision, 0.001)
    return json.loads(out.getvalue()), out.getvalue()


async def test_web_ui_shape_is_allowed_and_labelled(dev: DevIssuer) -> None:
    """Access token (read) + the user's ID token: allowed on the access token's roles, the
    audit event carries the ID token's email and name and neither token."""
    access = dev.mint({"sub": "u-alice", "permissions": ["default:read"]})
    id_token = _id_token(dev)
    async with running(config_for(dev, **QUIET)) as auth:
        req = _call(DESCRIBE, access, id_token)
        decision = await Pipeline(auth).check(req)
    assert decision.allowed and decision.display is not None
    event, text = _audit(req, decision)
    assert (event["subject"], event["email"], event["display_name"]) == (
        "u-alice", "alice@example.com", "Alice Example")
    for secret in (access, id_token, access.rsplit(".", 1)[1], id_token.rsplit(".", 1)[1]):
        assert secret not in text


async def test_roles_in_the_id_token_grant_nothing(dev: DevIssuer) -> None:
    """An ID token claiming `temporal-system:admin` does not let a reader start a workflow."""
    access = dev.mint({"sub": "u-alice", "permissions": ["default:read"]})
    id_token = _id_token(dev, permissions=["temporal-system:admin", "default:admin"])
    async with running(config_for(dev, **QUIET)) as auth:
        decision = await Pipeline(auth).check(_call(START, access, id_token))
    assert not decision.allowed and decision.reason == Reason.PERMISSION_DENIED
    assert decision.display is not None and decision.display["email"] == "alice@example.com"


def _bad_id_tokens(dev: DevIssuer, other: DevIssuer) -> dict[str, tuple[str, str]]:
    """ID tokens that must not label: (token, the reason the pipeline logs)."""
    good = _id_token(dev)
    head, body, _ = good.split(".")
    return {
        "forged": (f"{head}.{body}.{'A' * 342}", "bad_signature"),
        "expired": (_id_token(dev, exp=1_000), "token_expired"),
        "another subject": (_id_token(dev, sub="u-mallory"), "invalid_claims"),
        "another trusted issuer": (_id_token(other), "issuer_mismatch"),
        "untrusted issuer": (_id_token(dev, iss="https://evil.example"), "unknown_issuer"),
        "not a jwt": ("not-a-jwt", "malformed_token"),
    }


async def test_bad_id_tokens_never_change_the_decision(dev: DevIssuer, other: DevIssuer) -> None:
    """Forged, expired, foreign-subject, foreign-issuer or garbage ID tokens: the decision is
    exactly the one without the header (allowed for the reader's describe, denied for its
    start), no label; the log says why and never holds a token."""
    access = dev.mint({"sub": "u-alice", "permissions": ["default:read"]})
    async with running(config_for(dev, **QUIET), config_for(other, **QUIET)) as auth:
        for name, (id_token, reason) in _bad_id_tokens(dev, other).items():
            for path in (DESCRIBE, START):
                # a fresh pipeline per call: `auth.extras_ignored` is rate-limited per reason
                # within one (test_pipeline_extras pins that)
                pipeline = Pipeline(auth)
                plain = await pipeline.check(_call(path, access, None))
                with structlog.testing.capture_logs() as logs:
                    decision = await pipeline.check(_call(path, access, id_token))
                assert (decision.allowed, decision.reason, decision.message) == (
                    plain.allowed, plain.reason, plain.message), name
                assert decision.display is None, name
                ignored = [e for e in logs if e["event"] == "auth.extras_ignored"]
                assert [e["reason"] for e in ignored] == [reason], (name, ignored)
                for secret in (access, id_token):
                    assert secret not in repr(logs)
                event, _ = _audit(_call(path, access, id_token), decision)
                assert event["email"] is None


async def test_id_token_of_a_removed_key_stops_labelling() -> None:
    """A cached ID token whose key the issuer removed is verified again (and refused)."""
    fresh = DevIssuer().start()
    try:
        access_kid = fresh.current_kid
        id_token = _id_token(fresh)
        async with running(config_for(fresh, **QUIET, unknown_kid_refetch_seconds=0.01)) as auth:
            pipeline = Pipeline(auth)
            first = await pipeline.check(_call(DESCRIBE, fresh.mint(
                {"sub": "u-alice", "permissions": ["default:read"]}), id_token))
            assert first.display is not None
            fresh.rotate(drop_old=True)
            assert fresh.current_kid != access_kid
            await auth.stores[fresh.url].refresh()
            access = fresh.mint({"sub": "u-alice", "permissions": ["default:read"]})
            second = await pipeline.check(_call(DESCRIBE, access, id_token))
        assert second.allowed and second.display is None
    finally:
        fresh.stop()


async def test_id_token_with_an_unknown_kid_never_triggers_a_refetch() -> None:
    """An ID token signed by a key the server has not loaded is left unlabelled at once
    (`unknown_key`): no JWKS request, so a label never waits on the network."""
    with DevIssuer() as fresh:
        access = fresh.mint({"sub": "u-alice", "permissions": ["default:read"]})
        unpublished = fresh.add_key(publish=False)
        id_token = fresh.mint({"sub": "u-alice", "email": "a@example.com"}, kid=unpublished)
        async with running(config_for(fresh, **QUIET, unknown_kid_refetch_seconds=0.01)) as auth:
            fetches = fresh.jwks_requests
            with structlog.testing.capture_logs() as logs:
                decision = await Pipeline(auth).check(_call(DESCRIBE, access, id_token))
            assert fresh.jwks_requests == fetches
    assert decision.allowed and decision.display is None
    assert [e["reason"] for e in logs if e["event"] == "auth.extras_ignored"] == ["unknown_key"]


async def test_labelled_check_on_cached_tokens_does_not_suspend(dev: DevIssuer) -> None:
    """With both tokens cached, a labelled check completes without suspending (the HTTP
    adapter answers such checks synchronously, outside any task)."""
    access = dev.mint({"sub": "u-alice", "permissions": ["default:read"]})
    id_token = _id_token(dev)
    async with running(config_for(dev, **QUIET)) as auth:
        pipeline = Pipeline(auth)
        req = _call(DESCRIBE, access, id_token)
        assert (await pipeline.check(req)).display is not None  # warms both caches
        coro = pipeline.check(req)
        with pytest.raises(StopIteration) as done:
            coro.send(None)
    decision: Decision = done.value.value
    assert decision.allowed and decision.display is not None
