"""The routes the hand-framed server serves: Envoy's ``Authorization/Check`` (the same
servicer grpc.aio runs, so the same pipeline, observer and responses) and
``grpc.health.v1.Health/Check`` from a status table the server keeps.

``Health/Watch`` (server streaming) is not served: it answers ``UNIMPLEMENTED``. Envoy's
health checker and Kubernetes ``grpc:`` probes call ``Check``.
"""

from __future__ import annotations

from collections.abc import Callable

from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2

from extauthz.server.grpc_service import AuthorizationService
from extauthz.server.h2grpc.calls import GrpcError
from extauthz.server.h2grpc.server import Handler

CHECK = b"/envoy.service.auth.v3.Authorization/Check"
HEALTH_CHECK = b"/grpc.health.v1.Health/Check"
_INVALID_ARGUMENT, _NOT_FOUND, _INTERNAL = 3, 5, 13
_CACHE_ENTRIES = 10_000


def check_route(service: AuthorizationService) -> Handler:
    """``Check``: parse the CheckRequest, run the servicer, serialize (each distinct cached
    response object serialized once)."""
    parse = external_auth_pb2.CheckRequest.FromString
    serialized: dict[int, tuple[object, bytes]] = {}

    async def check(message: bytes) -> bytes:
        try:
            request = parse(message)
        except DecodeError:
            raise GrpcError(_INVALID_ARGUMENT, "CheckRequest does not parse") from None
        response = await service.Check(request, None)
        hit = serialized.get(id(response))
        if hit is not None and hit[0] is response:
            return hit[1]
        data: bytes = response.SerializeToString()
        if len(serialized) >= _CACHE_ENTRIES:
            serialized.clear()
        serialized[id(response)] = (response, data)  # the reference keeps the id unique
        return data

    return check


def health_route(status: Callable[[str], int | None]) -> Handler:
    """``Health/Check``: the status of the named service, ``NOT_FOUND`` when unknown."""
    answers = {value: health_pb2.HealthCheckResponse(status=value).SerializeToString()  # type: ignore[arg-type, unused-ignore]
               for value in health_pb2.HealthCheckResponse.ServingStatus.values()}

    async def check(message: bytes) -> bytes:
        try:
            request = health_pb2.HealthCheckRequest.FromString(message)
        except DecodeError:
            raise GrpcError(_INVALID_ARGUMENT, "HealthCheckRequest does not parse") from None
        value = status(request.service)
        if value is None:
            raise GrpcError(_NOT_FOUND, f"unknown service {request.service!r}")
        answer: bytes = answers[value]
        return answer

    return check


def routes(service: AuthorizationService,
           status: Callable[[str], int | None]) -> dict[bytes, Handler]:
    """The route table of ``extauthz serve`` on this server."""
    return {CHECK: check_route(service), HEALTH_CHECK: health_route(status)}
