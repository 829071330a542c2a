"""`helm test`: nothing reaches the Temporal frontend around the authorization, and through the
client-facing address one allowed and one denied call behave as they must.

1. Bypass (FRONTEND_ADDRESSES set, standalone mode): a TCP connection straight to each of the
   frontend's ports (gRPC, HTTP API) must be refused or time out (the frontend NetworkPolicy,
   enforced by the CNI). A connection that opens means any pod can skip Envoy.
2. Through TARGET: the gRPC health check is SERVING without a token; GetSystemInfo without a
   token (always allowed, as in Temporal's default authorizer) is answered by Temporal; a
   ListNamespaces without a token is refused with UNAUTHENTICATED (authorization is enforced).

Environment: TARGET (host:port), FRONTEND_ADDRESSES (optional, comma-separated host:port),
DIAL_TIMEOUT (seconds, default 5), TLS ("true" for a TLS listener), TLS_CA_FILE (optional CA
bundle), TLS_SERVER_NAME (optional). Exit 0 on success, 1 with the reason otherwise.
"""

import os
import socket
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

WS = "/temporal.api.workflowservice.v1.WorkflowService/"
LIST_NAMESPACES = WS + "ListNamespaces"
GET_SYSTEM_INFO = WS + "GetSystemInfo"


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


def dial(address: str, timeout: float) -> str:
    """'open', 'refused', 'timeout' or 'unresolved: ...' for one TCP connection attempt."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except socket.gaierror as err:
        return f"unresolved: {err}"
    except OSError as err:  # unreachable, reset: the connection did not open
        return f"refused ({err.strerror or err})"


def check_bypass() -> int:
    addresses = [a.strip() for a in os.environ.get("FRONTEND_ADDRESSES", "").split(",")
                 if a.strip()]
    timeout = float(os.environ.get("DIAL_TIMEOUT", "5"))
    failed = 0
    for address in addresses:
        outcome = dial(address, timeout)
        if outcome == "open":
            print(f"FAIL: the Temporal frontend at {address} accepts connections from this pod: "
                  "clients can bypass Envoy and its authorization. Enable "
                  "temporal.frontend.networkPolicy and check that the cluster's CNI enforces "
                  "NetworkPolicies.")
            failed = 1
        elif outcome.startswith("unresolved"):
            print(f"FAIL: cannot check the frontend at {address}: {outcome} "
                  "(temporal.frontend.host / temporal.namespace)")
            failed = 1
        else:
            print(f"ok: the frontend at {address} is closed to this pod ({outcome})")
    return failed


def check_through(target: str) -> int:
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
            ch.unary_unary(GET_SYSTEM_INFO)(b"", timeout=15)
        except grpc.RpcError as err:
            print(f"FAIL: GetSystemInfo through {target} (always allowed) was refused: "
                  f"{err.code().name}: {err.details()}")
            return 1
        print("ok: GetSystemInfo (allowed without a token) is answered by Temporal")
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


def main() -> int:
    bypass = check_bypass()
    through = check_through(os.environ["TARGET"])
    return 1 if bypass or through else 0


if __name__ == "__main__":
    sys.exit(main())
