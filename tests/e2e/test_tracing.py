"""Tracing through real Envoy (envoy/envoy.yaml and envoy/envoy-http.yaml): the traceparent a
gRPC client sends reaches extauthz's span, on both ext_authz protocols (in HTTP mode because
``allowed_headers`` lists traceparent and tracestate). The collector is a real OTLP/HTTP
receiver on loopback (``support.otlp``)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from support.otlp import OtlpReceiver
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from devkit.components import IssuerInstance, TemporalInstance, start_envoy, start_extauthz

WS = "/temporal.api.workflowservice.v1.WorkflowService/"
PARENT = "b7ad6b7169203331"
ALLOWED_TRACE = "0af7651916cd43dd8448eb211c80319c"
DENIED_TRACE = "1af7651916cd43dd8448eb211c80319d"


def describe(target: str, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    with grpc.insecure_channel(target) as channel:
        stub = channel.unary_unary(
            WS + "DescribeNamespace",
            request_serializer=rr.DescribeNamespaceRequest.SerializeToString,
            response_deserializer=rr.DescribeNamespaceResponse.FromString)
        try:
            stub(rr.DescribeNamespaceRequest(namespace="default"), timeout=10,
                 metadata=metadata)
        except grpc.RpcError as err:
            return err.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.mark.parametrize("mode", ["grpc", "http"])
def test_clients_traceparent_reaches_the_check_span_through_envoy(
        mode: str, e2e_dir: Path, temporal: TemporalInstance, issuer: IssuerInstance) -> None:
    """An allowed and a denied call through Envoy each give one span whose trace id and parent
    are the client's, with the tracestate kept and the decision's reason."""
    receiver = OtlpReceiver().start()
    authz = start_extauthz(e2e_dir, issuer.url, name="extauthz-tracing", transport=mode,
                           extra_env={"EXTAUTHZ_TRACING_ENABLED": "true",
                                      "EXTAUTHZ_TRACING_ENDPOINT": receiver.endpoint})
    try:
        envoy = start_envoy(e2e_dir, authz=authz.address, upstream=temporal.address,
                            transport=mode, http_upstream=temporal.http_address)
        try:
            token = issuer.mint(sub="tracer", permissions=["default:read"])
            assert describe(envoy.target, [
                ("authorization", f"Bearer {token}"),
                ("traceparent", f"00-{ALLOWED_TRACE}-{PARENT}-01"),
                ("tracestate", "rojo=00f067aa0ba902b7")]) == grpc.StatusCode.OK
            assert describe(envoy.target, [
                ("traceparent", f"00-{DENIED_TRACE}-{PARENT}-01")]
            ) == grpc.StatusCode.UNAUTHENTICATED
        finally:
            envoy.stop()
        authz.proc.stop()  # SIGTERM: the server flushes its queued spans
        spans = {s.trace_id: s for s in receiver.wait_for(2)}
    finally:
        authz.proc.stop()
        receiver.stop()
    allowed, denied = spans[ALLOWED_TRACE], spans[DENIED_TRACE]
    assert allowed.parent_span_id == denied.parent_span_id == PARENT
    assert allowed.span.trace_state == "rojo=00f067aa0ba902b7"
    assert allowed.attributes["extauthz.decision"] == "allow"
    assert allowed.attributes["extauthz.method"] == "WorkflowService/DescribeNamespace"
    assert allowed.attributes["temporal.namespace"] == "default"
    assert allowed.attributes["extauthz.request_id"]  # Envoy's x-request-id
    assert denied.attributes["extauthz.reason"] == "missing_token"
