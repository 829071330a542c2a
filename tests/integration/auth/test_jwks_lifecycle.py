"""JWK Set lifecycle against a real dev issuer: discovery, refresh, outages, rotation, floods."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from support_auth import FakeClock, config_for, refused, running

from devkit.issuer import DevIssuer
from devkit.ports import free_port
from devkit.tokens import b64url, generate_key
from extauthz.auth.authenticator import Authenticator
from extauthz.auth.types import AuthError, IssuerConfig
from extauthz.model import Reason

# no background refresh during a test unless it asks for one
QUIET: dict[str, Any] = {"refresh_interval_seconds": 3600.0,
                         "min_refresh_interval_seconds": 3600.0,
                         "max_refresh_interval_seconds": 3600.0}


async def test_discovery_then_jwks_are_fetched_once_at_start(fresh_dev: DevIssuer) -> None:
    """Start-up: one discovery request, one JWKS request, the key loaded, ready."""
    async with running(config_for(fresh_dev, **QUIET)) as auth:
        assert auth.ready()
        state = auth.issuer_states()[fresh_dev.url]
        assert state["keys_loaded"] == 1
        assert state["fetch_counts"] == {"ok": 1}
    assert (fresh_dev.discovery_requests, fresh_dev.jwks_requests) == (1, 1)


async def test_explicit_jwks_uri_skips_discovery(fresh_dev: DevIssuer) -> None:
    """``jwks_uris`` is used as is; discovery is never requested."""
    config = config_for(fresh_dev, jwks_uris=(f"{fresh_dev.url}/jwks.json",))
    async with running(config) as auth:
        await auth.verify(fresh_dev.mint({"sub": "alice"}))
    assert fresh_dev.discovery_requests == 0


async def test_file_jwks_uri_is_read(fresh_dev: DevIssuer, tmp_path: Path) -> None:
    """A ``file://`` JWK Set works without any HTTP request."""
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(fresh_dev.jwks()))
    config = IssuerConfig(fresh_dev.url, audiences=("temporal",), jwks_uris=(path.as_uri(),))
    async with running(config) as auth:
        await auth.verify(fresh_dev.mint({"sub": "alice"}))
    assert fresh_dev.requests == 0


def test_http_issuer_needs_allow_insecure_http(fresh_dev: DevIssuer) -> None:
    """Plain-http discovery is refused at construction unless explicitly allowed."""
    with pytest.raises(ValueError, match="allow_insecure_http"):
        Authenticator([IssuerConfig(fresh_dev.url)])


async def test_discovery_naming_another_issuer_is_not_trusted(fresh_dev: DevIssuer) -> None:
    """Configured ``<url>/`` while the document says ``<url>``: no keys, KEYS_UNAVAILABLE."""
    config = IssuerConfig(fresh_dev.url + "/", allow_insecure_http=True, **QUIET)
    async with running(config, ready=False) as auth:
        assert not await auth.wait_ready(0.5)
        assert auth.issuer_states()[config.issuer]["fetch_counts"] == {"issuer_mismatch": 1}
        token = fresh_dev.mint({"sub": "a", "iss": config.issuer})
        await refused(auth, token, Reason.KEYS_UNAVAILABLE)


async def test_background_refresh_runs_every_interval(fresh_dev: DevIssuer) -> None:
    """Without ``Cache-Control`` the keys are refetched every ``refresh_interval_seconds``."""
    fresh_dev.jwks_max_age = None
    config = config_for(fresh_dev, refresh_interval_seconds=0.2,
                        min_refresh_interval_seconds=0.1)
    async with running(config):
        await asyncio.sleep(1.0)
    assert 4 <= fresh_dev.jwks_requests <= 6


async def test_max_age_overrides_the_refresh_interval(fresh_dev: DevIssuer) -> None:
    """``max-age=60`` (within [min, max]) means no refetch for a minute."""
    fresh_dev.jwks_max_age = 60
    config = config_for(fresh_dev, refresh_interval_seconds=0.1,
                        min_refresh_interval_seconds=0.1, max_refresh_interval_seconds=120)
    async with running(config):
        await asyncio.sleep(0.8)
    assert fresh_dev.jwks_requests == 1


