"""How the bench talks to an authz server, per transport (Envoy's gRPC or HTTP ext_authz mode).

The server-throughput and end-to-end parts take a ``Transport``: it says how to point extauthz
at an address, how to start the bare always-allow baseline of that transport, what request the
load generator replays at the server, how to check that one such request is really allowed, and
how to point Envoy's ext_authz filter at a server of that transport. ``grpc`` is implemented;
another transport registers itself in ``TRANSPORTS`` and becomes ``--transport NAME``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from bench.common import LoadRequest, frame, grpc_health_serving, python_module
from bench.record import recorded_check
from extauthz import envoyconfig

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
        """``EXTAUTHZ_LISTEN``."""
        return {"EXTAUTHZ_LISTEN": f"{address[0]}:{address[1]}"}

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


TRANSPORTS: dict[str, Callable[[], Transport]] = {"grpc": GrpcTransport}


def get(name: str) -> Transport:
    """The transport called ``name``."""
    try:
        return TRANSPORTS[name]()
    except KeyError:
        raise ValueError(f"unknown transport {name!r} (known: {', '.join(TRANSPORTS)})") from None
