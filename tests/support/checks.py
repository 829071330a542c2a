"""Envoy CheckRequests as tests send them to the gRPC Check service."""

from __future__ import annotations

from envoy.service.auth.v3 import external_auth_pb2


def check_request(path: str, body: bytes,
                  headers: dict[str, str]) -> external_auth_pb2.CheckRequest:
    """A gRPC call's CheckRequest: ``path``, the framed ``body`` and extra ``headers``."""
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.path, http.method, http.raw_body = path, "POST", body
    http.headers["content-type"] = "application/grpc"
    http.headers.update(headers)
    return req
