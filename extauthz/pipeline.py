"""One check, transport-neutral: attributes → authenticate → map claims → authorize.

Both adapters (gRPC ``Authorization/Check`` and, later, Envoy's HTTP mode) build a
``CheckInput`` and get a ``Decision``. Nothing here builds protobufs or touches sockets; the
only await is the token verifier (a cache hit does not suspend).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from extauthz import methods, wire
from extauthz.auth.types import AuthError, ClaimMapping, VerifiedToken
from extauthz.claims import ClaimMapper
from extauthz.model import (
    STATUS_UNAUTHENTICATED,
    STATUS_UNAVAILABLE,
    Decision,
    Principal,
    Reason,
    Scope,
    Target,
)
from extauthz.model import quote as q
from extauthz.policy import authorize as temporal_default
from extauthz.policy import missing_namespace

PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9_\-.=]+)")
_MAX_PATH_IN_MESSAGE = 160
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,20}/[A-Za-z0-9!#$&^_.+-]{1,27}")
_PRINCIPAL_CACHE_ENTRIES = 10_000

Authorizer = Callable[[Principal, Target], Decision]


class TokenVerifier(Protocol):
    """What the pipeline needs from the authentication layer."""

    async def verify(self, token: str) -> VerifiedToken:
        """Verify a token or raise ``AuthError``."""
        ...


@dataclass(frozen=True, slots=True)
class CheckInput:
    """A request as Envoy describes it. ``headers`` keys are lower-case."""

    path: str
    headers: Mapping[str, str]
    body: bytes
    method: str = "POST"


class Pipeline:
    """The decision pipeline. Build once; ``check`` is safe to call concurrently."""

    def __init__(
        self,
        verifier: TokenVerifier,
        authorizer: Authorizer = temporal_default,
        max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
    ):
        self._verifier = verifier
        self._authorize = authorizer
        self._max_message_bytes = max_message_bytes
        self._mappers: dict[ClaimMapping, ClaimMapper] = {}
        # principal per verified token object: the authenticator's cache hands back the same
        # object for the same token, so a hit skips claim mapping (held strongly: ids stay valid)
        self._principals: dict[int, tuple[VerifiedToken, Principal]] = {}

    async def check(self, req: CheckInput) -> Decision:
        """Decide one request. Never raises: any failure is a denial."""
        try:
            return await self._check(req)
        except Exception as exc:  # fail closed, whatever went wrong
            return Decision.deny(
                Reason.INTERNAL_ERROR,
                f"internal error while checking the request ({type(exc).__name__}); "
                "the call was refused and may be retried",
                status=STATUS_UNAVAILABLE,
            )

    async def _check(self, req: CheckInput) -> Decision:
        entry = methods.lookup(req.path)
        if entry is None or req.method != "POST":
            return unknown_method(req.path, req.method)
        if req.path in methods.ALWAYS_ALLOWED:  # == entry.method.path: the lookup is exact
            return Decision.allow(
                Reason.HEALTH_CHECK, f"{entry.method.short} is always allowed",
                target=Target(entry.method),
            )
        refused = precheck(req)
        if refused is not None:
            return refused
        # who before what: the body scan costs CPU in proportion to the body, so only an
        # authenticated caller gets one (an anonymous flood costs a header parse per request)
        token = bearer_token(req.headers.get("authorization"))
        if isinstance(token, Decision):
            return token
        try:
            verified = await self._verifier.verify(token)
        except AuthError as exc:
            return Decision.deny(exc.reason, exc.message, status=exc.status,
                                 target=Target(entry.method))
        principal = self.principal(verified)
        target = self.target(entry, req)
        if isinstance(target, Decision):
            return target
        if target.method.scope is Scope.NAMESPACE and not (
            target.namespace or target.by_namespace_id
        ):
            return missing_namespace(target, principal)
        return self._authorize(principal, target)

    def target(self, entry: methods.MethodEntry, req: CheckInput) -> Target | Decision:
        """What the request acts on, or a denial explaining why the body cannot be judged."""
        try:
            message = wire.unframe(
                req.body, req.headers.get("grpc-encoding"), self._max_message_bytes
            )
            found = wire.scan(message, entry.plan) if entry.plan else wire.Extracted()
        except wire.BodyError as exc:
            return Decision.deny(exc.reason, exc.message, target=Target(entry.method))
        return Target(
            entry.method,
            namespace=found.namespace,
            other_namespaces=tuple(found.other_namespaces),
            task_queues=tuple(found.task_queues),
            by_namespace_id=bool(found.namespace_id),
        )

    def principal(self, verified: VerifiedToken) -> Principal:
        """Map verified claims with the issuer's claim mapping (memoised per token object)."""
        hit = self._principals.get(id(verified))
        if hit is not None and hit[0] is verified:
            return hit[1]
        principal = self._map(verified)
        if len(self._principals) >= _PRINCIPAL_CACHE_ENTRIES:
            self._principals.clear()
        self._principals[id(verified)] = (verified, principal)
        return principal

    def _map(self, verified: VerifiedToken) -> Principal:
        mapping = verified.issuer.claims
        mapper = self._mappers.get(mapping)
        if mapper is None:
            mapper = self._mappers[mapping] = ClaimMapper(mapping)
        return mapper.principal(verified.claims, verified.issuer.issuer)


