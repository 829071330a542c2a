"""The HTTP API router (``extauthz.httpapi``): every ``google.api.http`` binding of the installed
temporalio, matched the way Temporal's grpc-gateway matches it, and the request message built
from path, query and JSON body the way the server builds it (facts checked against a real server
in tests/e2e/test_http_api.py)."""

from __future__ import annotations

import itertools

import pytest
from google.api import annotations_pb2
from temporalio.api.enums.v1 import task_queue_pb2
from temporalio.api.operatorservice.v1 import service_pb2 as operator_pb2
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr
from temporalio.api.workflowservice.v1 import service_pb2 as workflow_pb2

from extauthz import httpapi, methods, wire
from extauthz.httpapi import RequestError, Route
from extauthz.httpapi import message as httpapi_message
from extauthz.model import Reason

WS = methods.WORKFLOW_SERVICE
OS = methods.OPERATOR_SERVICE


def _all_bindings() -> list[tuple[str, str, str, str]]:
    """(service, method, VERB, template) of every HTTP binding, additional ones included,
    read straight from the descriptors."""
    out = []
    for module, service in ((workflow_pb2, WS), (operator_pb2, OS)):
        sd = module.DESCRIPTOR.services_by_name[service.rsplit(".", 1)[-1]]
        for md in sd.methods:
            opts = md.GetOptions()
            if not opts.HasExtension(annotations_pb2.http):
                continue
            rule = opts.Extensions[annotations_pb2.http]
            for b in (rule, *rule.additional_bindings):
                verb = b.WhichOneof("pattern")
                out.append((service, md.name, verb.upper(), getattr(b, verb)))
    return out


BINDINGS = _all_bindings()


def _example_path(template: str) -> str:
    """The template with every variable replaced by a distinct value."""
    counter = itertools.count()
    return "/".join(f"v{next(counter)}" if part.startswith("{") else part
                    for part in template.split("/"))


def _match(verb: str, path: str) -> Route:
    route = httpapi.router().match(verb, path)
    assert route is not None, (verb, path)
    return route


def _target(verb: str, path: str, body: bytes = b"") -> wire.Extracted:
    route = _match(verb, path)
    message = httpapi.request_message(route, body)
    return wire.scan(memoryview(message), route.entry.plan)


# ---- the table ------------------------------------------------------------------------------


def test_there_are_http_bindings_with_additional_ones() -> None:
    """The installed temporalio annotates many methods, most with an /api/v1 additional
    binding (if this fails the descriptors changed shape and the router needs a look)."""
    assert len(BINDINGS) > 150
    assert sum(1 for b in BINDINGS if b[3].startswith("/api/v1/")) > 75


@pytest.mark.parametrize(("service", "name", "verb", "template"), BINDINGS,
                         ids=[f"{b[1]}-{b[2]}-{b[3]}" for b in BINDINGS])
def test_every_binding_is_matched_to_its_method(service: str, name: str, verb: str,
                                                template: str) -> None:
    """Each binding's path, with values for its variables, is routed to its own gRPC method, and
    the variables come back as the fields the template names."""
    route = _match(verb, _example_path(template))
    assert route.entry.method.path == f"/{service}/{name}"
    assert route.binding.template == template
    names = [p[1:-1] for p in template.split("/") if p.startswith("{")]
    assert [".".join(path) for path, _ in route.params] == names


def test_router_holds_every_binding_once() -> None:
    """The router is built from exactly the descriptors' bindings."""
    got = sorted((b.entry.method.path, b.verb, b.template) for b in httpapi.router().bindings)
    want = sorted((f"/{s}/{n}", v, t) for s, n, v, t in BINDINGS)
    assert got == want


def test_no_two_bindings_are_ambiguous() -> None:
    """No request can match two bindings (same verb, same length, each segment a variable on
    one side or the same literal): the first match is the only match."""
    bindings = httpapi.router().bindings
    clashes = [(a.template, b.template) for a, b in itertools.combinations(bindings, 2)
               if httpapi.ambiguous(a, b)]
    assert clashes == []


def test_ambiguity_check_finds_a_clash() -> None:
    """The ambiguity check itself: a variable overlaps any literal at the same position."""
    a, b = httpapi.router().bindings[:2]
    clash = httpapi.Binding("GET", "/x/{a}", ("x", None), (("a",),), False, a.entry)
    other = httpapi.Binding("GET", "/x/y", ("x", "y"), (), False, b.entry)
    assert httpapi.ambiguous(clash, other)
    assert not httpapi.ambiguous(clash, httpapi.Binding("POST", "/x/y", ("x", "y"), (), False,
                                                        b.entry))


