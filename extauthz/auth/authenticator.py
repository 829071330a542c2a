"""``Authenticator``: verify bearer tokens against the configured issuers, with caches.

A token is verified once, then served from a bounded cache until its ``exp`` (or
``max_cache_seconds``), keyed by the SHA-256 of the token. A cache hit re-checks the deadline
and that the issuer has not since removed or replaced a key (the key store's ``generation``).
Refused tokens are remembered for ``negative_cache_seconds`` so a flood of one bad token costs
one verification; refusals that a key refetch can change (KEYS_UNAVAILABLE, UNKNOWN_KEY) and
internal errors are never remembered, and a remembered refusal is forgotten as soon as any
issuer's key set changes (a BAD_SIGNATURE may verify with a key replaced under its ``kid``).

A signature that a known ``kid``'s key does not verify triggers the key store's rate-limited
refetch (shared with unknown kids); the token is verified once more only if the keys under its
``kid`` changed, otherwise it stays BAD_SIGNATURE.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import httpx
import structlog

from extauthz.auth.cache import BoundedTTLCache
from extauthz.auth.fetch import issuer_client
from extauthz.auth.jwks import KeyStore, OnFetch
from extauthz.auth.types import AuthError, IssuerConfig, VerifiedToken
from extauthz.auth.verify import (
    ParsedToken,
    check_claims,
    check_header,
    check_signature,
    parse_token,
    route,
    unknown_key_message,
)
from extauthz.model import STATUS_UNAVAILABLE, Reason

log = structlog.get_logger(__name__)

NOT_NEGATIVELY_CACHED = frozenset(
    {Reason.KEYS_UNAVAILABLE, Reason.UNKNOWN_KEY, Reason.INTERNAL_ERROR}
)
DISPLAY_CLAIMS = ("email", "name", "preferred_username")


@dataclass(frozen=True, slots=True)
class _Cached:
    verified: VerifiedToken
    store: KeyStore
    generation: int


@dataclass(frozen=True, slots=True)
class _Refused:
    error: AuthError
    key_epoch: int  # ``Authenticator._key_epoch()`` before the verification


@dataclass(frozen=True, slots=True)
class _Extras:
    issuer: str
    subject: object  # the ID token's raw `sub`
    fields: Mapping[str, str]
    store: KeyStore
    generation: int


@dataclass(slots=True)
class AuthStats:
    """Cache counters (plain ints, for metrics)."""

    hits: int = 0
    misses: int = 0
    negative_hits: int = 0


def token_digest(token: str) -> bytes:
    """The cache key of a token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _default_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(follow_redirects=False)


