"""Readiness probes of the development components: is the authz server's gRPC health SERVING,
does Temporal answer for its namespaces, is its HTTP API up. Each returns ``True`` when ready
and may raise while not (``devkit.procs.wait_until`` treats an exception as not yet)."""

from __future__ import annotations

from collections.abc import Iterable

from devkit.procs import http_get


def grpc_health_serving(target: str, service: str = "", timeout: float = 1.0) -> bool:
    """``grpc.health.v1`` Check of ``service`` on ``target`` says SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def http_api_ready(host: str, port: int) -> bool:
    """Temporal's HTTP API on ``host:port`` answers ``/api/v1/system-info``."""
    status, _ = http_get(f"http://{host}:{port}/api/v1/system-info", timeout=2.0)
    return status == 200


def temporal_namespaces_ready(target: str, namespaces: Iterable[str]) -> bool:
    """Temporal's frontend on ``target`` describes every one of ``namespaces``."""
    import grpc
    from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

    with grpc.insecure_channel(target) as channel:
        describe = channel.unary_unary(
            "/temporal.api.workflowservice.v1.WorkflowService/DescribeNamespace",
            request_serializer=rr.DescribeNamespaceRequest.SerializeToString,
            response_deserializer=rr.DescribeNamespaceResponse.FromString,
        )
        for namespace in namespaces:
            describe(rr.DescribeNamespaceRequest(namespace=namespace), timeout=2.0)
    return True