@pytest.mark.parametrize(("max_age", "low", "high"), [(0, 3, 5), (3600, 4, 6)])
async def test_max_age_is_clamped(
    fresh_dev: DevIssuer, max_age: int, low: int, high: int
) -> None:
    """``max-age=0`` waits at least the minimum (0.25 s); ``3600`` at most the maximum (0.2 s)."""
    fresh_dev.jwks_max_age = max_age
    config = config_for(fresh_dev, refresh_interval_seconds=0.1,
                        min_refresh_interval_seconds=0.25 if max_age == 0 else 0.05,
                        max_refresh_interval_seconds=0.2 if max_age else 10)
    async with running(config):
        await asyncio.sleep(0.95)
    assert low <= fresh_dev.jwks_requests <= high


@pytest.mark.parametrize(("mode", "result"), [("garbage", "invalid"), ("down", "network_error")])
async def test_failed_refresh_keeps_last_good_keys(
    fresh_dev: DevIssuer, mode: str, result: str
) -> None:
    """A garbage or dropped response counts a failure and keeps the keys in use."""
    fresh_dev.jwks_max_age = None
    config = config_for(fresh_dev, refresh_interval_seconds=0.1,
                        min_refresh_interval_seconds=0.1)
    async with running(config) as auth:
        fresh_dev.set_mode(mode)
        await asyncio.sleep(0.5)
        state = auth.issuer_states()[fresh_dev.url]
        assert state["fetch_counts"].get(result, 0) >= 2
        assert state["keys_loaded"] == 1 and state["usable"]
        await auth.verify(fresh_dev.mint({"sub": "alice"}))


async def test_keys_expire_after_max_stale(fresh_dev: DevIssuer, clock: FakeClock) -> None:
    """No good fetch for longer than ``max_stale_seconds``: KEYS_UNAVAILABLE (503), naming the
    issuer; a later good fetch recovers."""
    config = config_for(fresh_dev, max_stale_seconds=100, unknown_kid_refetch_seconds=10,
                        **QUIET)
    async with running(config, clock=clock) as auth:
        fresh_dev.set_mode("down")
        clock.advance(101)
        error = await refused(auth, fresh_dev.mint({"sub": "a"}), Reason.KEYS_UNAVAILABLE)
        assert error.status == 503
        assert fresh_dev.url in error.message
        assert "network_error" in error.message
        fresh_dev.set_mode("ok")
        await refused(auth, fresh_dev.mint({"sub": "b"}), Reason.KEYS_UNAVAILABLE)  # limited
        clock.advance(10)
        assert (await auth.verify(fresh_dev.mint({"sub": "c"}))).subject == "c"


async def test_slow_issuer_hits_the_total_deadline_and_verify_stays_fast(
    fresh_dev: DevIssuer,
) -> None:
    """A JWKS trickling one byte at a time is cut at ``fetch_timeout_seconds`` (a per-read
    timeout would wait forever), and tokens with known keys verify meanwhile in milliseconds."""
    config = config_for(fresh_dev, fetch_timeout_seconds=0.4, **QUIET)
    tokens = [fresh_dev.mint({"sub": f"user{i}"}) for i in range(20)]
    async with running(config) as auth:
        fresh_dev.set_mode("slow")
        store = auth.stores[fresh_dev.url]
        started = time.perf_counter()
        refresh = asyncio.create_task(store.refresh())
        await asyncio.sleep(0.05)
        for token in tokens:
            t0 = time.perf_counter()
            await auth.verify(token)
            assert time.perf_counter() - t0 < 0.05
        assert await refresh is False
        assert time.perf_counter() - started < 1.0
        assert store.fetch_counts["timeout"] == 1
        assert store.usable()


async def test_endless_body_is_cut_at_the_byte_cap(fresh_dev: DevIssuer) -> None:
    """An endless chunked JWKS is aborted at ``max_fetch_bytes``, fast."""
    config = config_for(fresh_dev, max_fetch_bytes=200_000, **QUIET)
    async with running(config) as auth:
        fresh_dev.set_mode("huge")
        store = auth.stores[fresh_dev.url]
        started = time.perf_counter()
        assert await store.refresh() is False
        assert time.perf_counter() - started < 2.0
        assert store.fetch_counts["too_large"] == 1


