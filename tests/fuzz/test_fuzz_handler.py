"""The whole Check handler (``AuthorizationService`` → pipeline → authorizer → responses) fed
arbitrary CheckRequests: nothing escapes, every outcome is an allow or a denial with a reason
code, no token is echoed, and an allow is an allow for what Temporal will act on."""

from __future__ import annotations

from collections import Counter

import pytest
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit.grpcframe import frame
from extauthz import methods
from fuzz import harness, reference

FUZZ = settings(max_examples=600, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
OUTCOMES: Counter[str] = Counter()
header_names = st.sampled_from(["authorization", "content-type", "grpc-encoding",
                                "x-envoy-auth-partial-body", "temporal-namespace",
                                "x-request-id", "te"]) | st.text(max_size=12)
paths = st.sampled_from(harness.PATHS) | st.text(max_size=40)
tokens = st.sampled_from(sorted(harness.TOKENS)).map(lambda t: f"Bearer {t}")
header_values = tokens | st.sampled_from(harness.CONTENT_TYPES) | st.text(max_size=30)


@FUZZ
@given(data=st.binary(max_size=160))
def test_structured_inputs_from_bytes(data: bytes) -> None:
    """Byte strings decoded into realistic-but-hostile CheckRequests (the atheris input space)."""
    OUTCOMES[harness.one_input(data).split(":")[0]] += 1


@FUZZ
@given(which=st.integers(0, 1), path=paths,
       method=st.sampled_from(["POST", "POST", "GET", "post", ""]),
       headers=st.dictionaries(header_names, header_values, max_size=6),
       body=st.binary(max_size=120), text_body=st.text(max_size=4),
       use_header_map=st.booleans())
def test_arbitrary_check_requests(which: int, path: str, method: str, headers: dict[str, str],
                                  body: bytes, text_body: str, use_header_map: bool) -> None:
    """Arbitrary paths, methods, headers (map or header_map), raw and text bodies."""
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.path, http.method, http.raw_body = path, method, body
    if text_body and not body:
        http.body = text_body
    for key, value in headers.items():
        if use_header_map:
            http.header_map.headers.add(key=key.lower(), raw_value=value.encode())
        else:
            http.headers[key.lower()] = value
    outcome = harness.verify_outcome(which, req, harness.check(which, req))
    OUTCOMES[outcome.split(":")[0]] += 1


@FUZZ
@given(data=st.binary(max_size=200))
def test_arbitrary_protobuf_check_requests(data: bytes) -> None:
    """Whatever bytes decode as an Envoy CheckRequest are answered within the invariants."""
    try:
        req = external_auth_pb2.CheckRequest.FromString(data)
    except DecodeError:
        return
    for which in (0, 1):
        harness.verify_outcome(which, req, harness.check(which, req))


def test_both_outcomes_were_exercised() -> None:
    """The fuzzed inputs above reached allows as well as denials (not a vacuous run)."""
    if not OUTCOMES:
        for i in range(2000):
            OUTCOMES[harness.one_input(i.to_bytes(4, "big") * 8).split(":")[0]] += 1
    assert OUTCOMES["allow"] > 0 and OUTCOMES["deny"] > 0


def _describe(namespace: str, token: str) -> external_auth_pb2.CheckRequest:
    entry = methods.by_name("WorkflowService/DescribeNamespace")
    assert entry is not None
    cls = reference.message_class(entry.request_type)
    msg = cls(namespace=namespace).SerializeToString()
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.path, http.method = entry.method.path, "POST"
    http.raw_body = frame(msg)
    http.headers.update({"content-type": "application/grpc", "authorization": f"Bearer {token}"})
    return req


def test_the_oracle_rejects_a_wrong_allow() -> None:
    """An OK for a call the principal may not make, or an unknown reason, breaks an invariant
    (so the fuzzers can fail)."""
    req = _describe("other", "tok.reader.sig")
    assert harness.verify_outcome(0, req, harness.check(0, req)) == "deny:permission_denied"
    forged = external_auth_pb2.CheckResponse()
    forged.status.code = code_pb2.OK
    forged.ok_response.SetInParent()
    with pytest.raises(harness.InvariantError, match="fully decoded"):
        harness.verify_outcome(0, req, forged)
    unknown = harness.check(0, req)
    unknown.denied_response.headers[0].header.value = "because"
    with pytest.raises(harness.InvariantError, match="reason"):
        harness.verify_outcome(0, req, unknown)
    leaky = harness.check(0, req)
    leaky.status.message += " tok.reader.sig"
    with pytest.raises(harness.InvariantError, match="token"):
        harness.verify_outcome(0, req, leaky)
    ok = _describe("default", "tok.reader.sig")
    assert harness.verify_outcome(0, ok, harness.check(0, ok)) == "allow"