def precheck(req: CheckInput) -> Decision | None:
    """Refusals that need no token and no body scan: a truncated body, not gRPC."""
    if req.headers.get(PARTIAL_BODY_HEADER, "").strip().lower() == "true":
        return Decision.deny(
            Reason.PARTIAL_BODY,
            "the request body reached the authorizer truncated; it is over Envoy's "
            "max_request_bytes (send a smaller message)",
        )
    content_type = req.headers.get("content-type", "")
    if content_type == "application/grpc" or content_type.startswith(
        ("application/grpc+", "application/grpc;")
    ):
        return None
    shown = content_type.split(";", 1)[0].strip()[:48]
    # echo only what looks like a media type: a misplaced credential must not reach the logs
    what = f"content-type {q(shown)}" if _MEDIA_TYPE.fullmatch(shown) else "the content-type"
    return Decision.deny(Reason.UNSUPPORTED_PROTOCOL,
                         f"{what} is not gRPC (application/grpc)")


def unknown_method(path: str, method: str = "POST") -> Decision:
    """The denial for a path that is not exactly a known Temporal method."""
    shown = q(path[:_MAX_PATH_IN_MESSAGE])
    if method != "POST":
        return Decision.deny(
            Reason.UNKNOWN_METHOD, f"HTTP method {q(method[:16])} is not a gRPC call ({shown})"
        )
    return Decision.deny(
        Reason.UNKNOWN_METHOD,
        f"{shown} is not a known Temporal gRPC method (paths must match exactly)",
    )


def bearer_token(header: str | None) -> str | Decision:
    """The token of exactly one ``authorization: Bearer <jwt>`` header, or a 401 denial."""
    # memoised for well-formed headers (a header string hashes and compares in C; the regex
    # over a ~1 KB token was ~2 µs of every check); bounded, cleared when full
    token = _TOKEN_OF_HEADER.get(header) if header is not None else None
    if token is not None:
        return token
    found = _bearer_token(header)
    if isinstance(found, str) and header is not None:
        if len(_TOKEN_OF_HEADER) >= _TOKEN_OF_HEADER_ENTRIES:
            _TOKEN_OF_HEADER.clear()
        _TOKEN_OF_HEADER[header] = found
    return found


_TOKEN_OF_HEADER: dict[str, str] = {}
_TOKEN_OF_HEADER_ENTRIES = 1024


def _bearer_token(header: str | None) -> str | Decision:
    if header is None or not header.strip():
        return Decision.deny(
            Reason.MISSING_TOKEN,
            "no authorization header: send `authorization: Bearer <access token>`",
            status=STATUS_UNAUTHENTICATED,
        )
    if "," in header:
        return Decision.deny(
            Reason.MALFORMED_AUTHORIZATION,
            "more than one authorization value: send exactly one `Bearer <token>`",
            status=STATUS_UNAUTHENTICATED,
        )
    match = _BEARER.fullmatch(header.strip())
    if match is None:
        return Decision.deny(
            Reason.MALFORMED_AUTHORIZATION,
            "authorization must be `Bearer <token>` with a single JWT",
            status=STATUS_UNAUTHENTICATED,
        )
    return match.group(1)