async def test_jwks_larger_than_the_cap_is_refused(fresh_dev: DevIssuer) -> None:
    """A JWK Set over ``max_fetch_bytes`` (by Content-Length) is not loaded."""
    async with running(config_for(fresh_dev, max_fetch_bytes=300, **QUIET), ready=False) as auth:
        assert not await auth.wait_ready(0.5)
        assert auth.issuer_states()[fresh_dev.url]["fetch_counts"] == {"too_large": 1}


async def test_issuer_down_at_start_is_not_ready_then_recovers(fresh_dev: DevIssuer) -> None:
    """Down at start: ``start`` does not raise, not ready, KEYS_UNAVAILABLE; retried in the
    background until the issuer is back."""
    fresh_dev.set_mode("down")
    config = config_for(fresh_dev, refresh_interval_seconds=0.2,
                        min_refresh_interval_seconds=0.05, unknown_kid_refetch_seconds=60)
    async with running(config, ready=False) as auth:
        assert not await auth.wait_ready(0.3)
        error = await refused(auth, fresh_dev.mint({"sub": "a"}), Reason.KEYS_UNAVAILABLE)
        assert "no JWK Set loaded yet" in error.message
        fresh_dev.set_mode("ok")
        assert await auth.wait_ready(2.0)
        await auth.verify(fresh_dev.mint({"sub": "a"}))


async def test_unreachable_issuer_is_keys_unavailable() -> None:
    """Nothing listening on the issuer's port: not ready, KEYS_UNAVAILABLE (503)."""
    url = f"http://127.0.0.1:{free_port()}"
    with DevIssuer(issuer=url) as other:  # only to mint tokens naming that issuer
        config = IssuerConfig(url, allow_insecure_http=True, **QUIET)
        async with running(config, ready=False) as auth:
            assert not await auth.wait_ready(0.3)
            error = await refused(auth, other.mint({"sub": "a"}), Reason.KEYS_UNAVAILABLE)
            assert error.status == 503


async def test_rotation_is_picked_up_by_unknown_kid_refetch(fresh_dev: DevIssuer) -> None:
    """After a rotation, the first token with the new kid triggers one refetch; concurrent
    tokens share it; nothing fails."""
    async with running(config_for(fresh_dev, **QUIET)) as auth:
        await auth.verify(fresh_dev.mint({"sub": "before"}))
        fresh_dev.rotate()
        tokens = [fresh_dev.mint({"sub": f"after{i}"}) for i in range(50)]
        results = await asyncio.gather(*(auth.verify(t) for t in tokens))
    assert [r.subject for r in results] == [f"after{i}" for i in range(50)]
    assert fresh_dev.jwks_requests == 2


async def test_continuous_traffic_through_rotation_has_zero_failures(
    fresh_dev: DevIssuer,
) -> None:
    """Tokens minted with whatever key is current verify before, during and after rotations."""
    async with running(config_for(fresh_dev, unknown_kid_refetch_seconds=0.0, **QUIET)) as auth:
        for i in range(60):
            if i % 20 == 10:
                fresh_dev.rotate(drop_old=(i > 20))
            await auth.verify(fresh_dev.mint({"sub": f"u{i}"}))


async def test_removed_key_is_refused_after_refresh_even_if_cached(fresh_dev: DevIssuer) -> None:
    """A token verified (and cached) with a key the issuer later drops is refused after the
    next refresh: the cache entry is invalidated with the key."""
    async with running(config_for(fresh_dev, **QUIET)) as auth:
        old = fresh_dev.mint({"sub": "alice"})
        await auth.verify(old)
        await auth.verify(old)
        assert auth.stats.hits == 1
        fresh_dev.rotate(drop_old=True)
        assert await auth.stores[fresh_dev.url].refresh()
        await refused(auth, old, Reason.UNKNOWN_KEY)
        await auth.verify(fresh_dev.mint({"sub": "alice"}))


async def test_added_key_does_not_flush_cached_tokens(fresh_dev: DevIssuer) -> None:
    """A refresh that only adds a key keeps cached tokens cached."""
    async with running(config_for(fresh_dev, **QUIET)) as auth:
        token = fresh_dev.mint({"sub": "alice"})
        await auth.verify(token)
        fresh_dev.rotate()
        assert await auth.stores[fresh_dev.url].refresh()
        await auth.verify(token)
        assert (auth.stats.hits, auth.stats.misses) == (1, 1)


