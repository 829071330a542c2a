"""Temporal's HTTP/JSON API end to end: real HTTP requests (httpx) → real Envoy → the real authz
server → the real Temporal dev server's HTTP port; with Envoy's gRPC and its HTTP ext_authz
protocol (the ``transport`` fixture).

Two kinds of test. *Facts* ask the dev server's HTTP port directly (no Envoy) how it decodes
paths, which of path, body and query wins, and check ``extauthz.httpapi`` reads the same. *Through
Envoy* tests call the API with tokens from the dev issuer and check the same policy decides as
for the gRPC twins, that tricks are refused and never reach the upstream.
"""

from __future__ import annotations

import http.client
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from devkit import envoyconfig, ports
from devkit.components import EnvoyInstance, IssuerInstance, TemporalInstance, policy_stack
from extauthz import httpapi, wire
from extauthz.model import Reason

REPO = Path(__file__).resolve().parents[2]
FILES = {"grpc": "envoy.yaml", "http": "envoy-http.yaml"}
HTTP_RQ = "cluster.temporal_http.upstream_rq_total"
NS = "/api/v1/namespaces"
TIMEOUT = 15.0


def _base(address: tuple[str, int]) -> str:
    return f"http://{address[0]}:{address[1]}"


def _direct(temporal: TemporalInstance) -> httpx.Client:
    """A client for the dev server's HTTP API port, no Envoy, no authz."""
    assert temporal.http_address is not None
    return httpx.Client(base_url=_base(temporal.http_address), timeout=TIMEOUT)


