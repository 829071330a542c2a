"""grpc.aio servicer for ``envoy.service.auth.v3.Authorization/Check``."""

from __future__ import annotations

import time

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from extauthz.interfaces import Observer
from extauthz.model import STATUS_FORBIDDEN, Decision, Reason
from extauthz.obs.observer import NullObserver
from extauthz.pipeline import Pipeline
from extauthz.server.responses import BodyNotBytesError, ResponseBuilder, check_input

_NOT_BYTES = Decision.deny(
    Reason.MALFORMED_BODY,
    "Envoy sent the body as text; set with_request_body.pack_as_bytes: true",
    status=STATUS_FORBIDDEN,
)


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Envoy's Check, answered by the pipeline."""

    def __init__(
        self, pipeline: Pipeline, responses: ResponseBuilder, observer: Observer | None = None
    ):
        self._pipeline = pipeline
        self._responses = responses
        self._observer: Observer = observer or NullObserver()

    async def Check(
        self, request: external_auth_pb2.CheckRequest, _context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        """Decide one request; never raises (a failure is a denial)."""
        started = time.perf_counter()
        self._observer.check_started()
        try:
            req = check_input(request)
        except BodyNotBytesError:
            self._observer.checked(None, _NOT_BYTES, time.perf_counter() - started)
            return self._responses.build(_NOT_BYTES)
        decision = await self._pipeline.check(req)
        self._observer.checked(req, decision, time.perf_counter() - started)
        return self._responses.build(decision)
