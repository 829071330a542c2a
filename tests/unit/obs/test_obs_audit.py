"""The audit log: who, what, why for every denial and a sample of allows; never a token."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from extauthz import methods
from extauthz.model import STATUS_UNAUTHENTICATED, CheckInput, Decision, Principal, Reason, Target
from extauthz.obs.audit import AUDIT_EVENT, AuditLog

PATH = "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNlY3JldC1ieXRlcw"
EXTRAS = "eyJhbGciOiJSUzI1NiJ9.eyJlbWFpbCI6ImFAYiJ9.ZXh0cmFzLXNpZ25hdHVyZQ"


def request() -> CheckInput:
    return CheckInput(PATH, {
        "authorization": f"Bearer {TOKEN}",
        "authorization-extras": EXTRAS,
        "x-request-id": "req-1",
        "client-name": "temporal-python",
        "client-version": "1.20.0",
        "cookie": "session=secret",
    }, b"")


def decision(allowed: bool) -> Decision:
    entry = methods.lookup(PATH)
    assert entry is not None
    target = Target(entry.method, "payroll", ("other",), ("orders",))
    principal = Principal("alice", "https://idp", "service")
    if allowed:
        return Decision.allow(Reason.ALLOWED, "ok", principal, target, rule="writers")
    return Decision.deny(Reason.PERMISSION_DENIED, "alice may not", principal=principal,
                         target=target, rule="default")


def events(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_denial_is_one_json_event_with_every_field() -> None:
    """A denied check writes one JSON line naming request, caller, target, reason and client."""
    out = io.StringIO()
    AuditLog(0.0, "json", stream=out).record(request(), decision(False), 0.00123)
    [event] = events(out)
    assert event["event"] == AUDIT_EVENT
    assert event["timestamp"].endswith("Z")
    expected = {
        "request_id": "req-1", "decision": "deny", "reason": "permission_denied",
        "rule": "default", "subject": "alice", "principal_kind": "service",
        "issuer": "https://idp", "method": "WorkflowService/StartWorkflowExecution",
        "namespaces": ["payroll", "other"], "task_queues": ["orders"], "latency_ms": 1.23,
        "client_name": "temporal-python", "client_version": "1.20.0", "status": 403,
        "dry_run": False,
    }
    assert {k: event[k] for k in expected} == expected


def test_allowed_checks_are_sampled() -> None:
    """Rate 0 logs no allow, rate 1 logs every allow, and in between the rng decides."""
    out = io.StringIO()
    AuditLog(0.0, "json", stream=out).record(request(), decision(True), 0.001)
    assert out.getvalue() == ""
    AuditLog(1.0, "json", stream=out).record(request(), decision(True), 0.001)
    assert len(events(out)) == 1
    draws = iter([0.05, 0.5])
    sampled = AuditLog(0.1, "json", stream=out, rng=lambda: next(draws))
    sampled.record(request(), decision(True), 0.001)
    sampled.record(request(), decision(True), 0.001)
    assert [e["decision"] for e in events(out)] == ["allow", "allow"]


def test_a_denial_before_authentication_has_no_principal_and_the_raw_path() -> None:
    """A 401 without a target names the path and leaves the caller fields empty."""
    out = io.StringIO()
    no_token = Decision.deny(Reason.MISSING_TOKEN, "no token", status=STATUS_UNAUTHENTICATED)
    AuditLog(0.0, "json", stream=out).record(CheckInput(PATH, {}, b""), no_token, 0.0)
    [event] = events(out)
    assert event["method"] == PATH and event["subject"] is None and event["status"] == 401


def test_tokens_and_authorization_values_never_appear() -> None:
    """Neither the bearer token, its signature, the extras token nor other headers are logged,
    in JSON or console form."""
    for fmt in ("json", "console"):
        out = io.StringIO()
        log = AuditLog(1.0, fmt, stream=out)
        for allowed in (True, False):
            log.record(request(), decision(allowed), 0.001)
        text = out.getvalue()
        assert text
        for secret in (TOKEN, TOKEN.rsplit(".", 1)[1], EXTRAS, EXTRAS.rsplit(".", 1)[1],
                       "Bearer", "session=secret"):
            assert secret not in text, (fmt, secret)


def test_console_format_is_human_readable() -> None:
    """fmt=console renders key=value text, not JSON."""
    out = io.StringIO()
    AuditLog(0.0, "console", stream=out).record(request(), decision(False), 0.001)
    text = out.getvalue()
    assert AUDIT_EVENT in text and "reason=permission_denied" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_sample_rate_outside_0_1_is_refused() -> None:
    """A rate outside [0, 1] is a programming error."""
    with pytest.raises(ValueError, match="between 0 and 1"):
        AuditLog(1.5)