class Authenticator:
    """Verifies tokens of several issuers; owns their key stores and the token caches."""

    def __init__(
        self,
        issuers: Sequence[IssuerConfig],
        *,
        clock: Callable[[], float] = time.time,
        http_client_factory: Callable[[], httpx.AsyncClient] | None = None,
        on_fetch: OnFetch | None = None,
        cache_max_entries: int = 10_000,
        max_cache_seconds: float = 600.0,
        negative_cache_seconds: float = 5.0,
        negative_cache_max_entries: int = 10_000,
    ):
        """Build the key stores (no I/O until ``start``).

        Raises:
            ValueError: no issuers, a duplicate issuer, or a URL scheme the config forbids.
        """
        if not issuers:
            raise ValueError("at least one issuer is required")
        self._configs: dict[str, IssuerConfig] = {}
        for config in issuers:
            if config.issuer in self._configs:
                raise ValueError(f"issuer {config.issuer} is configured twice")
            self._configs[config.issuer] = config
        self._clock = clock
        self._client = (http_client_factory or _default_client)()
        # an issuer with its own ca_file gets its own client, trusting only those CAs
        self._own_clients = {iss: client for iss, cfg in self._configs.items()
                             if (client := issuer_client(cfg)) is not None}
        self.stores: Mapping[str, KeyStore] = {
            iss: KeyStore(cfg, self._own_clients.get(iss, self._client), clock=clock,
                          on_fetch=on_fetch)
            for iss, cfg in self._configs.items()
        }
        self._max_token_bytes = max(cfg.max_token_bytes for cfg in issuers)
        self._max_cache_seconds = max_cache_seconds
        self._negative_seconds = negative_cache_seconds
        self._positive: BoundedTTLCache[_Cached] = BoundedTTLCache(cache_max_entries)
        self._negative: BoundedTTLCache[_Refused] = BoundedTTLCache(negative_cache_max_entries)
        self._store_list = tuple(self.stores.values())
        self._extras: BoundedTTLCache[_Extras] = BoundedTTLCache(cache_max_entries)
        self.stats = AuthStats()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start loading every issuer's keys and refreshing them in the background.

        Returns at once; an issuer that is down is retried in the background (see ``ready``).
        """
        if self._tasks:
            return
        for store in self.stores.values():
            if not store.config.audiences:
                log.warning("auth.audience_not_checked", issuer=store.issuer)
            self._tasks.append(asyncio.create_task(store.run(), name=f"jwks:{store.issuer}"))

    def ready(self) -> bool:
        """Every issuer has had at least one successful key load."""
        return all(store.last_good_fetch is not None for store in self.stores.values())

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until ``ready()`` or ``timeout`` seconds; returns ``ready()``."""
        waits = [store.loaded.wait() for store in self.stores.values()]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*waits)
        return self.ready()

    async def close(self) -> None:
        """Stop the refresh tasks and close the HTTP clients."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for store in self.stores.values():
            store.cancel_inflight()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.aclose()
        for client in self._own_clients.values():
            await client.aclose()

    async def __aenter__(self) -> Authenticator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- verification ------------------------------------------------------------------------

    async def verify(self, token: str) -> VerifiedToken:
        """Verify a bearer token (without the ``Bearer `` prefix).

        Raises:
            AuthError: the token is refused (401), or keys are unavailable / internal error (503).
        """
        now = self._clock()
        key = token_digest(token)
        cached = self._positive.get(key, now)
        if cached is not None and cached.generation == cached.store.generation:
            self.stats.hits += 1
            return cached.verified
        refused = self._negative.get(key, now)
        epoch = self._key_epoch()
        if refused is not None and refused.key_epoch == epoch:
            self.stats.negative_hits += 1
            error = refused.error
            raise AuthError(error.reason, error.message, error.status)
        self.stats.misses += 1
        try:
            verified, store, generation = await self._verify_uncached(token, now)
        except AuthError as exc:
            if exc.reason not in NOT_NEGATIVELY_CACHED:
                self._negative.put(key, _Refused(exc, epoch), now + self._negative_seconds, now)
            raise
        deadline = min(verified.expires_at, now + self._max_cache_seconds)
        self._positive.put(key, _Cached(verified, store, generation), deadline, now)
        return verified

    async def verify_extras(
        self, token: str, *, issuer: str | None = None, subject: str | None = None
    ) -> Mapping[str, str]:
        """Display fields (email, name, preferred_username) of the Web UI's ID token.

        The ID token's signature, issuer and times are checked; its audience (the UI's client
        id) and ``typ`` are not. Only the keys already loaded are used: an unknown ``kid`` is
        UNKNOWN_KEY at once, never a refetch, so a label never waits on the network. With
        ``issuer``/``subject`` (the access token's ``iss`` and ``sub``), an ID token of another
        issuer or another subject is refused, so one caller cannot label itself with someone
        else's ID token. The result grants nothing; it only labels the caller.

        Raises:
            AuthError: the token is refused.
        """
        now = self._clock()
        key = token_digest(token)
        cached = self._extras.get(key, now)
        if cached is None or cached.generation != cached.store.generation:
            verified, store, generation = await self._verify_uncached(token, now, id_token=True)
            fields = MappingProxyType({
                name: value for name in DISPLAY_CLAIMS
                if isinstance(value := verified.claims.get(name), str)
            })
            cached = _Extras(verified.issuer.issuer, verified.claims.get("sub"), fields,
                             store, generation)
            deadline = min(verified.expires_at, now + self._max_cache_seconds)
            self._extras.put(key, cached, deadline, now)
        if issuer is not None and cached.issuer != issuer:
            raise AuthError(Reason.ISSUER_MISMATCH,
                            "the ID token is from another issuer than the access token")
        if subject is not None and cached.subject != subject:
            raise AuthError(Reason.INVALID_CLAIMS,
                            "the ID token names another subject than the access token")
        return cached.fields

    async def _verify_uncached(
        self, token: str, now: float, *, id_token: bool = False
    ) -> tuple[VerifiedToken, KeyStore, int]:
        try:
            parsed = parse_token(token, self._max_token_bytes)
            issuer = route(parsed, self._configs)
            if len(token) > issuer.max_token_bytes:
                raise AuthError(
                    Reason.TOKEN_TOO_LARGE,
                    f"token is {len(token)} bytes, more than the {issuer.max_token_bytes} "
                    f"accepted for issuer {issuer.issuer}",
                )
            check_header(parsed, issuer, typ=not id_token)
            store = self.stores[issuer.issuer]
            await self._check_signature(parsed, issuer, store, refetch=not id_token)
            generation = store.generation  # the verifying key is in this generation's set
            verified = check_claims(parsed, issuer, now, audience=not id_token)
        except AuthError:
            raise
        except Exception as exc:  # fail closed; never log the token
            log.error("auth.internal_error", error=type(exc).__name__)
            raise AuthError(Reason.INTERNAL_ERROR, "internal error while verifying the token",
                            STATUS_UNAVAILABLE) from None
        return verified, store, generation

    async def _check_signature(
        self, parsed: ParsedToken, issuer: IssuerConfig, store: KeyStore, *, refetch: bool = True
    ) -> None:
        if refetch:
            candidates = await store.keys_for(parsed.kid)
        elif store.usable():
            candidates = store.keyset.candidates(parsed.kid)
        else:
            raise store.unavailable()
        if not candidates:
            raise AuthError(Reason.UNKNOWN_KEY, unknown_key_message(parsed, issuer))
        try:
            check_signature(parsed, candidates)
        except AuthError as exc:
            # a key replaced under the same kid: one rate-limited refetch, one more try
            if not refetch or exc.reason != Reason.BAD_SIGNATURE:
                raise
            if not await store.refetch_changed(parsed.kid, candidates):
                raise
            log.info("auth.keys_changed_under_kid", issuer=issuer.issuer,
                     kid=(parsed.kid or "")[:64])
            retry = store.keyset.candidates(parsed.kid)
            if not retry:
                raise AuthError(Reason.UNKNOWN_KEY, unknown_key_message(parsed, issuer)) from None
            check_signature(parsed, retry)

    def _key_epoch(self) -> int:
        """Changes whenever any issuer's key set changes (negative cache entries then expire)."""
        return sum(store.version for store in self._store_list)

    # -- observability -----------------------------------------------------------------------

    def issuer_states(self) -> Mapping[str, Mapping[str, Any]]:
        """Per issuer: keys loaded, last good fetch, usable, fetch counts (for metrics/health)."""
        return {
            iss: {
                "keys_loaded": store.keys_loaded,
                "last_good_fetch": store.last_good_fetch,
                "usable": store.usable(),
                "last_error": store.last_error,
                "fetch_counts": dict(store.fetch_counts),
            }
            for iss, store in self.stores.items()
        }

    @property
    def cache_size(self) -> int:
        """Entries in the positive token cache."""
        return len(self._positive)

    @property
    def negative_cache_size(self) -> int:
        """Entries in the negative token cache."""
        return len(self._negative)
