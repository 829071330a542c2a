"""`helm test`: through the client-facing address, the gRPC health check passes without a token,
and a Temporal call without a token is refused with UNAUTHENTICATED (authorization is enforced).

Environment: TARGET (host:port), TLS ("true" for a TLS listener), TLS_CA_FILE (optional CA
bundle), TLS_SERVER_NAME (optional). Exit 0 on success, 1 with the reason otherwise.
"""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

LIST_NAMESPACES = "/temporal.api.workflowservice.v1.WorkflowService/ListNamespaces"


def channel(target: str) -> grpc.Channel:
    if os.environ.get("TLS", "false").lower() != "true":
        return grpc.insecure_channel(target)
    ca_file = os.environ.get("TLS_CA_FILE", "")
    roots = None
    if ca_file and os.path.exists(ca_file):
        with open(ca_file, "rb") as fh:
            roots = fh.read()
    options = []
    if os.environ.get("TLS_SERVER_NAME"):
        options.append(("grpc.ssl_target_name_override", os.environ["TLS_SERVER_NAME"]))
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(roots), options)


def main() -> int:
    target = os.environ["TARGET"]
    with channel(target) as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                         timeout=15)
        except grpc.RpcError as err:
            print(f"FAIL: health check through {target}: {err.code().name}: {err.details()}")
            return 1
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            print(f"FAIL: health check through {target}: {reply.status}")
            return 1
        print(f"ok: health check through {target} is SERVING without a token")
        try:
            ch.unary_unary(LIST_NAMESPACES)(b"", timeout=15)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNAUTHENTICATED:
                print(f"ok: ListNamespaces without a token is UNAUTHENTICATED: {err.details()}")
                return 0
            print(f"FAIL: ListNamespaces without a token: expected UNAUTHENTICATED, got "
                  f"{err.code().name}: {err.details()}")
            return 1
        print("FAIL: ListNamespaces without a token was ALLOWED: authorization is not enforced")
        return 1


if __name__ == "__main__":
    sys.exit(main())
