"""The whole Check handler fed arbitrary input, and the invariants every outcome must meet.

``request_from_bytes`` turns any byte string into an Envoy ``CheckRequest`` (a method path from
the table or garbage, a token that verifies or not, header variants, a body that is a real
request message of the method, mutated, framed honestly or not, gzip-compressed or not);
``check`` runs it through the real ``AuthorizationService`` (the server's pipeline, claim
mapping and authorizer, with a dictionary token verifier) and ``verify_outcome`` asserts:

- nothing escapes: the handler returns a CheckResponse for every input;
- the outcome is an allow (gRPC OK, identity headers only) or a denial with a stable reason
  code: HTTP 401/403/503 mapped to UNAUTHENTICATED/PERMISSION_DENIED/UNAVAILABLE, the
  ``x-temporal-authz-reason`` header naming a known ``Reason`` and the message starting with it;
- no token ever appears in a response;
- an allowed call is allowed for what Temporal will act on: the body decoded *fully* by the
  ``temporalio`` classes (``fuzz.reference``) is authorized for the same principal.
"""

from __future__ import annotations

import functools
import gzip
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2

from extauthz import methods
from extauthz.auth.types import AuthError, IssuerConfig, VerifiedToken
from extauthz.interfaces import Authorizer
from extauthz.model import Principal, Reason, Scope, Target
from extauthz.pipeline import Pipeline
from extauthz.policy import authorize as temporal_default
from extauthz.rules.reload import PolicyHolder
from extauthz.server.grpc_service import AuthorizationService
from extauthz.server.responses import REASON_HEADER, ResponseBuilder
from fuzz import reference

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
EXAMPLE_POLICY = REPO / "examples" / "policy.yaml"
ISSUER = IssuerConfig(issuer="https://issuer.fuzz.example")
# token → claims; every token is a secret that must never be echoed back
TOKENS: Mapping[str, Mapping[str, Any]] = {
    "tok.writer.sig": {"sub": "writer", "permissions": ["default:write", "payroll:read"]},
    "tok.reader.sig": {"sub": "reader", "permissions": ["default:read"]},
    "tok.worker.sig": {"sub": "worker", "permissions": ["default:worker"]},
    "tok.system.sig": {"sub": "root", "permissions": ["temporal-system:admin"]},
    "tok.finance.sig": {"sub": "fin", "groups": ["finance"]},
    "tok.billing.sig": {"sub": "billing", "client_id": "billing-svc",
                        "gty": "client-credentials"},
    "tok.nothing.sig": {"sub": "nobody"},
}
NAMESPACES = ("default", "payroll", "other", "", "dev-x", "temporal-system", "Default")
QUEUES = ("q", "billing-a", "other-q", "")
OK_STATUSES = {code_pb2.UNAUTHENTICATED: 401, code_pb2.PERMISSION_DENIED: 403,
               code_pb2.UNAVAILABLE: 503}
REASONS = frozenset(r.value for r in Reason)
CONTENT_TYPES = ("application/grpc", "application/grpc", "application/grpc",
                 "application/grpc", "application/grpc+proto", "application/grpc-web",
                 "application/json", "", "application/grpc;charset=x", "APPLICATION/GRPC")
ENCODINGS = (None, "gzip", "identity", "deflate", "GZIP", " gzip ", "snappy", "")
PATHS: tuple[str, ...] = tuple(sorted(methods.table()))


class InvariantError(AssertionError):
    """An outcome broke an invariant (the fuzzer reports it as a crash)."""


class DictVerifier:
    """Tokens verified from ``TOKENS``; anything else is a bad signature. Never suspends."""

    async def verify(self, token: str) -> VerifiedToken:
        claims = TOKENS.get(token)
        if claims is None:
            raise AuthError(Reason.BAD_SIGNATURE, "token signature does not verify")
        return _verified(token)


@functools.cache
def _verified(token: str) -> VerifiedToken:
    claims = TOKENS[token]
    return VerifiedToken(ISSUER, claims, time.time() + 86_400, subject=str(claims["sub"]))


@dataclass(frozen=True)
class Handler:
    """One configured Check handler: the service and the pipeline/authorizer behind it."""

    name: str
    service: AuthorizationService
    pipeline: Pipeline
    authorizer: Authorizer


@functools.cache
def handlers() -> tuple[Handler, ...]:
    """Temporal's default authorizer, and the example policy file (built once)."""
    out = []
    policy = PolicyHolder(EXAMPLE_POLICY)
    for name, authorizer in (("temporal-default", temporal_default), ("policy", policy)):
        pipeline = Pipeline(DictVerifier(), authorizer)
        service = AuthorizationService(pipeline, ResponseBuilder())
        out.append(Handler(name, service, pipeline, authorizer))
    return tuple(out)


