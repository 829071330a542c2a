"""grpc.aio servicer for ``envoy.service.auth.v3.Authorization/Check``."""

from __future__ import annotations

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from extauthz.model import STATUS_FORBIDDEN, Reason
from extauthz.pipeline import Pipeline
from extauthz.server.responses import BodyNotBytesError, ResponseBuilder, check_input


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Envoy's Check, answered by the pipeline."""

    def __init__(self, pipeline: Pipeline, responses: ResponseBuilder):
        self._pipeline = pipeline
        self._responses = responses

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        """Decide one request; never raises (a failure is a denial)."""
        try:
            req = check_input(request)
        except BodyNotBytesError:
            return self._responses.denied(
                STATUS_FORBIDDEN, Reason.MALFORMED_BODY,
                "Envoy sent the body as text; set with_request_body.pack_as_bytes: true",
            )
        decision = await self._pipeline.check(req)
        return self._responses.build(decision)
