"""How the bench talks to an authz server, per transport (Envoy's gRPC or HTTP ext_authz mode).

The server-throughput and end-to-end parts take a ``Transport``: it says how to point extauthz
at an address, how to start the bare always-allow baseline of that transport, what request the
load generator replays at the server, how to check that one such request is really allowed, and
how to point Envoy's ext_authz filter at a server of that transport. Each registers itself in
``TRANSPORTS`` and becomes a name for ``--transport`` (the default runs them all, in one run):

- ``grpc``: Envoy's gRPC ext_authz mode (``envoy/envoy.yaml``) answered by grpc.aio
  (``grpc_server: grpcio``), h2load over h2c replaying the recorded CheckRequest;
- ``grpc-h2``: the gRPC mode answered by ``grpc_server: h2`` (``extauthz.server.h2grpc``, the
  default);
- ``http``: Envoy's HTTP ext_authz mode (``envoy/envoy-http.yaml``), h2load ``--h1`` replaying
  the recorded HTTP check (method, path, headers and body as Envoy sent them).
"""

from __future__ import annotations

import http.client
from collections.abc import Callable
from typing import Any, Protocol

from bench.common import LoadRequest, python_module
from bench.record import recorded_check, recorded_http_check
from devkit import envoyconfig
from devkit.grpcframe import frame
from devkit.probes import grpc_health_serving

Address = tuple[str, int]
CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check"


class Transport(Protocol):
    """One way Envoy asks the authz server."""

    name: str

    def extauthz_env(self, address: Address) -> dict[str, str]:
        """Environment that makes ``extauthz serve`` answer this transport on ``address``."""
        ...

    def baseline_argv(self, address: Address) -> list[str]:
        """argv of the bare always-allow server of this transport on ``address``."""
        ...

    def ready(self, address: Address) -> bool:
        """Whether a server of this transport answers on ``address`` (and is SERVING)."""
        ...

    def load_request(self, token: str) -> LoadRequest:
        """The request the load generator replays at the server: an allowed DescribeNamespace
        (recorded from real Envoy) carrying ``token``."""
        ...

    def allowed(self, address: Address, request: LoadRequest) -> bool:
        """Send ``request`` once; True when the server allows it (h2load cannot tell)."""
        ...

    def envoy(self, *, listen: Address, admin: Address, upstream: Address,
              authz: Address) -> dict[str, Any]:
        """This transport's canonical Envoy config (internal listener dropped) on these
        addresses, its ext_authz filter pointed at ``authz``."""
        ...


class GrpcTransport:
    """Envoy's gRPC ext_authz mode: ``envoy.service.auth.v3.Authorization/Check``."""

    name = "grpc"

    def extauthz_env(self, address: Address) -> dict[str, str]:
        """``EXTAUTHZ_LISTEN``, ``EXTAUTHZ_GRPC_SERVER=grpcio`` (grpc.aio, as its baseline)."""
        return {"EXTAUTHZ_LISTEN": f"{address[0]}:{address[1]}",
                "EXTAUTHZ_GRPC_SERVER": "grpcio"}

    def baseline_argv(self, address: Address) -> list[str]:
        """``python -m bench.baseline``."""
        return python_module("bench.baseline", "--listen", f"{address[0]}:{address[1]}")

    def ready(self, address: Address) -> bool:
        """gRPC health SERVING."""
        return grpc_health_serving(f"{address[0]}:{address[1]}")

    def load_request(self, token: str) -> LoadRequest:
        """The recorded CheckRequest, gRPC-framed, as h2load posts it."""
        body = frame(bytes(recorded_check(token).SerializeToString()))
        return LoadRequest(CHECK_PATH, {"content-type": "application/grpc", "te": "trailers"},
                           body)

    def allowed(self, address: Address, request: LoadRequest) -> bool:
        """One real Check: status OK."""
        import grpc
        from envoy.service.auth.v3 import external_auth_pb2

        with grpc.insecure_channel(f"{address[0]}:{address[1]}") as channel:
            check = channel.unary_unary(
                CHECK_PATH, request_serializer=lambda b: b,
                response_deserializer=external_auth_pb2.CheckResponse.FromString)
            reply = check(request.body[5:], timeout=30)
            return bool(reply.status.code == 0)

    def envoy(self, *, listen: Address, admin: Address, upstream: Address,
              authz: Address) -> dict[str, Any]:
        """``envoy/envoy.yaml`` (gRPC mode) with the addresses moved."""
        return envoyconfig.edit(envoyconfig.load(), listen=listen, admin=admin,
                                upstream=upstream, authz=authz, drop_internal=True)


