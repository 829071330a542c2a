"""HTTP API calls through the pipeline: the same steps, reasons and policy as their gRPC twins
(a tiny fake ``TokenVerifier`` below the seam, Temporal's default authorizer or the policy
engine running ``examples/policy.yaml``)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from temporalio.api.taskqueue.v1 import message_pb2 as tq_pb2
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from extauthz import methods
from extauthz.auth.types import AuthError, IssuerConfig, VerifiedToken
from extauthz.interfaces import Authorizer
from extauthz.model import CheckInput, Decision, Reason
from extauthz.obs.metrics import Metrics
from extauthz.obs.observer import Telemetry
from extauthz.pipeline import Pipeline
from extauthz.rules.document import load_file
from extauthz.rules.engine import Engine

REPO = Path(__file__).resolve().parents[2]
ISSUER = IssuerConfig(issuer="https://issuer.example")
WF = f"/{methods.WORKFLOW_SERVICE}"
CLAIMS: dict[str, dict[str, Any]] = {
    "writer": {"sub": "writer", "permissions": ["default:write"]},
    "reader": {"sub": "reader", "permissions": ["default:read"]},
    "root": {"sub": "root", "permissions": ["temporal-system:admin"]},
    "finance": {"sub": "fiona", "groups": ["finance"]},
    "dev": {"sub": "dave", "groups": ["developers"]},
    "billing": {"sub": "billing-svc", "client_id": "billing-svc", "gty": "client-credentials"},
}


class FakeVerifier:
    """Verifies tokens from a dict; records what it saw."""

    def __init__(self, claims: Mapping[str, Mapping[str, Any]] = CLAIMS):
        self.claims = claims
        self.seen: list[str] = []

    async def verify(self, token: str) -> VerifiedToken:
        self.seen.append(token)
        if token not in self.claims:
            raise AuthError(Reason.BAD_SIGNATURE, "token signature does not verify")
        return VerifiedToken(ISSUER, self.claims[token], time.time() + 60)


def http(method: str, path: str, body: Any = None, token: str | None = "writer",
         content_type: str | None = "application/json", **headers: str) -> CheckInput:
    """A CheckInput as Envoy describes an HTTP API call (a dict body is sent as JSON)."""
    h = {k.replace("_", "-"): v for k, v in headers.items()}
    if token is not None:
        h["authorization"] = f"Bearer {token}"
    raw = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    if content_type is not None and raw:
        h["content-type"] = content_type
    return CheckInput(path=path, headers=h, body=raw, method=method)


def grpc_call(name: str, message: Any, token: str = "writer") -> CheckInput:
    """The gRPC twin: the same request as a framed protobuf body."""
    data = message.SerializeToString()
    return CheckInput(path=f"{WF}/{name}",
                      headers={"content-type": "application/grpc",
                               "authorization": f"Bearer {token}"},
                      body=b"\x00" + len(data).to_bytes(4, "big") + data)


async def decide(req: CheckInput, authorizer: Authorizer | None = None,
                 verifier: FakeVerifier | None = None, **kw: Any) -> Decision:
    """Run one check through a fresh pipeline."""
    if authorizer is None:
        return await Pipeline(verifier or FakeVerifier(), **kw).check(req)
    return await Pipeline(verifier or FakeVerifier(), authorizer, **kw).check(req)


NS = "/api/v1/namespaces"


async def test_describe_namespace_allowed_and_denied_by_namespace() -> None:
    """GET /api/v1/namespaces/{ns}: a reader of default may describe it, not payroll."""
    d = await decide(http("GET", f"{NS}/default", token="reader"))
    assert (d.allowed, d.reason) == (True, Reason.ALLOWED)
    assert d.target is not None and d.target.method.short == "WorkflowService/DescribeNamespace"
    d = await decide(http("GET", f"{NS}/payroll", token="reader"))
    assert (d.allowed, d.reason, d.status) == (False, Reason.PERMISSION_DENIED, 403)


async def test_start_needs_write_like_grpc() -> None:
    """POST .../workflows/{id}: writer allowed, reader denied, as StartWorkflowExecution."""
    body = {"workflowType": {"name": "W"}, "taskQueue": {"name": "q"}}
    d = await decide(http("POST", f"{NS}/default/workflows/w1", body))
    assert d.allowed and d.target is not None
    assert (d.target.namespace, d.target.task_queues) == ("default", ("q",))
    d = await decide(http("POST", f"{NS}/default/workflows/w1", body, token="reader"))
    assert (d.allowed, d.reason) == (False, Reason.PERMISSION_DENIED)


async def test_body_namespace_never_decides() -> None:
    """A body namespace that disagrees with the path is ignored (the server overrides it with
    the path): a writer of default may start in default even if the body says payroll, and
    a body saying default does not open payroll."""
    d = await decide(http("POST", f"{NS}/default/workflows/w1", {"namespace": "payroll"}))
    assert d.allowed and d.target is not None and d.target.namespace == "default"
    d = await decide(http("POST", f"{NS}/payroll/workflows/w1", {"namespace": "default"}))
    assert (d.allowed, d.reason) == (False, Reason.PERMISSION_DENIED)
    assert d.target is not None and d.target.namespace == "payroll"


async def test_query_namespace_never_decides() -> None:
    """?namespace= is ignored where the path binds it."""
    d = await decide(http("GET", f"{NS}/payroll/workflows?namespace=default", token="reader"))
    assert (d.allowed, d.reason) == (False, Reason.PERMISSION_DENIED)


async def test_no_token_is_401_with_the_method_named() -> None:
    """Without a token an HTTP API call is MISSING_TOKEN 401, and the decision names the
    method (for metrics and the audit log)."""
    d = await decide(http("GET", f"{NS}/default", token=None))
    assert (d.allowed, d.reason, d.status) == (False, Reason.MISSING_TOKEN, 401)
    assert d.target is not None and d.target.method.name == "DescribeNamespace"


async def test_bad_token_is_401() -> None:
    """A token the verifier rejects is 401 with its reason."""
    d = await decide(http("GET", f"{NS}/default", token="forged"))
    assert (d.allowed, d.reason, d.status) == (False, Reason.BAD_SIGNATURE, 401)


@pytest.mark.parametrize("path", ["/api/v1/system-info", "/system-info"])
async def test_system_info_is_always_allowed(path: str) -> None:
    """GetSystemInfo needs no token over HTTP either (Temporal's default authorizer)."""
    verifier = FakeVerifier()
    d = await decide(http("GET", path, token=None), verifier=verifier)
    assert (d.allowed, d.reason) == (True, Reason.HEALTH_CHECK)
    assert verifier.seen == []


@pytest.mark.parametrize(("method", "path"), [
    ("GET", f"{NS}/default/"), ("GET", "/api/v1//namespaces/default"),
    ("GET", f"{NS}/x/../default"), ("POST", f"{NS}/default"), ("GET", "/API/v1/namespaces/a"),
    ("PUT", f"{NS}/default"), ("GET", "/api/v1/no-such-thing"), ("GET", "/cluster/x"),
])
async def test_unknown_routes_are_denied_before_authentication(method: str, path: str) -> None:
    """No route: UNKNOWN_METHOD 403, and the token is never verified."""
    verifier = FakeVerifier()
    d = await decide(http(method, path), verifier=verifier)
    assert (d.allowed, d.reason, d.status) == (False, Reason.UNKNOWN_METHOD, 403)
    assert verifier.seen == []


async def test_http_api_can_be_switched_off() -> None:
    """With http_api=False every HTTP API path is an unknown method."""
    d = await decide(http("GET", f"{NS}/default"), http_api=False)
    assert (d.allowed, d.reason) == (False, Reason.UNKNOWN_METHOD)


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "application/grpc", "", None,
    "multipart/form-data; boundary=x",
])
async def test_bodies_must_be_json(content_type: str | None) -> None:
    """A body that is not declared JSON is UNSUPPORTED_PROTOCOL (the server would read it as
    JSON anyway, and a form body can turn a POST into a GET there)."""
    verifier = FakeVerifier()
    d = await decide(http("POST", f"{NS}/default/workflows/w1", {"a": 1},
                          content_type=content_type), verifier=verifier)
    assert (d.allowed, d.reason, d.status) == (False, Reason.UNSUPPORTED_PROTOCOL, 403)
    assert verifier.seen == []


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "application/json+no-payload-shorthand"])
async def test_json_content_types(content_type: str) -> None:
    """Both JSON media types Temporal registers are accepted, with parameters."""
    d = await decide(http("POST", f"{NS}/default/workflows/w1", {"taskQueue": {"name": "q"}},
                          content_type=content_type))
    assert d.allowed


