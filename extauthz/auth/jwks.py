"""The key store of one issuer: OIDC discovery, JWK Set fetches, background refresh.

Everything here runs on the event loop without blocking it (``httpx.AsyncClient``; ``file://``
reads go to a thread). Each fetch has one total deadline (``fetch_timeout_seconds`` around the
whole exchange, not per read) and a byte cap (``max_fetch_bytes``, streamed and aborted); one
document's fetch is ``extauthz.auth.fetch``, whose names are importable from here too.

Lifecycle:

- ``run()`` loads the keys, then refreshes every ``refresh_interval_seconds`` or the response's
  ``Cache-Control: max-age`` clamped to [min, max]; after a failure it retries sooner (backoff
  from ``min_refresh_interval_seconds``) and keeps the last good keys.
- After ``max_stale_seconds`` without a good fetch the keys are unusable (KEYS_UNAVAILABLE, 503).
- ``keys_for(kid)`` on an unknown ``kid`` triggers at most one refetch per
  ``unknown_kid_refetch_seconds``; concurrent callers await the same fetch.
- ``refetch_changed(kid, tried)`` after a signature that a known ``kid``'s key does not verify (the
  issuer replaced the key under the same ``kid``): the same refetch, sharing the same limiter,
  and ``True`` only if the keys under that ``kid`` changed, so a flood of forged signatures
  costs at most one fetch per interval and never a second verification for nothing.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence

import httpx
import structlog

from extauthz.auth.fetch import (
    Fetched,
    FetchError,
    FetchResult,
    check_url,
    discovery_url,
    get_json,
    parse_max_age,
)
from extauthz.auth.keys import InvalidJwks, KeyEntry, KeySet, parse_jwks
from extauthz.auth.types import AuthError, IssuerConfig
from extauthz.model import STATUS_UNAVAILABLE, Reason

log = structlog.get_logger(__name__)

OnFetch = Callable[[str, str], None]


class KeyStore:
    """The keys of one issuer and the state behind its metrics and health."""

    def __init__(
        self,
        config: IssuerConfig,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
        on_fetch: OnFetch | None = None,
    ):
        for uri in config.jwks_uris:
            check_url(uri, config, allow_file=True)
        if not config.jwks_uris:
            check_url(config.issuer, config, allow_file=False)
        self.config = config
        self.issuer = config.issuer
        self._client = client
        self._clock = clock
        self._on_fetch = on_fetch
        self.keyset = KeySet()
        self.generation = 0  # bumped when a refresh removes or replaces a key
        self.version = 0  # bumped when a refresh changes the key set at all (adds too)
        self.last_good_fetch: float | None = None
        self.last_error: str | None = None
        self.fetch_counts: Counter[str] = Counter()
        self.consecutive_failures = 0
        self.loaded = asyncio.Event()
        self._jwks_uris: tuple[str, ...] = config.jwks_uris
        self._inflight: asyncio.Task[bool] | None = None
        self._last_on_demand: float | None = None
        self._next_delay = config.refresh_interval_seconds

    # -- state -------------------------------------------------------------------------------

    @property
    def keys_loaded(self) -> int:
        """How many usable keys the store holds."""
        return len(self.keyset.keys)

    def usable(self) -> bool:
        """Keys were loaded and the last good fetch is no older than ``max_stale_seconds``."""
        last = self.last_good_fetch
        return last is not None and self._clock() - last <= self.config.max_stale_seconds

    def unavailable(self) -> AuthError:
        """The KEYS_UNAVAILABLE error for this issuer, saying why."""
        if self.last_good_fetch is None:
            why = "no JWK Set loaded yet"
        else:
            age = self._clock() - self.last_good_fetch
            why = (f"no successful JWK Set fetch for {age:.0f} s "
                   f"(max_stale_seconds {self.config.max_stale_seconds:g})")
        if self.last_error:
            why += f"; last error: {self.last_error}"
        return AuthError(
            Reason.KEYS_UNAVAILABLE, f"keys of issuer {self.issuer} unavailable: {why}",
            STATUS_UNAVAILABLE,
        )

    # -- lookups -----------------------------------------------------------------------------

    async def keys_for(self, kid: str | None) -> tuple[KeyEntry, ...]:
        """Candidate keys for a token's ``kid``, refetching (rate-limited) when unknown.

        Raises:
            AuthError: KEYS_UNAVAILABLE when the store has no usable keys; the caller turns an
                empty result into UNKNOWN_KEY.
        """
        if self.usable():
            found = self.keyset.candidates(kid)
            if found:
                return found
        await self._refetch_on_demand()
        if not self.usable():
            raise self.unavailable()
        return self.keyset.candidates(kid)

    async def refetch_changed(self, kid: str | None, tried: Sequence[KeyEntry]) -> bool:
        """After a bad signature with a known ``kid``: refetch like an unknown ``kid`` does.

        Joins a fetch in flight, else fetches if the shared limiter allows (at most one
        on-demand fetch per ``unknown_kid_refetch_seconds``, unknown kids and bad signatures
        together).

        Args:
            kid: the token's ``kid``.
            tried: the keys the signature failed with.

        Returns:
            Whether the usable keys under ``kid`` (every key when ``None``) now differ from
            ``tried``, i.e. whether verifying again could give another answer.
        """
        before = _fingerprints(tried)
        unchanged = _fingerprints(self.keyset.candidates(kid)) == before
        if unchanged and not await self._refetch_on_demand():
            return False
        return self.usable() and _fingerprints(self.keyset.candidates(kid)) != before

    async def _refetch_on_demand(self) -> bool:
        """Join the fetch in flight or start one if the limiter allows; ``False``: neither."""
        if self._inflight is not None and not self._inflight.done():
            await asyncio.shield(self._inflight)
            return True
        if self._may_refetch_now():
            await self.refresh()
            return True
        return False

    def _may_refetch_now(self) -> bool:
        now = self._clock()
        last = self._last_on_demand
        if last is not None and now - last < self.config.unknown_kid_refetch_seconds:
            return False
        self._last_on_demand = now
        return True

    # -- fetching ----------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Fetch the keys once; concurrent callers share one fetch. ``True`` on success."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._refresh_once())
        return await asyncio.shield(self._inflight)

    def cancel_inflight(self) -> None:
        """Cancel a fetch in progress (on shutdown)."""
        if self._inflight is not None:
            self._inflight.cancel()

    async def run(self) -> None:
        """Load, then refresh forever (cancel the task to stop)."""
        while True:
            ok = await self.refresh()
            delay = self._next_delay if ok else self._retry_delay()
            await asyncio.sleep(delay * random.uniform(1.0, 1.1))  # noqa: S311 - jitter

    def _retry_delay(self) -> float:
        cfg = self.config
        exponent = min(max(self.consecutive_failures - 1, 0), 16)
        backoff: float = cfg.min_refresh_interval_seconds * float(2**exponent)
        return min(backoff, cfg.refresh_interval_seconds)

    async def _refresh_once(self) -> bool:
        try:
            async with asyncio.timeout(self.config.fetch_timeout_seconds):
                keyset, max_age = await self._fetch_keys()
        except TimeoutError:
            return self._failed(FetchError(
                FetchResult.TIMEOUT,
                f"no answer within fetch_timeout_seconds {self.config.fetch_timeout_seconds:g}",
            ))
        except FetchError as exc:
            return self._failed(exc)
        except Exception as exc:
            log.error("jwks.unexpected_error", issuer=self.issuer, error=type(exc).__name__)
            return self._failed(FetchError(FetchResult.ERROR, type(exc).__name__))
        self._succeeded(keyset, max_age)
        return True

    def _succeeded(self, keyset: KeySet, max_age: float | None) -> None:
        cfg = self.config
        if self.keyset.fingerprints - keyset.fingerprints:
            self.generation += 1
        if self.keyset.fingerprints != keyset.fingerprints:
            self.version += 1
        self.keyset = keyset
        self.last_good_fetch = self._clock()
        self.last_error = None
        self.consecutive_failures = 0
        self._next_delay = cfg.refresh_interval_seconds if max_age is None else min(
            max(max_age, cfg.min_refresh_interval_seconds), cfg.max_refresh_interval_seconds
        )
        self._count(FetchResult.OK)
        self.loaded.set()
        log.debug("jwks.loaded", issuer=self.issuer, keys=len(keyset.keys),
                  next_refresh_seconds=self._next_delay)

    def _failed(self, exc: FetchError) -> bool:
        self.last_error = f"{exc.result}: {exc}"
        self.consecutive_failures += 1
        self._count(exc.result)
        log.warning("jwks.fetch_failed", issuer=self.issuer, result=str(exc.result),
                    error=str(exc), keeping_keys=len(self.keyset.keys),
                    usable=self.usable())
        return False

    def _count(self, result: FetchResult) -> None:
        self.fetch_counts[str(result)] += 1
        if self._on_fetch is not None:
            try:
                self._on_fetch(self.issuer, str(result))
            except Exception as exc:  # a metrics hook must not break key loading
                log.error("jwks.on_fetch_failed", issuer=self.issuer, error=type(exc).__name__)

    async def _fetch_keys(self) -> tuple[KeySet, float | None]:
        if not self._jwks_uris:
            self._jwks_uris = (await self._discover(),)
        try:
            return await self._fetch_all(self._jwks_uris)
        except FetchError:
            if not self.config.jwks_uris:
                self._jwks_uris = ()  # rediscover next time: the jwks_uri may have moved
            raise

    async def _fetch_all(self, uris: tuple[str, ...]) -> tuple[KeySet, float | None]:
        """All JWK Sets of the issuer, merged (all must succeed)."""
        keys: list[KeyEntry] = []
        ages: list[float] = []
        for uri in uris:
            fetched = await get_json(self._client, self.config, uri)
            try:
                keyset, skipped = parse_jwks(fetched.document, algorithms=self.config.algorithms,
                                             min_rsa_bits=self.config.min_rsa_bits)
            except InvalidJwks as exc:
                raise FetchError(FetchResult.INVALID, f"{uri}: {exc}") from None
            for skip in skipped:
                log.info("jwks.key_skipped", issuer=self.issuer, uri=uri, index=skip.index,
                         kid=skip.kid, kty=skip.kty, reason=skip.reason)
            keys.extend(keyset.keys)
            if fetched.max_age is not None:
                ages.append(fetched.max_age)
        if not keys:
            raise FetchError(FetchResult.NO_USABLE_KEYS, "the JWK Set has no usable signature key")
        return KeySet.of(keys), min(ages) if ages else None

    async def _discover(self) -> str:
        url = discovery_url(self.issuer)
        document = (await get_json(self._client, self.config, url)).document
        if not isinstance(document, dict):
            raise FetchError(FetchResult.INVALID, f"{url}: not a JSON object")
        if document.get("issuer") != self.issuer:
            raise FetchError(
                FetchResult.ISSUER_MISMATCH,
                f"{url} names issuer {str(document.get('issuer'))[:100]!r}, "
                f"not {self.issuer!r}",
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise FetchError(FetchResult.INVALID, f"{url}: no 'jwks_uri' string")
        try:
            check_url(jwks_uri, self.config, allow_file=False)
        except ValueError as exc:
            raise FetchError(FetchResult.INVALID, str(exc)) from None
        return jwks_uri


def _fingerprints(entries: Sequence[KeyEntry]) -> frozenset[str]:
    return frozenset(entry.fingerprint for entry in entries)


__all__ = ["FetchError", "FetchResult", "Fetched", "KeyStore", "OnFetch", "check_url",
           "discovery_url", "parse_max_age"]
