"""One check, transport-neutral: attributes → authenticate → map claims → authorize.

Both adapters (gRPC ``Authorization/Check`` and, later, Envoy's HTTP mode) build a
``CheckInput`` and get a ``Decision``. Nothing here builds protobufs or touches sockets; the
only await is the token verifier (a cache hit does not suspend).

A request whose path is not a gRPC method may be a call of Temporal's HTTP/JSON API
(``/api/v1/...``; ``extauthz.httpapi``): it is mapped to its gRPC method and goes through the
same steps (authenticate → target → authorize), its target read from the protobuf message the
server builds from the path, query and JSON body.

The Web UI also sends the user's ID token in ``authorization-extras``. After the decision, and
without changing it, a verified ID token of the same issuer and subject labels the decision
with display fields (email, name) for the audit log (``with_display``); a bad one is logged
by reason code and ignored.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import structlog

from extauthz import httpapi, methods, wire
from extauthz.auth.loglimit import LogLimiter
from extauthz.auth.types import AuthError, ClaimMapping, VerifiedToken
from extauthz.claims import ClaimMapper
from extauthz.model import (
    STATUS_UNAUTHENTICATED,
    STATUS_UNAVAILABLE,
    Decision,
    Method,
    Principal,
    Reason,
    Scope,
    Target,
)
from extauthz.model import quote as q
from extauthz.policy import authorize as temporal_default
from extauthz.policy import missing_namespace

PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"
# the Temporal Web UI forwards the user's ID token here (the access token is in authorization)
EXTRAS_HEADER = "authorization-extras"
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9_\-.=]+)")
_MAX_PATH_IN_MESSAGE = 160
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,20}/[A-Za-z0-9!#$&^_.+-]{1,27}")
_PRINCIPAL_CACHE_ENTRIES = 10_000

Authorizer = Callable[[Principal, Target], Decision]
ExtrasVerifier = Callable[..., Awaitable[Mapping[str, str]]]

log = structlog.get_logger(__name__)


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
        http_api: bool = True,
    ):
        self._verifier = verifier
        # ``Authenticator.verify_extras`` (optional: test verifiers may not have it)
        self._verify_extras: ExtrasVerifier | None = getattr(verifier, "verify_extras", None)
        self._authorize = authorizer
        self._max_message_bytes = max_message_bytes
        # Temporal's HTTP API routes, built now (start-up), not on the first request
        self._http_api = httpapi.router() if http_api else None
        self._mappers: dict[ClaimMapping, ClaimMapper] = {}
        # principal per verified token object: the authenticator's cache hands back the same
        # object for the same token, so a hit skips claim mapping (held strongly: ids stay valid)
        self._principals: dict[int, tuple[VerifiedToken, Principal]] = {}
        # one `auth.extras_ignored` line per reason per 10 s: a client sending a bad header on
        # every call must not flood the log (the dropped lines are counted in the next one)
        self._extras_log = LogLimiter()

    async def check(self, req: CheckInput) -> Decision:
        """Decide one request. Never raises: any failure is a denial."""
        try:
            decision = await self._check(req)
        except Exception as exc:  # fail closed, whatever went wrong
            return Decision.deny(
                Reason.INTERNAL_ERROR,
                f"internal error while checking the request ({type(exc).__name__}); "
                "the call was refused and may be retried",
                status=STATUS_UNAVAILABLE,
            )
        verify_extras = self._verify_extras
        if decision.principal is not None and verify_extras is not None:
            extras = req.headers.get(EXTRAS_HEADER)
            if extras:
                return await with_display(decision, decision.principal, extras, verify_extras,
                                          limiter=self._extras_log)
        return decision

    async def _check(self, req: CheckInput) -> Decision:
        entry = methods.lookup(req.path)
        if entry is None or req.method != "POST":
            if entry is None and self._http_api is not None:
                return await self._check_http_api(req, self._http_api)
            return unknown_method(req.path, req.method)
        if req.path in methods.ALWAYS_ALLOWED:  # == entry.method.path: the lookup is exact
            return Decision.allow(
                Reason.HEALTH_CHECK, f"{entry.method.short} is always allowed",
                target=Target(entry.method),
            )
        refused = precheck(req)
        if refused is not None:
            return refused
        return await self._judge(entry.method, req, lambda: self.target(entry, req))

    async def _judge(
        self, method: Method, req: CheckInput, target_of: Callable[[], Target | Decision]
    ) -> Decision:
        """The steps every call shares once its method is known and its shape passed.

        Who before what: the body scan costs CPU in proportion to the body, so only an
        authenticated caller gets one (an anonymous flood costs a header parse per request).
        """
        token = bearer_token(req.headers.get("authorization"))
        if isinstance(token, Decision):
            return replace(token, target=Target(method))
        try:
            verified = await self._verifier.verify(token)
        except AuthError as exc:
            return Decision.deny(exc.reason, exc.message, status=exc.status,
                                 target=Target(method))
        principal = self.principal(verified)
        target = target_of()
        if isinstance(target, Decision):
            return target
        if method.scope is Scope.NAMESPACE and not (target.namespace or target.by_namespace_id):
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
        return found.target(entry.method)

    async def _check_http_api(self, req: CheckInput, router: httpapi.Router) -> Decision:
        """A call of Temporal's HTTP API: the same steps as a gRPC call, for its gRPC method."""
        try:
            route = router.match(req.method, req.path)
        except httpapi.RequestError as exc:
            return Decision.deny(exc.reason, exc.message)
        if route is None:
            if router.looks_like_http_api(req.path):
                return unknown_route(req.path, req.method)
            return unknown_method(req.path, req.method)
        method = route.entry.method
        if method.path in methods.ALWAYS_ALLOWED:
            return Decision.allow(Reason.HEALTH_CHECK, f"{method.short} is always allowed",
                                  target=Target(method))
        refused = precheck_http(req, self._max_message_bytes)
        if refused is not None:
            return replace(refused, target=Target(method))
        return await self._judge(method, req, lambda: self.target_http(route, req))

    def target_http(self, route: httpapi.Route, req: CheckInput) -> Target | Decision:
        """What an HTTP API call acts on: the path, query and JSON body made into the protobuf
        request the server builds, then read with the method's plan like a gRPC body."""
        entry = route.entry
        try:
            message = httpapi.request_message(route, req.body)
            found = wire.scan(memoryview(message), entry.plan) if entry.plan else wire.Extracted()
        except (httpapi.RequestError, wire.BodyError) as exc:
            return Decision.deny(exc.reason, exc.message, target=Target(entry.method))
        return found.target(entry.method)

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