def random_kid_token(issuer: str, exp: int) -> str:
    """A structurally valid token with a random kid (the signature is never reached)."""
    header = b64url(json.dumps({"alg": "RS256", "kid": secrets.token_hex(16)}).encode())
    body = b64url(json.dumps({"iss": issuer, "sub": "x", "aud": "temporal",
                              "exp": exp}).encode())
    return f"{header}.{body}.{b64url(b'sig' * 86)}"


async def test_random_kid_flood_costs_one_fetch_per_interval(fresh_dev: DevIssuer) -> None:
    """10,000 tokens with random kids: all UNKNOWN_KEY, at most one JWKS fetch per
    ``unknown_kid_refetch_seconds`` (concurrent misses share one fetch)."""
    interval = 0.5
    exp = int(time.time()) + 600
    tokens = [random_kid_token(fresh_dev.url, exp) for _ in range(10_000)]
    async with running(config_for(fresh_dev, unknown_kid_refetch_seconds=interval,
                                  **QUIET)) as auth:
        before = fresh_dev.jwks_requests
        started = time.perf_counter()
        outcomes = await asyncio.gather(*(auth.verify(t) for t in tokens[:5000]),
                                        return_exceptions=True)
        for token in tokens[5000:]:
            await refused(auth, token, Reason.UNKNOWN_KEY)
            await asyncio.sleep(0)
        await asyncio.sleep(interval)
        await refused(auth, random_kid_token(fresh_dev.url, exp), Reason.UNKNOWN_KEY)
        elapsed = time.perf_counter() - started
    assert all(getattr(o, "reason", None) == Reason.UNKNOWN_KEY for o in outcomes)
    fetches = fresh_dev.jwks_requests - before
    assert 1 <= fetches <= int(elapsed / interval) + 1
    assert auth.negative_cache_size == 0  # UNKNOWN_KEY is never negatively cached


# -- a key replaced under the same kid ----------------------------------------------------------

def replace_key_keeping_kid(dev: DevIssuer) -> None:
    """The issuer swaps the current key's material but publishes it under the same kid."""
    key = dev.key()
    key.private = generate_key(key.alg)


def forged(token: str, n: int) -> str:
    """``token`` with its payload changed (``sub`` = ``forged<n>``): same kid, bad signature."""
    head, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = f"forged{n}"
    return f"{head}.{b64url(json.dumps(claims).encode())}.{signature}"


async def test_key_replaced_under_same_kid_is_accepted_after_one_refetch(
    fresh_dev: DevIssuer,
) -> None:
    """The issuer replaces its key keeping the kid: the first token signed by the new key
    fails with the loaded key, triggers exactly one refetch and then verifies; tokens of the old
    key and forged tokens stay BAD_SIGNATURE without another fetch."""
    async with running(config_for(fresh_dev, unknown_kid_refetch_seconds=60, **QUIET)) as auth:
        old = fresh_dev.mint({"sub": "before"})
        assert (await auth.verify(old)).subject == "before"
        kid = fresh_dev.current_kid
        fetches = fresh_dev.jwks_requests
        replace_key_keeping_kid(fresh_dev)
        assert fresh_dev.current_kid == kid
        new = fresh_dev.mint({"sub": "after"})
        assert (await auth.verify(new)).subject == "after"
        assert fresh_dev.jwks_requests == fetches + 1
        await refused(auth, old, Reason.BAD_SIGNATURE)  # cached, but its key is gone
        for i in range(20):
            await refused(auth, forged(new, i), Reason.BAD_SIGNATURE)
        assert (await auth.verify(new)).subject == "after"
    assert fresh_dev.jwks_requests == fetches + 1


