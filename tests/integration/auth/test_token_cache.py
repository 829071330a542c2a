"""The verified-token cache and the negative cache, through ``Authenticator.verify``."""

from __future__ import annotations

import asyncio

import pytest
from support_auth import FakeClock, config_for, refused, running

from devkit.issuer import DevIssuer
from extauthz.auth.types import AuthError
from extauthz.model import Reason

QUIET = {"refresh_interval_seconds": 3600.0, "min_refresh_interval_seconds": 3600.0,
         "max_refresh_interval_seconds": 3600.0}


async def test_second_verify_is_a_cache_hit(dev: DevIssuer) -> None:
    """One miss verifies; repeats are hits returning the same result."""
    token = dev.mint({"sub": "alice"})
    async with running(config_for(dev, **QUIET)) as auth:
        first = await auth.verify(token)
        again = [await auth.verify(token) for _ in range(3)]
    assert all(v is first for v in again)
    assert (auth.stats.hits, auth.stats.misses) == (3, 1)


async def test_expired_token_is_never_served_from_cache(dev: DevIssuer, clock: FakeClock) -> None:
    """Past ``exp`` a cached token is re-verified, and refused."""
    token = dev.mint({"sub": "alice"}, ttl=30, now=clock.now)
    async with running(config_for(dev, leeway_seconds=0, **QUIET), clock=clock) as auth:
        await auth.verify(token)
        clock.advance(29)
        await auth.verify(token)
        assert auth.stats.hits == 1
        clock.advance(2)
        await refused(auth, token, Reason.TOKEN_EXPIRED)
        assert (auth.stats.hits, auth.stats.misses) == (1, 2)


async def test_cache_entry_lives_at_most_max_cache_seconds(
    dev: DevIssuer, clock: FakeClock
) -> None:
    """A long-lived token is re-verified after ``max_cache_seconds``."""
    token = dev.mint({"sub": "alice"}, ttl=86400, now=clock.now)
    async with running(config_for(dev, **QUIET), clock=clock, max_cache_seconds=60) as auth:
        await auth.verify(token)
        clock.advance(61)
        await auth.verify(token)
        assert (auth.stats.hits, auth.stats.misses) == (0, 2)


async def test_cache_is_bounded(dev: DevIssuer) -> None:
    """Distinct tokens beyond ``cache_max_entries`` evict the least recently used."""
    tokens = [dev.mint({"sub": f"user{i}"}) for i in range(20)]
    async with running(config_for(dev, **QUIET), cache_max_entries=5) as auth:
        for token in tokens:
            await auth.verify(token)
        assert auth.cache_size == 5
        await auth.verify(tokens[-1])
        await auth.verify(tokens[0])
    assert (auth.stats.hits, auth.stats.misses) == (1, 21)


async def test_refused_token_is_negatively_cached(dev: DevIssuer, clock: FakeClock) -> None:
    """A refused token is refused from the negative cache for a few seconds, then rechecked."""
    token = dev.mint({"sub": "alice", "aud": "billing"}, now=clock.now)
    async with running(config_for(dev, **QUIET), clock=clock,
                       negative_cache_seconds=5) as auth:
        for _ in range(3):
            await refused(auth, token, Reason.AUDIENCE_MISMATCH)
        assert (auth.stats.misses, auth.stats.negative_hits) == (1, 2)
        clock.advance(6)
        await refused(auth, token, Reason.AUDIENCE_MISMATCH)
        assert auth.stats.misses == 2


async def test_keys_unavailable_is_not_negatively_cached(fresh_dev: DevIssuer) -> None:
    """KEYS_UNAVAILABLE can change with the next fetch: never remembered."""
    fresh_dev.set_mode("down")
    token = fresh_dev.mint({"sub": "alice"})
    config = config_for(fresh_dev, unknown_kid_refetch_seconds=0.0, **QUIET)
    async with running(config, ready=False) as auth:
        await refused(auth, token, Reason.KEYS_UNAVAILABLE)
        await refused(auth, token, Reason.KEYS_UNAVAILABLE)
        assert auth.stats.negative_hits == 0
        fresh_dev.set_mode("ok")
        assert (await auth.verify(token)).subject == "alice"


async def test_unknown_key_is_not_negatively_cached(fresh_dev: DevIssuer) -> None:
    """A token whose key is published a moment later verifies on the next refetch."""
    kid = fresh_dev.add_key(publish=False)
    token = fresh_dev.mint({"sub": "alice"}, kid=kid)
    config = config_for(fresh_dev, unknown_kid_refetch_seconds=0.2, **QUIET)
    async with running(config) as auth:
        await refused(auth, token, Reason.UNKNOWN_KEY)
        fresh_dev.key(kid).published = True
        await refused(auth, token, Reason.UNKNOWN_KEY)  # refetch rate-limited
        await asyncio.sleep(0.25)
        assert (await auth.verify(token)).subject == "alice"
        assert auth.stats.negative_hits == 0


async def test_negative_cache_is_bounded_separately(dev: DevIssuer) -> None:
    """A flood of bad tokens cannot evict good ones from the positive cache."""
    good = dev.mint({"sub": "alice"})
    bad = [dev.mint({"sub": f"x{i}", "aud": "nope"}) for i in range(10)]
    async with running(config_for(dev, **QUIET), cache_max_entries=2,
                       negative_cache_max_entries=3) as auth:
        await auth.verify(good)
        for token in bad:
            await refused(auth, token, Reason.AUDIENCE_MISMATCH)
        assert auth.negative_cache_size == 3
        await auth.verify(good)
        assert auth.stats.hits == 1


async def test_id_token_extras_return_display_fields_only(dev: DevIssuer) -> None:
    """The Web UI's ID token (other audience, typ JWT) yields only email/name fields."""
    id_token = dev.mint({"sub": "alice", "aud": "temporal-ui", "email": "a@example.com",
                         "name": "Alice", "permissions": ["temporal-system:admin"]})
    async with running(config_for(dev, required_typ="at+jwt", **QUIET)) as auth:
        extras = await auth.verify_extras(id_token)
        assert dict(extras) == {"email": "a@example.com", "name": "Alice"}
        await refused(auth, id_token, Reason.UNSUPPORTED_TOKEN_TYPE)


async def test_id_token_extras_are_still_verified(dev: DevIssuer) -> None:
    """A forged or expired ID token yields an error, not fields."""
    async with running(config_for(dev, **QUIET)) as auth:
        head, body, _ = dev.mint({"sub": "alice", "email": "a@example.com"}).split(".")
        with pytest.raises(AuthError) as caught:
            await auth.verify_extras(f"{head}.{body}.")
        assert caught.value.reason == Reason.BAD_SIGNATURE
        with pytest.raises(AuthError) as caught:
            await auth.verify_extras(dev.mint({"sub": "alice", "exp": 1000}))
        assert caught.value.reason == Reason.TOKEN_EXPIRED