def _via(envoy: EnvoyInstance, token: str | None = None) -> httpx.Client:
    """A client for Envoy's external listener, with a bearer token."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=_base(envoy.listen), headers=headers, timeout=TIMEOUT)


def _raw_get(client: httpx.Client, path: str) -> httpx.Response:
    """GET a path exactly as written, with the client's base URL and headers (httpx itself
    removes `.` and `..` segments, so the request goes out through http.client)."""
    url = client.base_url
    conn = http.client.HTTPConnection(url.host, url.port, timeout=TIMEOUT)
    try:
        conn.request("GET", path, headers=dict(client.headers))
        answer = conn.getresponse()
        return httpx.Response(answer.status, headers=answer.getheaders(), content=answer.read())
    finally:
        conn.close()


def _start_body(queue: str = "nobody", **extra: Any) -> dict[str, Any]:
    return {"workflowType": {"name": "W"}, "taskQueue": {"name": queue}, **extra}


def _router_namespace(verb: str, path: str, body: bytes = b"") -> str:
    route = httpapi.router().match(verb, path)
    assert route is not None, path
    return wire.scan(memoryview(httpapi.request_message(route, body)), route.entry.plan).namespace


def _workflow_namespace(temporal: TemporalInstance, namespace: str, workflow_id: str) -> bool:
    """Whether the workflow exists in ``namespace`` (asked over gRPC, directly)."""
    with grpc.insecure_channel(temporal.target) as channel:
        describe = channel.unary_unary(
            "/temporal.api.workflowservice.v1.WorkflowService/DescribeWorkflowExecution",
            request_serializer=rr.DescribeWorkflowExecutionRequest.SerializeToString,
            response_deserializer=rr.DescribeWorkflowExecutionResponse.FromString)
        request = rr.DescribeWorkflowExecutionRequest(namespace=namespace)
        request.execution.workflow_id = workflow_id
        try:
            describe(request, timeout=10)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND, err
            return False
    return True


def _denied(response: httpx.Response, status: int, reason: Reason) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.text.startswith(f"{reason.value}: "), response.text
    assert response.headers.get("x-temporal-authz-reason") == reason.value


# ---- facts: the real server's own decoding and precedence -----------------------------------


@pytest.mark.parametrize(("path", "expect"), [
    ("/api/v1/namespaces/def%61ult", "default"),
    ("/cluster/namespaces/default", "default"),  # the older bindings are served too
    ("/api/v1/namespaces/def%2561ult", "def%61ult"),  # decoded once
    ("/api/v1/namespaces/de+f", "de+f"),  # '+' is not a space in a path
    ("/api/v1/namespaces/%2e%2e", ".."),  # an encoded '..' is just a name
    ("/api/v1/namespaces/a:b", "a:b"),
    ("/api/v1/namespaces/default%3Fx", "default?x"),
    ("/api/v1/namespaces/default?namespace=payroll", "default"),  # the query cannot override
])
def test_fact_namespace_decoding_matches_the_server(temporal: TemporalInstance, path: str,
                                                    expect: str) -> None:
    """The namespace the server acts on (the one it describes, or names in NamespaceNotFound)
    is exactly the one the router decodes."""
    with _direct(temporal) as client:
        response = _raw_get(client, path)
    body = response.json()
    acted_on = (body["namespaceInfo"]["name"] if response.status_code == 200
                else body["details"][0]["namespace"])
    assert acted_on == expect, body
    assert _router_namespace("GET", path) == expect


@pytest.mark.parametrize("path", [
    "/api/v1/namespaces/default/",  # 404
    "/API/v1/namespaces/default",  # 404
    "/api/v1/Namespaces/default",  # 404
    "/api/v1/namespaces/a%2Fb",  # %2F splits: no 5-segment route
    "/api/v1//namespaces/default",  # 301: ServeMux cleans, acts on nothing
    "/api/v1/namespaces/x/../default",  # 301
    "/api/v1/namespaces/./default",  # 301
])
def test_fact_unrouted_paths_are_unrouted_here_too(temporal: TemporalInstance,
                                                   path: str) -> None:
    """What the server does not route (404) or only redirects (301) matches no route here."""
    with _direct(temporal) as client:
        response = _raw_get(client, path)
    assert response.status_code in (301, 404), (response.status_code, response.text)
    if response.status_code == 404:
        assert response.json()["message"] == "Not Found"
    assert httpapi.router().match("GET", path) is None


def test_fact_encoded_slash_in_the_first_segment(temporal: TemporalInstance) -> None:
    """The server decodes before splitting, so it serves `/api%2Fv1/...`; the router refuses it
    on purpose (Envoy routes on the raw first segment, so it would reach the gRPC port)."""
    with _direct(temporal) as client:
        assert _raw_get(client, "/api%2Fv1/namespaces/default").status_code == 200
        listed = _raw_get(client, "/api/v1/namespaces/default%2Fworkflows")
    assert listed.status_code == 200 and "namespaceInfo" not in listed.json()
    assert httpapi.router().match("GET", "/api%2Fv1/namespaces/default") is None
    assert httpapi.router().match(
        "GET", "/api/v1/namespaces/default%2Fworkflows").entry.method.name == (  # type: ignore[union-attr]
        "ListWorkflowExecutions")


def test_fact_path_wins_over_body(temporal: TemporalInstance) -> None:
    """A start whose body names another namespace (and workflow id) runs in the path's: the
    server sets path variables after decoding the body. The router reads the same."""
    workflow_id = f"fact-{uuid.uuid4()}"
    body = _start_body(namespace="payroll", workflowId="not-this-one")
    path = f"{NS}/default/workflows/{workflow_id}"
    with _direct(temporal) as client:
        response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    assert _workflow_namespace(temporal, "default", workflow_id)
    assert not _workflow_namespace(temporal, "payroll", workflow_id)
    assert not _workflow_namespace(temporal, "payroll", "not-this-one")
    assert _router_namespace("POST", path, httpx.Request("POST", "/", json=body).content) == (
        "default")


def test_fact_body_binding_ignores_the_query(temporal: TemporalInstance) -> None:
    """A body binding never reads the query: `?taskQueue.name=` does not change the queue."""
    workflow_id = f"fact-{uuid.uuid4()}"
    with _direct(temporal) as client:
        response = client.post(f"{NS}/default/workflows/{workflow_id}",
                               params={"taskQueue.name": "from-query", "namespace": "payroll"},
                               json=_start_body("from-body"))
        assert response.status_code == 200, response.text
        described = client.get(f"{NS}/default/workflows/{workflow_id}")
    assert described.json()["executionConfig"]["taskQueue"]["name"] == "from-body"


@pytest.mark.parametrize(("body", "message"), [
    (b'{"namespace":"a","namespace":"b"}', "duplicate field"),
    (b'{"taskQueue":{"name":"a"},"task_queue":{"name":"b"}}', "duplicate field"),
])
def test_fact_duplicate_fields_are_refused(temporal: TemporalInstance, body: bytes,
                                           message: str) -> None:
    """The server refuses a field sent twice, in either spelling (400); so does the router."""
    path = f"{NS}/default/workflows/fact-dup"
    with _direct(temporal) as client:
        response = client.post(path, content=body,
                               headers={"content-type": "application/json"})
    assert response.status_code == 400 and message in response.json()["message"]
    route = httpapi.router().match("POST", path)
    assert route is not None
    with pytest.raises(httpapi.RequestError):
        httpapi.request_message(route, body)


def test_fact_query_rules(temporal: TemporalInstance) -> None:
    """Query parsing: a singular field given twice and a ';' are 400 at the server and refused
    by the router; an unknown key is ignored by both."""
    base = f"{NS}/default/task-queues/q1"
    with _direct(temporal) as client:
        for query in ("task_queue.kind=1&task_queue.kind=2", "a=1;b=2"):
            assert client.get(f"{base}?{query}").status_code == 400
            route = httpapi.router().match("GET", f"{base}?{query}")
            assert route is not None
            with pytest.raises(httpapi.RequestError):
                httpapi.request_message(route, b"")
        assert client.get(f"{base}?pretty=1&no.such=2").status_code == 200
    assert _router_namespace("GET", f"{base}?pretty=1&no.such=2") == "default"


# ---- the Envoy configs ----------------------------------------------------------------------


def _routes(transport: str) -> list[dict[str, Any]]:
    config = yaml.safe_load((REPO / "envoy" / FILES[transport]).read_text())
    hcm = envoyconfig.http_connection_manager(envoyconfig.listener(config, "external"))
    routes: list[dict[str, Any]] = hcm["route_config"]["virtual_hosts"][0]["routes"]
    return routes


def test_envoy_routes_exactly_the_http_api_prefixes(transport: str) -> None:
    """Both configs send exactly the bindings' first literals to cluster temporal_http (the
    router classifies on the same raw first segment), with ext_authz on, before the catch-all;
    nothing else goes there."""
    routes = _routes(transport)
    to_http = [r for r in routes if r["route"]["cluster"] == "temporal_http"]
    prefixes = {r["match"]["path_separated_prefix"][1:] for r in to_http}
    assert prefixes == httpapi.router().first_segments
    for r in to_http:
        assert set(r["match"]) == {"path_separated_prefix"}
        assert "typed_per_filter_config" not in r
        assert r["route"]["timeout"] == "0s"
    assert routes[-1]["match"] == {"prefix": "/"}
    assert routes[-1]["route"]["cluster"] == "temporal_frontend"


def test_render_moves_the_http_upstream(transport: str) -> None:
    """`http_upstream` (--http-upstream) moves only the temporal_http cluster."""
    rendered = yaml.safe_load(envoyconfig.render(http_upstream=("127.0.0.9", 17243),
                                                 transport=transport))
    endpoint = envoyconfig.cluster(rendered, "temporal_http")["load_assignment"]["endpoints"][0][
        "lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert endpoint == {"address": "127.0.0.9", "port_value": 17243}
    original = envoyconfig.load(transport=transport)
    assert envoyconfig.edit(rendered, http_upstream=("x", 1)) == envoyconfig.edit(
        original, http_upstream=("x", 1))


# ---- through Envoy: the same decisions as gRPC ----------------------------------------------


def test_describe_namespace(envoy: EnvoyInstance, issuer: IssuerInstance) -> None:
    """A `default:read` token describes default over HTTP (200, Temporal's JSON) and is denied
    payroll (403 permission_denied), as over gRPC."""
    with _via(envoy, issuer.mint(sub="hana", permissions=["default:read"])) as client:
        ok = client.get(f"{NS}/default")
        assert ok.status_code == 200, ok.text
        assert ok.json()["namespaceInfo"]["name"] == "default"
        _denied(client.get(f"{NS}/payroll"), 403, Reason.PERMISSION_DENIED)


def test_start_list_signal_terminate(envoy: EnvoyInstance, issuer: IssuerInstance,
                                     temporal: TemporalInstance) -> None:
    """Start, list, signal and terminate a workflow over HTTP: a writer may, a reader only
    lists; each denial is the gRPC twin's (permission_denied)."""
    writer = issuer.mint(sub="wendy", permissions=["default:write"])
    reader = issuer.mint(sub="rita", permissions=["default:read"])
    workflow_id = f"http-{uuid.uuid4()}"
    wf = f"{NS}/default/workflows/{workflow_id}"
    with _via(envoy, writer) as w, _via(envoy, reader) as r:
        _denied(r.post(wf, json=_start_body()), 403, Reason.PERMISSION_DENIED)
        started = w.post(wf, json=_start_body())
        assert started.status_code == 200, started.text
        assert _workflow_namespace(temporal, "default", workflow_id)

        listed = r.get(f"{NS}/default/workflows", params={"query": f"WorkflowId='{workflow_id}'"})
        assert listed.status_code == 200, listed.text
        _denied(r.get(f"{NS}/payroll/workflows"), 403, Reason.PERMISSION_DENIED)

        _denied(r.post(f"{wf}/signal/go", json={}), 403, Reason.PERMISSION_DENIED)
        signalled = w.post(f"{wf}/signal/go", json={"input": ["shorthand payload"]})
        assert signalled.status_code == 200, signalled.text

        _denied(r.post(f"{wf}/terminate", json={"reason": "no"}), 403,
                Reason.PERMISSION_DENIED)
        terminated = w.post(f"{wf}/terminate", json={"reason": "test done"})
        assert terminated.status_code == 200, terminated.text
        described = r.get(wf)
        assert described.json()["workflowExecutionInfo"]["status"] == (
            "WORKFLOW_EXECUTION_STATUS_TERMINATED")


def test_body_namespace_that_disagrees_with_the_path(envoy: EnvoyInstance,
                                                     issuer: IssuerInstance,
                                                     temporal: TemporalInstance) -> None:
    """The path decides, as at the server: a default writer whose body says payroll starts in
    default (allowed, and it runs in default); a body saying default cannot open payroll."""
    writer = issuer.mint(sub="wendy", permissions=["default:write"])
    workflow_id = f"http-{uuid.uuid4()}"
    with _via(envoy, writer) as client:
        ok = client.post(f"{NS}/default/workflows/{workflow_id}",
                         json=_start_body(namespace="payroll"))
        assert ok.status_code == 200, ok.text
        _denied(client.post(f"{NS}/payroll/workflows/{workflow_id}",
                            json=_start_body(namespace="default")), 403,
                Reason.PERMISSION_DENIED)
    assert _workflow_namespace(temporal, "default", workflow_id)
    assert not _workflow_namespace(temporal, "payroll", workflow_id)


def test_percent_encoded_namespace_is_judged_decoded(envoy: EnvoyInstance,
                                                     issuer: IssuerInstance) -> None:
    """`def%61ult` is default (allowed for a default reader, and Temporal answers for default);
    `p%61yroll` is payroll (denied); an encoded `/` splits the segment as at the server."""
    with _via(envoy, issuer.mint(sub="hana", permissions=["default:read"])) as client:
        ok = _raw_get(client, f"{NS}/def%61ult")
        assert ok.status_code == 200 and ok.json()["namespaceInfo"]["name"] == "default"
        _denied(_raw_get(client, f"{NS}/p%61yroll"), 403, Reason.PERMISSION_DENIED)
        listed = _raw_get(client, f"{NS}/default%2Fworkflows")
        assert listed.status_code == 200, listed.text
        _denied(_raw_get(client, f"{NS}/payroll%2Fworkflows"), 403, Reason.PERMISSION_DENIED)


@pytest.mark.parametrize("path", [
    f"{NS}/default/",
    "/api/v1//namespaces/default",
    f"{NS}/x/../default",
    f"{NS}/./default",
    "/API/v1/namespaces/default",
    "/api/v1/Namespaces/default",
    "/api%2Fv1/namespaces/default",
    "/api/v1/no-such-route",
    "/cluster/no-such-route",
    f"{NS}/def%ZZ",
])
def test_path_tricks_are_denied_and_never_reach_temporal(envoy: EnvoyInstance,
                                                         issuer: IssuerInstance,
                                                         path: str) -> None:
    """Trailing slash, `//`, `.`/`..`, another case, an encoded first separator, an unknown
    route, a bad escape: 403 unknown_method (even with a system token), no upstream request."""
    token = issuer.mint(sub="root", permissions=["temporal-system:admin"])
    before = envoy.stats().get(HTTP_RQ, 0)
    with _via(envoy, token) as client:
        _denied(_raw_get(client, path), 403, Reason.UNKNOWN_METHOD)
    assert envoy.stats().get(HTTP_RQ, 0) == before


def test_wrong_http_method_is_unknown(envoy: EnvoyInstance, issuer: IssuerInstance) -> None:
    """POST on a GET-only route (the server's form fallback could turn it into the GET) and
    DELETE where no DELETE binding exists are unknown methods."""
    token = issuer.mint(sub="root", permissions=["temporal-system:admin"])
    with _via(envoy, token) as client:
        _denied(client.post(f"{NS}/default", json={}), 403, Reason.UNKNOWN_METHOD)
        _denied(client.delete(f"{NS}/default"), 403, Reason.UNKNOWN_METHOD)


def test_no_token_is_401(envoy: EnvoyInstance) -> None:
    """Without a token an HTTP API call is 401 missing_token; a bad token 401 too."""
    with _via(envoy) as client:
        _denied(client.get(f"{NS}/default"), 401, Reason.MISSING_TOKEN)
        _denied(client.post(f"{NS}/default/workflows/x", json=_start_body()), 401,
                Reason.MISSING_TOKEN)
    with _via(envoy, "not.a.jwt") as client:
        response = client.get(f"{NS}/default")
    assert response.status_code == 401


def test_system_info_needs_no_token(envoy: EnvoyInstance) -> None:
    """GetSystemInfo is always allowed, over HTTP as over gRPC."""
    with _via(envoy) as client:
        response = client.get("/api/v1/system-info")
    assert response.status_code == 200 and "serverVersion" in response.json()


def test_bodies_must_be_json(envoy: EnvoyInstance, issuer: IssuerInstance) -> None:
    """A body that is not declared JSON is 403 unsupported_protocol; a form body too (it could
    turn a POST into a GET at the server). A client-sent x-extauthz-content-type changes
    nothing: the server judges the real content-type in both transports."""
    token = issuer.mint(sub="wendy", permissions=["default:write"])
    path = f"{NS}/default/workflows/http-{uuid.uuid4()}"
    with _via(envoy, token) as client:
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            _denied(client.post(path, content=b'{"taskQueue":{"name":"q"}}',
                                headers={"content-type": content_type,
                                         "x-extauthz-content-type": "application/json"}),
                    403, Reason.UNSUPPORTED_PROTOCOL)
        ok = client.post(path, json=_start_body(),
                         headers={"x-extauthz-content-type": "text/plain"})
        assert ok.status_code == 200, ok.text


def test_malformed_json_is_malformed_body(envoy: EnvoyInstance, issuer: IssuerInstance) -> None:
    """Broken JSON and a field sent twice are 403 malformed_body."""
    token = issuer.mint(sub="wendy", permissions=["default:write"])
    with _via(envoy, token) as client:
        for body in (b'{"taskQueue":', b'{"namespace":"a","namespace":"b"}'):
            _denied(client.post(f"{NS}/default/workflows/x", content=body,
                                headers={"content-type": "application/json"}),
                    403, Reason.MALFORMED_BODY)


def test_grpc_port_is_not_an_http_api(envoy: EnvoyInstance, issuer: IssuerInstance) -> None:
    """The HTTP API and gRPC share the listener but not the upstream: a gRPC method path sent
    as JSON is refused (unsupported_protocol), never sent to the HTTP port."""
    token = issuer.mint(sub="wendy", permissions=["default:write"])
    before = envoy.stats().get(HTTP_RQ, 0)
    with _via(envoy, token) as client:
        response = client.post(
            "/temporal.api.workflowservice.v1.WorkflowService/DescribeNamespace",
            json={"namespace": "default"})
    _denied(response, 403, Reason.UNSUPPORTED_PROTOCOL)
    assert envoy.stats().get(HTTP_RQ, 0) == before


# ---- through Envoy: the policy file ---------------------------------------------------------


@pytest.fixture(scope="module")
def policy_envoy(e2e_dir: Path, temporal: TemporalInstance, issuer: IssuerInstance,
                 transport: str) -> Iterator[EnvoyInstance]:
    """Envoy → an authz server running examples/policy.yaml → Temporal (gRPC and HTTP)."""
    policy = e2e_dir / f"policy-http-api-{transport}.yaml"
    shutil.copy(REPO / "examples" / "policy.yaml", policy)
    with policy_stack(e2e_dir, temporal, issuer, policy=policy, transport=transport,
                      name="extauthz-http-api-policy", http_api=True) as envoy:
        yield envoy


def test_policy_rules_apply_to_the_http_api(policy_envoy: EnvoyInstance,
                                            issuer: IssuerInstance) -> None:
    """The three rules of examples/policy.yaml, over HTTP: only finance starts in payroll
    (explicit_deny for a developer), developers never terminate (explicit_deny) but describe,
    and the billing service starts only on billing-* queues (task_queue_denied)."""
    finance = issuer.mint(sub="fiona", groups=["finance"])
    dev = issuer.mint(sub="dave", groups=["developers"])
    billing = issuer.mint(sub="billing-svc", client_id="billing-svc", gty="client-credentials")
    payroll_wf = f"{NS}/payroll/workflows/pay-{uuid.uuid4()}"
    default_wf = f"{NS}/default/workflows/dev-{uuid.uuid4()}"
    with (_via(policy_envoy, finance) as f, _via(policy_envoy, dev) as d,
          _via(policy_envoy, billing) as b):
        _denied(d.post(payroll_wf, json=_start_body("payroll")), 403, Reason.EXPLICIT_DENY)
        assert f.post(payroll_wf, json=_start_body("payroll")).status_code == 200
        assert d.get(payroll_wf).status_code == 200  # rule 1: readers still describe

        assert d.post(default_wf, json=_start_body("dev-q")).status_code == 200
        _denied(d.post(f"{default_wf}/terminate", json={}), 403, Reason.EXPLICIT_DENY)
        assert d.get(default_wf).status_code == 200
        assert f.post(f"{payroll_wf}/terminate", json={}).status_code == 200

        _denied(b.post(f"{NS}/default/workflows/b-{uuid.uuid4()}", json=_start_body("other")),
                403, Reason.TASK_QUEUE_DENIED)
        ok = b.post(f"{NS}/default/workflows/b-{uuid.uuid4()}", json=_start_body("billing-x"))
        assert ok.status_code == 200, ok.text
        # a start runs on `name` whatever the kind says (Temporal's enum shorthand too): a
        # sticky kind naming another queue is judged by that name
        _denied(b.post(f"{NS}/default/workflows/b-{uuid.uuid4()}",
                       json={"workflowType": {"name": "W"},
                             "taskQueue": {"name": "other", "kind": "Sticky",
                                           "normalName": "billing-x"}}),
                403, Reason.TASK_QUEUE_DENIED)


def test_dev_server_http_port_is_up(temporal: TemporalInstance) -> None:
    """The dev server was started with its HTTP API on a free port (procs waits for it)."""
    assert temporal.http_address is not None
    assert ports.port_open(*temporal.http_address)
