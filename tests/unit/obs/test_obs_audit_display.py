"""The audit log's display label: email and name of the Web UI's verified ID token, beside
(never instead of) the access token's subject; the ID token itself never appears."""

from __future__ import annotations

import dataclasses
import io
import json

from extauthz import methods
from extauthz.model import CheckInput, Decision, Principal, Reason, Target
from extauthz.obs.audit import AuditLog

PATH = "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution"
ID_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJlbWFpbCI6ImFAYiJ9.aWQtdG9rZW4tc2lnbmF0dXJl"


def _decision() -> Decision:
    entry = methods.lookup(PATH)
    assert entry is not None
    return Decision.deny(Reason.PERMISSION_DENIED, "no", principal=Principal("u-123", "https://idp"),
                         target=Target(entry.method, "payroll"))


def _event(decision: Decision) -> dict[str, object]:
    out = io.StringIO()
    req = CheckInput(PATH, {"authorization-extras": ID_TOKEN}, b"")
    AuditLog(1.0, "json", stream=out).record(req, decision, 0.001)
    event: dict[str, object] = json.loads(out.getvalue())
    assert ID_TOKEN not in out.getvalue() and ID_TOKEN.rsplit(".", 1)[1] not in out.getvalue()
    return event


def test_display_fields_label_the_subject() -> None:
    """A decision with a display label logs email and display_name next to the subject."""
    labelled = dataclasses.replace(
        _decision(), display={"email": "alice@example.com", "name": "Alice"})
    event = _event(labelled)
    assert (event["subject"], event["email"], event["display_name"]) == (
        "u-123", "alice@example.com", "Alice")


def test_preferred_username_is_the_fallback_name() -> None:
    """Without `name`, `preferred_username` is the display name."""
    event = _event(dataclasses.replace(_decision(), display={"preferred_username": "alice"}))
    assert (event["email"], event["display_name"]) == (None, "alice")


def test_no_label_without_a_verified_id_token() -> None:
    """The header alone labels nothing: only the pipeline's verified display does."""
    event = _event(_decision())
    assert (event["email"], event["display_name"]) == (None, None)
