"""Phase 3, target: what the call acts on, read from its body. Pure: no I/O.

A gRPC call's body is unframed (gzip within limits) and scanned with the method's plan; an
HTTP API call's path, query and JSON body are first made into the protobuf request Temporal's
server builds from them, then scanned the same way. A body that cannot be judged is a denial.
"""

from __future__ import annotations

from extauthz import httpapi, methods, wire
from extauthz.model import CheckInput, Decision, Target
from extauthz.phases.attributes import Call


def read(call: Call, req: CheckInput, max_message_bytes: int) -> Target | Decision:
    """The target of ``call``, or a denial explaining why its body cannot be judged."""
    if call.route is not None:
        return of_http(call.route, req)
    return of_grpc(call.entry, req, max_message_bytes)


def of_grpc(entry: methods.MethodEntry, req: CheckInput,
            max_message_bytes: int) -> Target | Decision:
    """What a gRPC request acts on, or a denial explaining why the body cannot be judged."""
    try:
        message = wire.unframe(req.body, req.headers.get("grpc-encoding"), max_message_bytes)
        found = wire.scan(message, entry.plan) if entry.plan else wire.Extracted()
    except wire.BodyError as exc:
        return Decision.deny(exc.reason, exc.message, target=Target(entry.method))
    return found.target(entry.method)


def of_http(route: httpapi.Route, req: CheckInput) -> Target | Decision:
    """What an HTTP API call acts on: the path, query and JSON body made into the protobuf
    request the server builds, then read with the method's plan like a gRPC body."""
    entry = route.entry
    try:
        message = httpapi.request_message(route, req.body)
        found = wire.scan(memoryview(message), entry.plan) if entry.plan else wire.Extracted()
    except (httpapi.RequestError, wire.BodyError) as exc:
        return Decision.deny(exc.reason, exc.message, target=Target(entry.method))
    return found.target(entry.method)