class Bytes:
    """Consumes a byte string as a sequence of choices (zeros once it runs out)."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def number(self, limit: int) -> int:
        """A number in ``range(limit)`` from up to two bytes."""
        if limit <= 1:
            return 0
        value = self.byte() if limit <= 256 else self.byte() << 8 | self.byte()
        return value % limit

    def pick(self, options: Sequence[T]) -> T:
        return options[self.number(len(options))]

    def chunk(self, limit: int = 64) -> bytes:
        size = self.number(limit + 1)
        out = self.data[self.pos:self.pos + size]
        self.pos += len(out)
        return out

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out


def _sample_message(entry: methods.MethodEntry, b: Bytes) -> bytes:
    """A real request message of the method with namespace and task queues set from ``b``."""
    if not entry.request_type:
        return b.chunk()
    msg = reference.message_class(entry.request_type)()
    desc = msg.DESCRIPTOR
    for name in ("namespace", "id", "namespace_id"):
        fd = desc.fields_by_name.get(name)
        if fd is not None and fd.type == fd.TYPE_STRING and b.byte() & 1:
            setattr(msg, name, b.pick(NAMESPACES))
    for name in ("task_queue", "sticky_task_queue"):
        fd = desc.fields_by_name.get(name)
        if fd is None or not b.byte() & 1:
            continue
        if fd.type == fd.TYPE_STRING:
            setattr(msg, name, b.pick(QUEUES))
        elif (fd.message_type is not None
              and fd.message_type.full_name == methods.TASK_QUEUE_MESSAGE):
            tq = getattr(msg, name)
            tq.name = b.pick(QUEUES)
            tq.kind = b.number(4)
            if b.byte() & 1:
                tq.normal_name = b.pick(QUEUES)
    return bytes(msg.SerializeToString())


def _headers(b: Bytes) -> dict[str, str]:
    headers: dict[str, str] = {"content-type": b.pick(CONTENT_TYPES)}
    token_mode = b.number(8)
    tokens = sorted(TOKENS)
    token = b.pick(tokens)
    if token_mode == 1:
        headers["authorization"] = f"Bearer {token}, Bearer {b.pick(tokens)}"
    elif token_mode == 2:
        headers["authorization"] = b.chunk(40).decode("latin-1")
    elif token_mode == 3:
        headers["authorization"] = f"bearer  {token}"
    elif token_mode != 7:  # 7: no authorization header
        headers["authorization"] = f"Bearer {token}"
    encoding = b.pick(ENCODINGS)
    if encoding is not None:
        headers["grpc-encoding"] = encoding
    partial = b.number(8)
    if 0 < partial < 4:
        headers["x-envoy-auth-partial-body"] = ("false", "true", " TRUE")[partial - 1]
    if b.byte() & 1:
        headers["temporal-namespace"] = b.pick(NAMESPACES)
    return headers


def _message(entry: methods.MethodEntry, b: Bytes) -> bytes:
    body_mode = b.number(6)
    message = _sample_message(entry, b)
    if body_mode == 1:  # append raw fuzz bytes as more fields (merged, last one wins)
        message += b.chunk(128)
    elif body_mode == 2:  # the rest of the input is the message
        message = b.rest()
    elif body_mode == 3:  # two messages concatenated (protobuf merges them)
        message += _sample_message(entry, b)
    elif body_mode == 4 and message:  # flip a byte
        i = b.number(len(message))
        message = message[:i] + bytes([message[i] ^ (b.byte() or 1)]) + message[i + 1:]
    return message


def _framed(message: bytes, b: Bytes) -> bytes:
    flag = b.pick((0, 0, 1, 2))
    if flag == 1 and b.byte() & 1:  # two gzip members
        half = len(message) // 2
        payload = gzip.compress(message[:half]) + gzip.compress(message[half:])
    elif flag == 1:
        payload = gzip.compress(message)
    else:
        payload = message
    length = len(payload)
    lie = b.number(8)
    if lie == 1:
        length += 1 + b.number(16)
    elif lie == 2:
        length = max(0, length - 1 - b.number(16))
    elif lie == 3:
        length = b.number(1 << 16) << 16 | b.number(1 << 16)
    body = bytes([flag]) + length.to_bytes(4, "big") + payload
    if lie == 4:  # a second frame
        body += body
    if b.byte() & 0x0F == 0x0F:  # cut short
        body = body[: b.number(len(body) + 1)]
    return body


def request_from_bytes(data: bytes) -> tuple[int, external_auth_pb2.CheckRequest]:
    """(handler index, CheckRequest) chosen by ``data``; every byte string is a valid input."""
    b = Bytes(data)
    which = b.number(2)
    mode = b.byte()
    path = b.pick(PATHS)
    if mode & 0x07 == 0x07:  # a path variant or garbage
        path = b.pick((path + "/", path.upper(), "/" + path, path + "?x", path.replace("/", "//"),
                       path.replace(".", "%2E"), b.chunk(32).decode("latin-1")))
    headers = _headers(b)
    entry = methods.lookup(path) or methods.lookup(b.pick(PATHS))
    assert entry is not None
    body = _framed(_message(entry, b), b)
    http_method = b.pick(("GET", "PUT", "post", "")) if b.byte() & 0x1F == 0x1F else "POST"
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.path = path
    http.method = http_method
    http.raw_body = body
    for key, value in headers.items():
        http.headers[key] = value
    return which, req


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine that must not suspend (cache-hit verification never does)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    coro.close()
    raise InvariantError("the Check handler suspended with a dictionary verifier")


def check(which: int, request: external_auth_pb2.CheckRequest) -> external_auth_pb2.CheckResponse:
    """Run one CheckRequest through handler ``which``; the response (never raises)."""
    service = handlers()[which % len(handlers())].service
    response: external_auth_pb2.CheckResponse = run(service.Check(request, None))
    return response


def _decoded_target(entry: methods.MethodEntry, body: bytes, _encoding: str | None
                    ) -> Target | None:
    """The target read by fully decoding the body (None: protobuf itself cannot parse it)."""
    if len(body) < 5 or int.from_bytes(body[1:5], "big") != len(body) - 5:
        return None
    message = body[5:]
    if body[0] == 1:
        try:
            message = gzip.decompress(message)  # every member, like grpc-go
        except (OSError, EOFError):
            return None
    cls = reference.message_class(entry.request_type)
    try:
        parsed = cls.FromString(message)
    except DecodeError:
        return None
    found = reference.extract(parsed)
    return Target(entry.method, namespace=found.namespace,
                  other_namespaces=tuple(found.other_namespaces.elements()),
                  task_queues=tuple(found.task_queues.elements()),
                  by_namespace_id=bool(found.namespace_id))


def verify_outcome(which: int, request: external_auth_pb2.CheckRequest,
                   response: external_auth_pb2.CheckResponse) -> str:
    """Assert the invariants; return the outcome (``allow`` or ``deny:<reason>``)."""
    http = request.attributes.request.http
    echoable = [http.path, *(v for k, v in http.headers.items() if k != "authorization")]
    text = str(response)
    for token in TOKENS:  # a token the client sent only as its credential is never echoed
        if token in http.headers.get("authorization", "") and token in text and not any(
                token in value for value in echoable):
            raise InvariantError("a token appears in the CheckResponse")
    code = response.status.code
    if code == code_pb2.OK:
        if response.HasField("denied_response") or not response.HasField("ok_response"):
            raise InvariantError(f"OK without an ok_response: {response}")
        for option in response.ok_response.headers:
            if not option.header.key.startswith("x-temporal-authz-"):
                raise InvariantError(f"allow sets a foreign header {option.header.key!r}")
        _allowed_for_real(which, request)
        return "allow"
    if code not in OK_STATUSES:
        raise InvariantError(f"gRPC status {code} is not OK/UNAUTHENTICATED/PERMISSION_DENIED/"
                             "UNAVAILABLE")
    denied = response.denied_response
    if denied.status.code != OK_STATUSES[code]:
        raise InvariantError(f"HTTP {denied.status.code} does not match gRPC status {code}")
    reasons = [o.header.value for o in denied.headers if o.header.key == REASON_HEADER]
    if len(reasons) != 1 or reasons[0] not in REASONS:
        raise InvariantError(f"denial without a known reason code: {reasons}")
    if not response.status.message.startswith(f"{reasons[0]}: ") or (
            denied.body != response.status.message):
        raise InvariantError(f"denial message does not start with its reason: {response}")
    return f"deny:{reasons[0]}"


def _allowed_for_real(which: int, request: external_auth_pb2.CheckRequest) -> None:
    http = request.attributes.request.http
    entry = methods.lookup(http.path)
    if entry is None:
        raise InvariantError(f"allowed an unknown path {http.path!r}")
    if entry.method.path in methods.ALWAYS_ALLOWED:
        return
    header = http.headers.get("authorization", "")
    token = header.split()[-1] if header.split() else ""
    if token not in TOKENS:
        raise InvariantError("allowed without a token that verifies")
    if not entry.request_type:
        return  # AdminService: no message classes; cluster scope, decided on the path alone
    target = _decoded_target(entry, bytes(http.raw_body), http.headers.get("grpc-encoding"))
    if target is None:
        return  # protobuf cannot parse it: Temporal refuses it (InvalidArgument)
    handler = handlers()[which % len(handlers())]
    principal: Principal = handler.pipeline.principal(_verified(token))
    if entry.method.scope is Scope.NAMESPACE and not (target.namespace or target.by_namespace_id):
        raise InvariantError(f"allowed {entry.method.short} whose decoded namespace is empty")
    truth = handler.authorizer(principal, target)
    if not truth.allowed:
        raise InvariantError(
            f"{handler.name}: allowed {entry.method.short} for {principal.subject}, but the fully "
            f"decoded request ({target.namespaces}, queues {target.task_queues}) is "
            f"{truth.reason}: {truth.message}")


def one_input(data: bytes) -> str:
    """The fuzz target: build, check, verify. Returns the outcome."""
    which, request = request_from_bytes(data)
    return verify_outcome(which, request, check(which, request))


def seeds() -> list[bytes]:
    """A small seed corpus: every method with an honest token and body, a few variants."""
    out = []
    for i in range(len(PATHS)):
        out.append(bytes([i % 2, 1, i & 0xFF, 0, 0, 0, 4, 5, 0]) + bytes(24))
        out.append(bytes([i % 2, 1, i & 0xFF, 0, 0, 0, 4, 2, 1, 3, 1, 1]) + bytes(24))
    return out