def test_first_segments_are_the_envoy_prefixes() -> None:
    """Every binding starts with one of four literals: the prefixes Envoy routes to the HTTP
    port (tests/e2e/test_http_api.py checks the Envoy configs list exactly these)."""
    assert httpapi.router().first_segments == {"api", "namespaces", "cluster", "system-info"}


def test_every_path_variable_is_a_string_field() -> None:
    """Path variables are singular string fields (the router refuses to build otherwise), so a
    decoded segment is the field's value as is."""
    for binding in httpapi.router().bindings:
        for path in binding.variables:
            assert path  # checked at build time by _field_path


# ---- matching -------------------------------------------------------------------------------


@pytest.mark.parametrize(("verb", "path", "method", "namespace"), [
    ("GET", "/api/v1/namespaces/default", "DescribeNamespace", "default"),
    ("GET", "/cluster/namespaces/default", "DescribeNamespace", "default"),
    ("GET", "/api/v1/namespaces/def%61ult", "DescribeNamespace", "default"),
    ("GET", "/api/v1/namespaces/def%2561ult", "DescribeNamespace", "def%61ult"),
    ("GET", "/api/v1/namespaces/de+f", "DescribeNamespace", "de+f"),
    ("GET", "/api/v1/namespaces/a:b", "DescribeNamespace", "a:b"),
    ("GET", "/api/v1/namespaces/:b", "DescribeNamespace", ":b"),
    ("GET", "/api/v1/namespaces/%2e%2e", "DescribeNamespace", ".."),
    ("GET", "/api/v1/namespaces/default%3Fx", "DescribeNamespace", "default?x"),
    ("GET", "/api/v1/namespaces/default?namespace=payroll", "DescribeNamespace", "default"),
    ("GET", "/api/v1/namespaces/default/workflows", "ListWorkflowExecutions", "default"),
    ("GET", "/namespaces/default/workflows", "ListWorkflowExecutions", "default"),
    ("GET", "/api/v%31/namespaces/default", "DescribeNamespace", "default"),
    ("POST", "/api/v1/namespaces/default/workflows/w1", "StartWorkflowExecution", "default"),
    ("DELETE", "/api/v1/namespaces/default/schedules/s1", "DeleteSchedule", "default"),
])
def test_matches_and_decodes_like_grpc_gateway(verb: str, path: str, method: str,
                                               namespace: str) -> None:
    """The path is percent-decoded once as a whole, then split; the namespace is the decoded
    segment, exactly; the query never sets a path-bound field."""
    route = _match(verb, path)
    assert route.entry.method.name == method
    assert _target(verb, path).namespace == namespace


def test_percent_encoded_slash_separates_segments() -> None:
    """%2F decodes before splitting (grpc-gateway's legacy unescaping, as the server runs):
    `a%2Fworkflows` is two segments, so it is ListWorkflowExecutions of namespace `a`."""
    route = _match("GET", "/api/v1/namespaces/a%2Fworkflows")
    assert route.entry.method.name == "ListWorkflowExecutions"
    assert route.params == ((("namespace",), "a"),)
    assert httpapi.router().match("GET", "/api/v1/namespaces/a%2Fb") is None


@pytest.mark.parametrize(("verb", "path"), [
    ("GET", "/api/v1/namespaces/default/"),  # trailing slash: 404 at the server
    ("GET", "/api/v1//namespaces/default"),  # // : the server redirects (301)
    ("GET", "/api/v1/namespaces/./default"),
    ("GET", "/api/v1/namespaces/x/../default"),
    ("GET", "/api/v1/namespaces/default/."),
    ("GET", "/API/v1/namespaces/default"),  # case
    ("GET", "/api/v1/Namespaces/default"),
    ("get", "/api/v1/namespaces/default"),
    ("HEAD", "/api/v1/namespaces/default"),
    ("POST", "/api/v1/namespaces/default"),  # DescribeNamespace is GET only
    ("GET", "/api/v1/namespaces/default/workflows/w1/terminate"),  # POST only
    ("GET", "/api%2Fv1/namespaces/default"),  # served by Temporal, but Envoy routes on raw
    ("GET", "/api/v2/namespaces/default"),
    ("GET", "/api/v1"),
    ("GET", "/api/v1/namespaces/default#x"),
    ("GET", "/api/v1/namespaces/de fault"),  # raw space, control or non-ASCII: never valid
    ("GET", "/api/v1/namespaces/de\x00fault"),
    ("GET", "/api/v1/namespaces/d\u00e9"),
    ("GET", "api/v1/namespaces/default"),
    ("GET", "/temporal.api.workflowservice.v1.WorkflowService/DescribeNamespace"),
])
def test_unmatched_requests(verb: str, path: str) -> None:
    """Anything that is not exactly a binding's method and shape matches nothing (deny)."""
    assert httpapi.router().match(verb, path) is None