async def test_bodyless_call_needs_no_content_type() -> None:
    """GET/DELETE and empty POSTs carry no body: no content-type needed."""
    d = await decide(http("POST", f"{NS}/default/workflows/w1/terminate", content_type=None))
    assert d.allowed


async def test_malformed_json_is_malformed_body() -> None:
    """Broken JSON, or a field sent twice, is MALFORMED_BODY (after authentication)."""
    for raw in (b'{"taskQueue":', b'{"namespace":"a","namespace":"b"}'):
        d = await decide(http("POST", f"{NS}/default/workflows/w1", raw))
        assert (d.allowed, d.reason, d.status) == (False, Reason.MALFORMED_BODY, 403)
        assert d.target is not None and d.target.method.name == "StartWorkflowExecution"


async def test_body_size_is_capped() -> None:
    """A body over max_message_bytes is BODY_TOO_LARGE; a flagged partial body PARTIAL_BODY."""
    big = b'{"taskQueue":{"name":"' + b"q" * 2000 + b'"}}'
    d = await decide(http("POST", f"{NS}/default/workflows/w1", big), max_message_bytes=1000)
    assert (d.allowed, d.reason) == (False, Reason.BODY_TOO_LARGE)
    d = await decide(http("POST", f"{NS}/default/workflows/w1", {"a": 1},
                          x_envoy_auth_partial_body="true"))
    assert (d.allowed, d.reason) == (False, Reason.PARTIAL_BODY)


