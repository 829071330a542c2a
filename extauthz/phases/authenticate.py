"""Phase 2, authenticate: the call's token → a verified token → a ``Principal``.

The verifier (``extauthz.auth.Authenticator``) checks the token; the issuer's claim mapping
makes the principal, memoised per verified-token object. Also the display identity of the
Web UI's ID token (``authorization-extras``): verified after the decision, never changing it;
a bad one is logged by reason code (rate-limited) and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import structlog

from extauthz.auth.certs import PeerIdentifier
from extauthz.auth.types import AuthError, VerifiedToken
from extauthz.claims import ClaimMapper, ClaimMapping
from extauthz.interfaces import ExtrasVerifier, TokenVerifier
from extauthz.model import STATUS_UNAUTHENTICATED, Decision, PeerIdentity, Principal, Reason, Target
from extauthz.obs.loglimit import LogLimiter
from extauthz.peers import PeerError, PeerSettings
from extauthz.phases.attributes import Call, extras_token

_PRINCIPAL_CACHE_ENTRIES = 10_000

log = structlog.get_logger(__name__)


class Authentication:
    """Who is calling. Build once; safe to use from concurrent checks."""

    __slots__ = ("_extras_log", "_mappers", "_peers", "_principals", "_verifier", "_with_peer",
                 "verify_extras")

    def __init__(self, verifier: TokenVerifier, peers: PeerSettings | None = None):
        self._verifier = verifier
        # the client certificate as a credential (peer_identity.enabled); None: ignored
        self._peers = PeerIdentifier(peers) if peers is not None and peers.enabled else None
        self._with_peer: dict[tuple[int, PeerIdentity], tuple[Principal, Principal]] = {}
        # ``Authenticator.verify_extras`` (optional: test verifiers may not have it)
        self.verify_extras: ExtrasVerifier | None = getattr(verifier, "verify_extras", None)
        self._mappers: dict[ClaimMapping, ClaimMapper] = {}
        # principal per verified token object: the authenticator's cache hands back the same
        # object for the same token, so a hit skips claim mapping (held strongly: ids stay valid)
        self._principals: dict[int, tuple[VerifiedToken, Principal]] = {}
        # one `auth.extras_ignored` line per reason per 10 s: a client sending a bad header on
        # every call must not flood the log (the dropped lines are counted in the next one)
        self._extras_log = LogLimiter()

    @property
    def peers(self) -> PeerSettings | None:
        """The peer_identity settings when a client certificate is a credential, else None."""
        return self._peers.settings if self._peers is not None else None

    async def principal_of(self, call: Call) -> Principal | Decision:
        """The caller, or the denial of its token or certificate (a cache hit does not suspend).

        With a certificate (peer_identity on): a refused certificate is a denial whether or
        not a token comes with it; a token names the principal and the certificate's identity
        rides along (``Principal.peer``) for rules that want both; no token: the certificate
        names a ``service`` principal. A bad token never falls back to the certificate.
        """
        peer: PeerIdentity | None = None
        if call.peer is not None and self._peers is not None:
            try:
                peer = self._peers.identify(call.peer)
            except PeerError as exc:
                return Decision.deny(exc.reason, exc.message, status=STATUS_UNAUTHENTICATED,
                                     target=Target(call.method))
            if not call.token:
                return self._peers.principal(peer)
        try:
            verified = await self._verifier.verify(call.token)
        except AuthError as exc:
            return Decision.deny(exc.reason, exc.message, status=exc.status,
                                 target=Target(call.method))
        principal = self.principal(verified)
        return principal if peer is None else self._beside(principal, peer)

    def _beside(self, principal: Principal, peer: PeerIdentity) -> Principal:
        """The token's principal with the certificate's identity (memoised)."""
        key = (id(principal), peer)
        hit = self._with_peer.get(key)
        if hit is not None and hit[0] is principal:
            return hit[1]
        out = replace(principal, peer=peer)
        if len(self._with_peer) >= _PRINCIPAL_CACHE_ENTRIES:
            self._with_peer.clear()
        self._with_peer[key] = (principal, out)
        return out

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

    async def display(self, principal: Principal, header: str) -> Mapping[str, str] | None:
        """The display identity of the ID token in ``header``, if the verifier checks them."""
        if self.verify_extras is None:
            return None
        return await display_of(principal, header, self.verify_extras, limiter=self._extras_log)


async def display_of(principal: Principal, header: str, verify: ExtrasVerifier, *,
                     limiter: LogLimiter | None = None) -> Mapping[str, str] | None:
    """The display identity (email, name) of the Web UI's ID token for ``principal``.

    Asked after the decision and never changing it: a missing, invalid or foreign ID token
    only gives None (logged with its reason code, never the token). ``verify`` is
    ``Authenticator.verify_extras``, which uses only the keys already loaded (no refetch), so
    the label never waits on the network. No ``asyncio.timeout`` here: the HTTP adapter runs
    checks outside a task until they suspend. With ``limiter``, the ``auth.extras_ignored``
    line is rate-limited per reason (``suppressed``: lines dropped since the last one).
    """
    token = extras_token(header)
    if token is None:
        _extras_ignored(limiter, str(Reason.MALFORMED_AUTHORIZATION), subject=principal.subject)
        return None
    sub = principal.claims.get("sub")
    try:
        return await verify(token, issuer=principal.issuer,
                            subject=sub if isinstance(sub, str) else "")
    except AuthError as exc:
        _extras_ignored(limiter, str(exc.reason), error=exc.message, subject=principal.subject)
        return None
    except Exception as exc:  # a label must never turn into a denial
        _extras_ignored(limiter, "error", error=type(exc).__name__, subject=principal.subject)
        return None


def _extras_ignored(limiter: LogLimiter | None, reason: str, **fields: str) -> None:
    """Log ``auth.extras_ignored`` (warning for an unexpected error), unless rate-limited."""
    suppressed = 0 if limiter is None else limiter.admit(reason)
    if suppressed is None:
        return
    emit = log.warning if reason == "error" else log.info
    emit("auth.extras_ignored", reason=reason, suppressed=suppressed, **fields)