@pytest.mark.parametrize("path", ["/api/v1/namespaces/def%ZZ", "/api/v1/namespaces/def%4",
                                  "/api/v1/namespaces/def%ff"])
def test_undecodable_paths_are_refused(path: str) -> None:
    """A bad escape (the server answers 400) or bytes that are not UTF-8 are refused."""
    with pytest.raises(RequestError) as info:
        httpapi.router().match("GET", path)
    assert info.value.reason is Reason.UNKNOWN_METHOD


# ---- body -----------------------------------------------------------------------------------

START = "/api/v1/namespaces/default/workflows/w1"


def test_body_namespace_is_overridden_by_the_path() -> None:
    """grpc-gateway sets path variables after decoding the body: the path's namespace wins."""
    found = _target("POST", START, b'{"namespace":"payroll","taskQueue":{"name":"q"}}')
    assert found.namespace == "default"
    assert found.task_queues == ["q"]


@pytest.mark.parametrize("body", [
    b'{"taskQueue":{"name":"q"}}',
    b'{"task_queue":{"name":"q"}}',
    b'{"taskQueue":{"name":"q","kind":"TASK_QUEUE_KIND_NORMAL"}}',
    b'{"taskQueue":{"name":"q","kind":1}}',
    b'{"taskQueue":{"name":"q"},"input":["shorthand",{"a":1}],"bogus":{"a":1,"a":2}}',
    b'  {"taskQueue":{"name":"q"}}\n',
])
def test_body_task_queue_in_any_accepted_spelling(body: bytes) -> None:
    """camelCase or snake_case, enum by name or number; payload shorthand and unknown fields
    are not read (and never make the body unreadable)."""
    assert _target("POST", START, body).task_queues == ["q"]


def test_sticky_shorthand_enum_is_understood() -> None:
    """Temporal's enum shorthand ("Sticky") is understood; a start's queue is `name` whatever
    the kind (the server runs the workflow there), with normal_name judged too."""
    body = b'{"taskQueue":{"name":"sticky-1","kind":"Sticky","normalName":"billing"}}'
    assert _target("POST", START, body).task_queues == ["sticky-1", "billing"]
    assert httpapi_message._enum_shorthand(task_queue_pb2.TaskQueueKind.DESCRIPTOR)["Sticky"] == (
        "TASK_QUEUE_KIND_STICKY")


def test_null_is_unset() -> None:
    """`null` leaves a field unset, like protojson."""
    found = _target("POST", "/api/v1/namespaces", b'{"namespace":null}')
    assert found.namespace == ""


def test_register_namespace_takes_the_body_namespace() -> None:
    """Without a path variable the body names the namespace (RegisterNamespace)."""
    assert _target("POST", "/api/v1/namespaces", b'{"namespace":"new-ns"}').namespace == "new-ns"


def test_empty_body_is_an_empty_message() -> None:
    """An empty body is an empty message (the server reads EOF as no fields)."""
    assert _target("POST", START, b"").namespace == "default"


@pytest.mark.parametrize("body", [
    b'{"namespace":"a","namespace":"b"}',
    b'{"taskQueue":{"name":"a"},"task_queue":{"name":"b"}}',
    b'{"taskQueue":{"name":"a","name":"b"}}',
    b'{"taskQueue":{"name":"a"}} {"x":1}',
    b"[1]",
    b'"x"',
    b'{"taskQueue":"q"}',
    b'{"taskQueue":{"name":5}}',
    b'{"taskQueue":{"name":"q","kind":"sticky"}}',
    b'{"namespace":"a"',
    b"\xef\xbb\xbf{}",
    b'{"namespace":"\xff"}',
    b'{"namespace":"\\ud800"}',
    b"[" * 100_000,
])
def test_malformed_bodies_are_refused(body: bytes) -> None:
    """Duplicate fields (either spelling), trailing values, wrong types, bad enums, broken or
    non-UTF-8 JSON: refused, never half-read."""
    route = _match("POST", START)
    with pytest.raises(RequestError) as info:
        httpapi.request_message(route, body)
    assert info.value.reason is Reason.MALFORMED_BODY


def test_nested_path_variable_overrides_the_body() -> None:
    """A nested path variable ({request.input.name}) overwrites that one field and keeps the
    rest of the body's message, as PopulateFieldFromPath does."""
    route = _match("POST", "/api/v1/namespaces/default/workflows/w1/update/u")
    msg = httpapi.request_message(route, b'{"namespace":"x","request":{"input":{"name":"b"}}}')
    parsed = rr.UpdateWorkflowExecutionRequest.FromString(msg)
    assert parsed.namespace == "default"
    assert parsed.workflow_execution.workflow_id == "w1"
    assert parsed.request.input.name == "u"