async def test_forged_signature_flood_with_known_kid_costs_one_fetch_per_interval(
    fresh_dev: DevIssuer,
) -> None:
    """4,000 distinct forged tokens naming the issuer's real kid: all BAD_SIGNATURE, at most
    one JWKS fetch per ``unknown_kid_refetch_seconds`` (concurrent ones share it)."""
    interval = 0.5
    async with running(config_for(fresh_dev, unknown_kid_refetch_seconds=interval,
                                  **QUIET)) as auth:
        genuine = fresh_dev.mint({"sub": "alice"})
        tokens = [forged(genuine, i) for i in range(4000)]
        before = fresh_dev.jwks_requests
        started = time.perf_counter()
        outcomes = await asyncio.gather(*(auth.verify(t) for t in tokens[:2000]),
                                        return_exceptions=True)
        for token in tokens[2000:]:
            await refused(auth, token, Reason.BAD_SIGNATURE)
            await asyncio.sleep(0)
        await asyncio.sleep(interval)
        await refused(auth, forged(genuine, -1), Reason.BAD_SIGNATURE)
        elapsed = time.perf_counter() - started
        assert (await auth.verify(genuine)).subject == "alice"
    assert all(getattr(o, "reason", None) == Reason.BAD_SIGNATURE for o in outcomes)
    fetches = fresh_dev.jwks_requests - before
    assert 1 <= fetches <= int(elapsed / interval) + 1


async def test_unknown_kids_and_bad_signatures_share_one_refetch_limit(
    fresh_dev: DevIssuer,
) -> None:
    """An unknown-kid refetch spends the interval for bad signatures too, and the other way
    round: mixing both floods still costs one fetch per interval."""
    async with running(config_for(fresh_dev, unknown_kid_refetch_seconds=60, **QUIET)) as auth:
        exp = int(time.time()) + 600
        genuine = fresh_dev.mint({"sub": "alice"})
        before = fresh_dev.jwks_requests
        await refused(auth, random_kid_token(fresh_dev.url, exp), Reason.UNKNOWN_KEY)
        assert fresh_dev.jwks_requests == before + 1
        for i in range(50):
            await refused(auth, forged(genuine, i), Reason.BAD_SIGNATURE)
            await refused(auth, random_kid_token(fresh_dev.url, exp), Reason.UNKNOWN_KEY)
        assert fresh_dev.jwks_requests == before + 1
    async with running(config_for(fresh_dev, unknown_kid_refetch_seconds=60, **QUIET)) as auth:
        before = fresh_dev.jwks_requests
        await refused(auth, forged(genuine, 0), Reason.BAD_SIGNATURE)
        assert fresh_dev.jwks_requests == before + 1  # the bad signature spent the interval
        await refused(auth, random_kid_token(fresh_dev.url, exp), Reason.UNKNOWN_KEY)
        assert fresh_dev.jwks_requests == before + 1


async def test_refused_token_is_not_pinned_across_a_key_change(fresh_dev: DevIssuer) -> None:
    """A token of the replaced key refused while refetches are rate-limited (BAD_SIGNATURE,
    negatively cached) verifies as soon as a refresh loads the new key, not after the
    negative cache's TTL."""
    config = config_for(fresh_dev, unknown_kid_refetch_seconds=60, **QUIET)
    async with running(config, negative_cache_seconds=3600.0) as auth:
        exp = int(time.time()) + 600
        await refused(auth, random_kid_token(fresh_dev.url, exp), Reason.UNKNOWN_KEY)  # limiter
        replace_key_keeping_kid(fresh_dev)
        new = fresh_dev.mint({"sub": "after"})
        await refused(auth, new, Reason.BAD_SIGNATURE)  # no refetch allowed yet
        await refused(auth, new, Reason.BAD_SIGNATURE)
        assert auth.stats.negative_hits == 1
        assert await auth.stores[fresh_dev.url].refresh()  # the background refresh
        assert (await auth.verify(new)).subject == "after"
        bad = forged(new, 1)
        await refused(auth, bad, Reason.BAD_SIGNATURE)
        await refused(auth, bad, Reason.BAD_SIGNATURE)
        assert auth.stats.negative_hits == 2  # unchanged keys: the refusal is remembered


async def test_id_token_with_replaced_key_never_refetches(fresh_dev: DevIssuer) -> None:
    """``verify_extras`` (display only) uses loaded keys only: a bad signature there is
    BAD_SIGNATURE at once, with no fetch."""
    async with running(config_for(fresh_dev, unknown_kid_refetch_seconds=0.0, **QUIET)) as auth:
        before = fresh_dev.jwks_requests
        replace_key_keeping_kid(fresh_dev)
        id_token = fresh_dev.mint({"sub": "u", "aud": "temporal-ui"})
        with pytest.raises(AuthError) as caught:
            await auth.verify_extras(id_token)
        assert caught.value.reason == Reason.BAD_SIGNATURE
        assert fresh_dev.jwks_requests == before
