"""One check, transport-neutral: the orchestrator of the phases in ``extauthz.phases``.

attributes → authenticate → target → authorize, then respond. Both adapters (gRPC
``Authorization/Check`` and Envoy's HTTP mode) build a ``CheckInput`` and get a ``Decision``.
Nothing here builds protobufs or touches sockets; the only await is the token verifier (a
cache hit does not suspend). Each phase returns its result or a ``Decision`` that ends the
check; no phase calls back into this module.

Who before what: the request is read and refused without a token first (unknown method, not a
POST, wrong content-type, no or a malformed token), then the token is verified, and only then
is the body scanned: it costs CPU in proportion to the body, so only an authenticated caller
gets one (an anonymous flood costs a header parse per request).

A request whose path is not a gRPC method may be a call of Temporal's HTTP/JSON API
(``/api/v1/...``; ``extauthz.httpapi``): it is mapped to its gRPC method and goes through the
same phases, its target read from the protobuf message the server builds from the path, query
and JSON body.

The Web UI also sends the user's ID token in ``authorization-extras``. After the decision, and
without changing it, a verified ID token of the same issuer and subject labels the decision
with display fields (email, name) for the audit log; a bad one is logged by reason code and
ignored.
"""

from __future__ import annotations

from extauthz import httpapi, methods, wire
from extauthz.auth.types import VerifiedToken
from extauthz.interfaces import Authorizer, TokenVerifier
from extauthz.model import CheckInput, Decision, Principal, Target
from extauthz.peers import PeerSettings
from extauthz.phases import attributes, authorize, respond
from extauthz.phases import target as targets
from extauthz.phases.attributes import EXTRAS_HEADER
from extauthz.phases.authenticate import Authentication
from extauthz.policy import authorize as temporal_default


class Pipeline:
    """The decision pipeline. Build once; ``check`` is safe to call concurrently."""

    def __init__(
        self,
        verifier: TokenVerifier,
        authorizer: Authorizer = temporal_default,
        max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
        http_api: bool = True,
        peers: PeerSettings | None = None,
    ):
        # peers: the `peer_identity` settings (a client certificate as a credential; off: None)
        self._authn = Authentication(verifier, peers)
        self._authorize = authorizer
        self._max_message_bytes = max_message_bytes
        # Temporal's HTTP API routes, built now (start-up), not on the first request
        self._http_api = httpapi.router() if http_api else None

    async def check(self, req: CheckInput) -> Decision:
        """Decide one request. Never raises: any failure is a denial."""
        try:
            decision = await self._decide(req)
        except Exception as exc:  # fail closed, whatever went wrong
            return respond.internal_error(exc)
        principal = decision.principal
        if principal is not None and self._authn.verify_extras is not None:
            extras = req.headers.get(EXTRAS_HEADER)
            if extras:
                return respond.with_display(decision,
                                            await self._authn.display(principal, extras))
        return decision

    async def _decide(self, req: CheckInput) -> Decision:
        """The phases in order; the first that returns a decision ends the check."""
        call = attributes.read(req, self._http_api, self._max_message_bytes,
                               self._authn.peers)
        if isinstance(call, Decision):
            return call
        principal = await self._authn.principal_of(call)
        if isinstance(principal, Decision):
            return principal
        target = targets.read(call, req, self._max_message_bytes)
        if isinstance(target, Decision):
            return target
        return authorize.decide(call.method, principal, target, self._authorize)

    def target(self, entry: methods.MethodEntry, req: CheckInput) -> Target | Decision:
        """What a gRPC request acts on, or a denial explaining why the body cannot be judged."""
        return targets.of_grpc(entry, req, self._max_message_bytes)

    def principal(self, verified: VerifiedToken) -> Principal:
        """Map verified claims with the issuer's claim mapping (memoised per token object)."""
        return self._authn.principal(verified)