async def with_display(decision: Decision, principal: Principal, header: str,
                       verify: ExtrasVerifier, *, limiter: LogLimiter | None = None) -> Decision:
    """The decision labelled with the display identity of the Web UI's ID token.

    Made after the decision and never changing it: a missing, invalid or foreign ID token
    only leaves the label off (logged with its reason code, never the token). ``verify`` is
    ``Authenticator.verify_extras``, which uses only the keys already loaded (no refetch), so
    the label never waits on the network. No ``asyncio.timeout`` here: the HTTP adapter runs
    checks outside a task until they suspend. With ``limiter``, the ``auth.extras_ignored``
    line is rate-limited per reason (``suppressed``: lines dropped since the last one).
    """
    token = extras_token(header)
    if token is None:
        _extras_ignored(limiter, str(Reason.MALFORMED_AUTHORIZATION), subject=principal.subject)
        return decision
    sub = principal.claims.get("sub")
    try:
        display = await verify(token, issuer=principal.issuer,
                               subject=sub if isinstance(sub, str) else "")
    except AuthError as exc:
        _extras_ignored(limiter, str(exc.reason), error=exc.message, subject=principal.subject)
        return decision
    except Exception as exc:  # a label must never turn into a denial
        _extras_ignored(limiter, "error", error=type(exc).__name__, subject=principal.subject)
        return decision
    return replace(decision, display=display) if display else decision


def _extras_ignored(limiter: LogLimiter | None, reason: str, **fields: str) -> None:
    """Log ``auth.extras_ignored`` (warning for an unexpected error), unless rate-limited."""
    suppressed = 0 if limiter is None else limiter.admit(reason)
    if suppressed is None:
        return
    emit = log.warning if reason == "error" else log.info
    emit("auth.extras_ignored", reason=reason, suppressed=suppressed, **fields)


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


def precheck_http(req: CheckInput, max_body_bytes: int) -> Decision | None:
    """Refusals of an HTTP API call that need no token: a truncated or oversized body, a body
    that is not JSON (the server would read any content-type as JSON, and a form body can turn
    a POST into a GET there)."""
    if req.headers.get(PARTIAL_BODY_HEADER, "").strip().lower() == "true":
        return Decision.deny(
            Reason.PARTIAL_BODY,
            "the request body reached the authorizer truncated; it is over Envoy's "
            "max_request_bytes (send a smaller body)",
        )
    if len(req.body) > max_body_bytes:
        return Decision.deny(Reason.BODY_TOO_LARGE,
                             f"the JSON body is over {max_body_bytes} bytes")
    content_type = req.headers.get("content-type", "")
    media = httpapi.media_type(content_type)
    if media in httpapi.JSON_MEDIA_TYPES or not (media or req.body):
        return None
    if content_type.startswith("application/grpc"):
        return Decision.deny(Reason.UNSUPPORTED_PROTOCOL,
                             "a gRPC call on a path of Temporal's HTTP API")
    shown = content_type.split(";", 1)[0].strip()[:48]
    what = f"content-type {q(shown)}" if _MEDIA_TYPE.fullmatch(shown) else "the content-type"
    return Decision.deny(Reason.UNSUPPORTED_PROTOCOL,
                         f"{what} is not JSON: Temporal's HTTP API takes application/json")


def unknown_route(path: str, method: str) -> Decision:
    """The denial for a request on an HTTP API prefix that matches no route."""
    return Decision.deny(
        Reason.UNKNOWN_METHOD,
        f"{q(method[:16])} {q(path[:_MAX_PATH_IN_MESSAGE])} is not a route of Temporal's HTTP "
        "API (paths and methods must match exactly: no trailing '/', '//', '.' or '..')",
    )


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


def extras_token(header: str) -> str | None:
    """The ID token of ``authorization-extras``: the bare JWT the Web UI sends (a ``Bearer``
    prefix is tolerated), or None when the value is not one token."""
    value = header.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].lstrip(" ")
    return value if _JWT_CHARS.fullmatch(value) else None


_JWT_CHARS = re.compile(r"[A-Za-z0-9_\-.=]+")
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