# h2load sets these itself (from the URL and the body file)
_H2LOAD_OWN = frozenset({"host", "content-length"})


class HttpTransport:
    """Envoy's HTTP ext_authz mode: ``POST /check<original :path>``, the raw gRPC body."""

    name = "http"

    def extauthz_env(self, address: Address) -> dict[str, str]:
        """``EXTAUTHZ_TRANSPORT=http``, ``EXTAUTHZ_HTTP_LISTEN``."""
        return {"EXTAUTHZ_TRANSPORT": "http",
                "EXTAUTHZ_HTTP_LISTEN": f"{address[0]}:{address[1]}"}

    def baseline_argv(self, address: Address) -> list[str]:
        """``python -m bench.baseline --transport http``."""
        return python_module("bench.baseline", "--transport", "http",
                             "--listen", f"{address[0]}:{address[1]}")

    def ready(self, address: Address) -> bool:
        """``GET /healthz`` 200 (SERVING)."""
        conn = http.client.HTTPConnection(address[0], address[1], timeout=1.0)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        finally:
            conn.close()

    def load_request(self, token: str) -> LoadRequest:
        """The recorded HTTP check, as h2load ``--h1`` posts it (host and content-length are
        h2load's own)."""
        check = recorded_http_check(token)
        if check.method != "POST":
            raise ValueError(f"recorded check has method {check.method}; h2load -d posts")
        headers = {k.lower(): v for k, v in check.headers if k.lower() not in _H2LOAD_OWN}
        return LoadRequest(check.path, headers, check.body, h1=True)

    def allowed(self, address: Address, request: LoadRequest) -> bool:
        """One real check over HTTP/1.1: status 200."""
        conn = http.client.HTTPConnection(address[0], address[1], timeout=30)
        try:
            conn.request("POST", request.path, body=request.body, headers=dict(request.headers))
            reply = conn.getresponse()
            reply.read()
            return reply.status == 200
        finally:
            conn.close()

    def envoy(self, *, listen: Address, admin: Address, upstream: Address,
              authz: Address) -> dict[str, Any]:
        """``envoy/envoy-http.yaml`` (HTTP mode) with the addresses moved."""
        return envoyconfig.edit(envoyconfig.load(transport="http"), listen=listen, admin=admin,
                                upstream=upstream, authz=authz, drop_internal=True)


class GrpcH2Transport(GrpcTransport):
    """Envoy's gRPC ext_authz mode answered by the hand-framed listener (``grpc_server: h2``);
    its bare baseline is the same server with a fixed OK (``bench.grpc_servers`` h2grpc)."""

    name = "grpc-h2"

    def extauthz_env(self, address: Address) -> dict[str, str]:
        """``EXTAUTHZ_LISTEN``, ``EXTAUTHZ_GRPC_SERVER=h2``."""
        return {**super().extauthz_env(address), "EXTAUTHZ_GRPC_SERVER": "h2"}

    def baseline_argv(self, address: Address) -> list[str]:
        """``python -m bench.grpc_servers --serve h2grpc``."""
        return python_module("bench.grpc_servers", "--serve", "h2grpc",
                             "--listen", f"{address[0]}:{address[1]}")


TRANSPORTS: dict[str, Callable[[], Transport]] = {
    "grpc": GrpcTransport, "http": HttpTransport, "grpc-h2": GrpcH2Transport}


def get(name: str) -> Transport:
    """The transport called ``name``."""
    try:
        return TRANSPORTS[name]()
    except KeyError:
        raise ValueError(f"unknown transport {name!r} (known: {', '.join(TRANSPORTS)})") from None
