"""Value types shared by every layer: requests, methods, targets, principals and decisions.

Everything here is pure data: frozen, slotted dataclasses and enums. No I/O.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Role(enum.IntFlag):
    """Temporal's role bit flags (``temporal/common/authorization/roles.go``)."""

    NONE = 0
    WORKER = 1
    READER = 2
    WRITER = 4
    ADMIN = 8


class Scope(enum.Enum):
    """Where a method's authority lives."""

    NAMESPACE = "Namespace"
    CLUSTER = "Cluster"
    HEALTH = "Health"


class Access(enum.Enum):
    """How much a method can change, as Temporal classifies it."""

    READ_ONLY = "ReadOnly"
    WRITE = "Write"
    ADMIN = "Admin"


REQUIRED_ROLE: Mapping[Access, Role] = {
    Access.READ_ONLY: Role.READER,
    Access.WRITE: Role.WRITER,
    Access.ADMIN: Role.ADMIN,
}


class Reason(enum.StrEnum):
    """Stable reason codes: the metric label, the log field and the first word of a denial."""

    # allow
    ALLOWED = "allowed"
    HEALTH_CHECK = "health_check"
    # request shape (403)
    UNKNOWN_METHOD = "unknown_method"
    PARTIAL_BODY = "partial_body"
    MALFORMED_BODY = "malformed_body"
    UNSUPPORTED_ENCODING = "unsupported_encoding"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    BODY_TOO_LARGE = "body_too_large"
    MISSING_NAMESPACE = "missing_namespace"
    NAMESPACE_ID_ONLY = "namespace_id_only"
    # authentication (401)
    MISSING_TOKEN = "missing_token"
    MALFORMED_AUTHORIZATION = "malformed_authorization"
    MALFORMED_TOKEN = "malformed_token"
    TOKEN_TOO_LARGE = "token_too_large"
    UNKNOWN_ISSUER = "unknown_issuer"
    UNKNOWN_KEY = "unknown_key"
    DISALLOWED_ALGORITHM = "disallowed_algorithm"
    BAD_SIGNATURE = "bad_signature"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    TOKEN_ISSUED_IN_FUTURE = "token_issued_in_future"
    AUDIENCE_MISMATCH = "audience_mismatch"
    ISSUER_MISMATCH = "issuer_mismatch"
    INVALID_CLAIMS = "invalid_claims"
    UNSUPPORTED_TOKEN_TYPE = "unsupported_token_type"
    UNSUPPORTED_CRITICAL_HEADER = "unsupported_critical_header"
    # certificate identity (peer_identity; docs/mesh.md)
    UNTRUSTED_PEER = "untrusted_peer"
    MALFORMED_PEER = "malformed_peer"
    # authorization (403)
    PERMISSION_DENIED = "permission_denied"
    EXPLICIT_DENY = "explicit_deny"
    TASK_QUEUE_DENIED = "task_queue_denied"
    # infrastructure (503: the client sees UNAVAILABLE and may retry)
    KEYS_UNAVAILABLE = "keys_unavailable"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class Method:
    """One gRPC method of Temporal's frontend, as the method table knows it."""

    service: str  # e.g. "temporal.api.workflowservice.v1.WorkflowService"
    name: str  # e.g. "StartWorkflowExecution"
    scope: Scope
    access: Access
    namespace_field: int | None = None  # protobuf field number of `namespace` in the request
    namespace_id_field: int | None = None  # field number of a namespace id, if the request has one

    @property
    def path(self) -> str:
        """The HTTP/2 ``:path`` of the method."""
        return f"/{self.service}/{self.name}"

    @property
    def short(self) -> str:
        """``WorkflowService/StartWorkflowExecution``: for messages and metric labels."""
        return f"{self.service.rsplit('.', 1)[-1]}/{self.name}"