def test_nested_task_queue_in_a_oneof_is_read() -> None:
    """A task queue deep in the body (a schedule's start-workflow action, a oneof member) is
    found, in camelCase or snake_case: the same plan as the gRPC body."""
    for body in (b'{"schedule":{"action":{"startWorkflow":{"taskQueue":{"name":"deep"},'
                 b'"input":[1,2]}}}}',
                 b'{"schedule":{"action":{"start_workflow":{"task_queue":{"name":"deep"}}}}}'):
        found = _target("POST", "/api/v1/namespaces/default/schedules/s1", body)
        assert (found.namespace, found.task_queues) == ("default", ["deep"])


def test_nexus_endpoint_target_queue_is_read() -> None:
    """A cluster-scoped call's nested queue (CreateNexusEndpoint spec.target.worker) is read."""
    body = b'{"spec":{"name":"e","target":{"worker":{"namespace":"n","taskQueue":"tq"}}}}'
    assert _target("POST", "/api/v1/nexus/endpoints", body).task_queues == ["tq"]


# ---- query ----------------------------------------------------------------------------------

TQ = "/api/v1/namespaces/default/task-queues/q1"


def test_query_cannot_set_a_path_bound_field() -> None:
    """?namespace= and ?task_queue.name= are ignored when the path binds them (grpc-gateway's
    filter), in either spelling."""
    found = _target("GET", f"{TQ}?namespace=payroll&task_queue.name=x&taskQueue.name=y")
    assert found.namespace == "default"
    assert found.task_queues == ["q1"]


def test_query_sets_unbound_fields_of_the_plan() -> None:
    """Unbound fields the plan reads come from the query: a kind and normal name are read, and
    the normal name is judged beside the queue's name."""
    found = _target("GET", f"{TQ}?task_queue.kind=TASK_QUEUE_KIND_STICKY"
                           "&taskQueue.normalName=billing")
    assert found.task_queues == ["q1", "billing"]
    found = _target("GET", f"{TQ}?task_queue.kind=2&task_queue.normal_name=b%20c+d")
    assert found.task_queues == ["q1", "b c d"]


def test_query_namespace_id() -> None:
    """DescribeNamespace ?id= names the namespace by id as well (the policy then needs the
    system role), as in a gRPC body."""
    found = _target("GET", "/api/v1/namespaces/default?id=abc")
    assert found.namespace == "default"
    assert found.namespace_id == "abc"


def test_query_on_a_body_binding_is_ignored() -> None:
    """A binding with body "*" never reads the query (checked on the real server)."""
    found = _target("POST", f"{START}?namespace=payroll&taskQueue.name=zzz",
                    b'{"taskQueue":{"name":"q"}}')
    assert (found.namespace, found.task_queues) == ("default", ["q"])


def test_query_repeated_field_collects_every_value() -> None:
    """A repeated field takes every value (GetWorkerTaskReachability's task queues)."""
    found = _target("GET", "/api/v1/namespaces/default/worker-task-reachability"
                           "?taskQueues=a&task_queues=b&taskQueues=c")
    assert sorted(found.task_queues) == ["a", "b", "c"]


@pytest.mark.parametrize("query", [
    "task_queue.kind=1&task_queue.kind=2",  # too many values (400 at the server)
    "task_queue.kind=1&taskQueue.kind=2",  # two spellings: the server's pick is random
    "a=1;b=2",  # semicolon separator (400)
    "task_queue.kind=Sticky",  # no shorthand in the query (400)
    "task_queue=x",  # a message from a string (400)
    "x=%zz",
    "task_queue.normal_name[k]=v",  # map syntax on a scalar: two values
])
def test_malformed_queries_are_refused(query: str) -> None:
    """What the server refuses, or would read in an order we cannot know, is refused."""
    route = _match("GET", f"{TQ}?{query}")
    with pytest.raises(RequestError):
        httpapi.request_message(route, b"")


def test_unknown_query_keys_are_ignored() -> None:
    """Unknown keys (`pretty`, anything) are ignored, as the server ignores them."""
    assert _target("GET", f"{TQ}?pretty&foo.bar=1&").namespace == "default"


def test_parse_query_matches_go() -> None:
    """url.ParseQuery: '&' separates, '+' is a space, keys keep their first-seen order."""
    assert httpapi.parse_query("a=1&b=x+y&a=%32&&c") == [("a", ["1", "2"]), ("b", ["x y"]),
                                                         ("c", [""])]


def test_media_type() -> None:
    """content-type parameters and case do not matter."""
    assert httpapi.media_type("Application/JSON; charset=utf-8") == "application/json"
    assert "application/json+no-payload-shorthand" in httpapi.JSON_MEDIA_TYPES
