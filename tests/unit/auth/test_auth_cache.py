"""The bounded TTL cache behind the token caches."""

from __future__ import annotations

import pytest

from extauthz.auth.cache import BoundedTTLCache


def test_hit_before_deadline_and_miss_after() -> None:
    """An entry is served strictly before its deadline."""
    cache: BoundedTTLCache[str] = BoundedTTLCache(10)
    cache.put(b"k", "v", deadline=100.0, now=0.0)
    assert cache.get(b"k", 99.9) == "v"
    assert cache.get(b"k", 100.0) is None
    assert len(cache) == 0
    assert (cache.stats.hits, cache.stats.misses, cache.stats.expired) == (1, 1, 1)


def test_past_deadline_is_not_stored() -> None:
    """Storing an already expired value is a no-op."""
    cache: BoundedTTLCache[str] = BoundedTTLCache(10)
    cache.put(b"k", "v", deadline=5.0, now=5.0)
    assert len(cache) == 0


def test_least_recently_used_is_evicted() -> None:
    """At the bound, the entry untouched the longest goes first."""
    cache: BoundedTTLCache[int] = BoundedTTLCache(2)
    cache.put(b"a", 1, 10, 0)
    cache.put(b"b", 2, 10, 0)
    assert cache.get(b"a", 1) == 1
    cache.put(b"c", 3, 10, 0)
    assert cache.get(b"b", 1) is None
    assert (cache.get(b"a", 1), cache.get(b"c", 1)) == (1, 3)
    assert cache.stats.evictions == 1


def test_bound_must_be_positive() -> None:
    """A zero-size cache is a configuration error."""
    with pytest.raises(ValueError, match="max_entries"):
        BoundedTTLCache(0)