@dataclass(frozen=True, slots=True)
class Target:
    """What a request will act on, read from the path and the protobuf body."""

    method: Method
    namespace: str = ""
    # other namespaces the request reaches (cross-namespace commands, multi-operations)
    other_namespaces: tuple[str, ...] = ()
    task_queues: tuple[str, ...] = ()
    # the request names its namespace only by id (e.g. DescribeNamespace{id})
    by_namespace_id: bool = False
    # queues a worker names as its own sticky queue (STICKY-kind workflow poll, sticky
    # attributes, ShutdownWorker): judged like task_queues, but a policy may cover them by the
    # SDKs' generated sticky-queue shape
    sticky_queues: tuple[str, ...] = ()
    # a start that terminates the running workflow of its id (conflict policy
    # TERMINATE_EXISTING, reuse policy TERMINATE_IF_RUNNING): deny rules on
    # TerminateWorkflowExecution apply to it too
    terminates_existing: bool = False

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace the request reaches, the primary one first, without repeats."""
        if not self.other_namespaces:  # the common case, on the hot path
            return (self.namespace,) if self.namespace else ()
        seen = dict.fromkeys((self.namespace, *self.other_namespaces))
        return tuple(ns for ns in seen if ns)

    @property
    def all_queues(self) -> tuple[str, ...]:
        """Every non-empty task queue the request names, sticky ones included, once each."""
        if not self.sticky_queues:
            return tuple(dict.fromkeys(q for q in self.task_queues if q))
        return tuple(dict.fromkeys(q for q in (*self.task_queues, *self.sticky_queues) if q))


@dataclass(frozen=True, slots=True)
class PeerEvidence:
    """The client certificate Envoy verified, as the transport delivered it (unparsed).

    gRPC mode: ``attributes.source.certificate`` (URL-encoded PEM, with
    ``include_peer_certificate``) and ``attributes.source.principal``; HTTP mode: the
    ``x-forwarded-client-cert`` element Envoy set (``forward_client_cert_details: SANITIZE_SET``).
    Only the transport adapters build one; a client-sent header never becomes one in gRPC mode.
    """

    certificate: str = ""
    principal: str = ""
    xfcc: str = ""
    # only offline tools: ``xfcc`` is the user's own text, with no ``Cert=`` to read
    xfcc_text: bool = False
    # the Envoy listener that verified it, as that listener labels its checks (gRPC:
    # context_extensions["extauthz-listener"]; HTTP: the x-extauthz-listener header Envoy adds)
    listener: str = ""


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """A verified client certificate's identity: the fields ``peer_identity.fields`` count."""

    name: str  # what names the principal: the SPIFFE ID, else the subject DN, else a DNS SAN
    spiffe_id: str = ""
    trust_domain: str = ""
    subject: str = ""
    dns: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller with Temporal roles."""

    subject: str
    issuer: str = ""
    kind: str = "human"  # "human" | "service"
    system: Role = Role.NONE
    namespaces: Mapping[str, Role] = field(default_factory=dict)
    claims: Mapping[str, Any] = field(default_factory=dict)
    # the client certificate's identity, when peer_identity is on and the call carried one:
    # the principal itself (no token: ``claims`` is empty) or beside the token's claims
    peer: PeerIdentity | None = None

    @property
    def by_certificate(self) -> bool:
        """Whether the certificate alone names this principal (the call carried no token)."""
        return self.peer is not None and not self.claims

    def role_in(self, namespace: str) -> int:
        """The role value Temporal's default authorizer uses for a namespace-scoped call.

        A plain int (compared with ``Role`` values as Temporal compares numbers): ``IntFlag``
        arithmetic costs about a microsecond per operation on the hot path.
        """
        return int.__or__(self.system, self.namespaces.get(namespace, 0))


# HTTP status Envoy turns into a gRPC status for the client.
@dataclass(frozen=True, slots=True)
class CheckInput:
    """A request as Envoy describes it. ``headers`` keys are lower-case."""

    path: str
    headers: Mapping[str, str]
    body: bytes
    method: str = "POST"
    # the verified client certificate, set only by a transport adapter (never from a header
    # in gRPC mode); ignored unless peer_identity is on
    peer: PeerEvidence | None = None


STATUS_UNAUTHENTICATED = 401  # -> UNAUTHENTICATED
STATUS_FORBIDDEN = 403  # -> PERMISSION_DENIED
STATUS_UNAVAILABLE = 503  # -> UNAVAILABLE (retryable)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one check. A denial is a value, never an exception."""

    allowed: bool
    reason: Reason
    message: str
    status: int = 200
    principal: Principal | None = None
    target: Target | None = None
    rule: str | None = None
    dry_run: bool = False
    # display identity (email, name) from the Web UI's ID token (`authorization-extras`):
    # a label for the audit log, never an input of the decision
    display: Mapping[str, str] | None = None

    @classmethod
    def allow(
        cls,
        reason: Reason,
        message: str,
        principal: Principal | None = None,
        target: Target | None = None,
        rule: str | None = None,
    ) -> Decision:
        """An allowed decision."""
        return cls(True, reason, message, 200, principal, target, rule)

    @classmethod
    def deny(
        cls,
        reason: Reason,
        message: str,
        status: int = STATUS_FORBIDDEN,
        principal: Principal | None = None,
        target: Target | None = None,
        rule: str | None = None,
    ) -> Decision:
        """A denied decision with the HTTP status the client will see."""
        return cls(False, reason, message, status, principal, target, rule)


# longest request value a message or log line repeats: a 4 MiB namespace must not cost a 4 MiB
# JSON escape per denial and per audit line (the decision itself uses the whole value)
MAX_SHOWN_CHARS = 256


def clip(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """``text`` cut to ``limit`` characters, marked with ``…`` when cut."""
    return text if len(text) <= limit else f"{text[:limit]}…"


def quote(text: str) -> str:
    """Quote a value for a one-line message: double quotes, escaped quotes/newlines/non-ASCII;
    values over ``MAX_SHOWN_CHARS`` are cut (marked ``…``)."""
    return json.dumps(clip(text))