async def test_empty_namespace_is_missing_namespace() -> None:
    """`%2F` before `workflows` leaves an empty namespace segment: MISSING_NAMESPACE."""
    d = await decide(http("GET", f"{NS}/%2Fworkflows"))
    assert (d.allowed, d.reason) == (False, Reason.MISSING_NAMESPACE)


async def test_namespace_by_id_needs_the_system_role() -> None:
    """?id= on DescribeNamespace is judged as a namespace id, like the gRPC field."""
    d = await decide(http("GET", f"{NS}/default?id=x", token="reader"))
    assert (d.allowed, d.reason) == (False, Reason.NAMESPACE_ID_ONLY)
    assert (await decide(http("GET", f"{NS}/default?id=x", token="root"))).allowed


async def test_cluster_scoped_call_uses_the_system_role() -> None:
    """GET /api/v1/cluster-info (GetClusterInfo) needs a system role, like over gRPC."""
    assert not (await decide(http("GET", "/api/v1/cluster-info"))).allowed
    assert (await decide(http("GET", "/api/v1/cluster-info", token="root"))).allowed


async def test_metrics_label_the_grpc_method() -> None:
    """Metrics count an HTTP API call under its gRPC method, like the gRPC twin."""
    metrics = Metrics()
    observer = Telemetry(metrics)
    req = http("GET", f"{NS}/payroll", token="reader")
    d = await decide(req)
    observer.checked(req, d, 0.001)
    text = generate_latest(metrics.registry).decode()
    assert 'method="WorkflowService/DescribeNamespace"' in text
    assert 'reason="permission_denied"' in text


# ---- the policy engine: the same decisions as the gRPC twins --------------------------------


@pytest.fixture(scope="module")
def engine() -> Engine:
    """examples/policy.yaml, compiled."""
    return Engine(load_file(REPO / "examples" / "policy.yaml"))


def _start(ns: str, queue: str) -> tuple[CheckInput, Any]:
    body = {"workflowType": {"name": "W"}, "taskQueue": {"name": queue}}
    return (http("POST", f"{NS}/{ns}/workflows/w1", body),
            rr.StartWorkflowExecutionRequest(namespace=ns, workflow_id="w1",
                                             task_queue=tq_pb2.TaskQueue(name=queue)))


@pytest.mark.parametrize(("token", "ns", "queue"), [
    ("finance", "payroll", "q"), ("dev", "payroll", "q"), ("dev", "default", "q"),
    ("billing", "default", "billing-1"), ("billing", "default", "other"),
    ("writer", "default", "q"), ("reader", "default", "q"),
])
async def test_policy_start_decides_like_grpc(engine: Engine, token: str, ns: str,
                                              queue: str) -> None:
    """StartWorkflowExecution over HTTP and over gRPC: the same allow/deny, reason and rule
    (rule 1 only-finance-starts-payroll, rule 3 billing queues)."""
    http_req, message = _start(ns, queue)
    http_req = CheckInput(http_req.path, {**http_req.headers, "authorization": f"Bearer {token}"},
                          http_req.body, http_req.method)
    over_http = await decide(http_req, engine)
    over_grpc = await decide(grpc_call("StartWorkflowExecution", message, token), engine)
    assert (over_http.allowed, over_http.reason, over_http.rule) == (
        over_grpc.allowed, over_grpc.reason, over_grpc.rule)
    assert over_http.target == over_grpc.target


@pytest.mark.parametrize(("verb", "suffix", "name", "message"), [
    ("POST", "/terminate", "TerminateWorkflowExecution", rr.TerminateWorkflowExecutionRequest),
    ("POST", "/signal/sig", "SignalWorkflowExecution", rr.SignalWorkflowExecutionRequest),
    ("GET", "", "DescribeWorkflowExecution", rr.DescribeWorkflowExecutionRequest),
])
async def test_policy_developer_rules_decide_like_grpc(engine: Engine, verb: str, suffix: str,
                                                       name: str, message: Any) -> None:
    """Rule 2: developers describe and signal but never terminate — the same over HTTP."""
    req = http(verb, f"{NS}/default/workflows/w1{suffix}", token="dev")
    over_http = await decide(req, engine)
    over_grpc = await decide(grpc_call(name, message(namespace="default"), "dev"), engine)
    assert (over_http.allowed, over_http.reason, over_http.rule) == (
        over_grpc.allowed, over_grpc.reason, over_grpc.rule)
    assert over_http.allowed is (name != "TerminateWorkflowExecution")
