"""Bounded in-memory caches of verification results, keyed by the SHA-256 of the token.

Not ``aiocache``: its ``SimpleMemoryCache`` has no entry bound, schedules one event-loop timer
per entry for the TTL, and every call is a coroutine (several µs). A hit here is a dict lookup
and a float compare. Entries carry their own deadline; a hit past it is a miss.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(slots=True)
class CacheStats:
    """Counters for metrics."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expired: int = 0


class BoundedTTLCache(Generic[V]):
    """An LRU map of ``bytes -> V`` with a per-entry deadline and a maximum entry count."""

    __slots__ = ("_data", "max_entries", "stats")

    def __init__(self, max_entries: int):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._data: OrderedDict[bytes, tuple[float, V]] = OrderedDict()
        self.max_entries = max_entries
        self.stats = CacheStats()

    def get(self, key: bytes, now: float) -> V | None:
        """The value if present and ``now`` is before its deadline."""
        item = self._data.get(key)
        if item is None:
            self.stats.misses += 1
            return None
        if now >= item[0]:
            del self._data[key]
            self.stats.expired += 1
            self.stats.misses += 1
            return None
        self._data.move_to_end(key)
        self.stats.hits += 1
        return item[1]

    def put(self, key: bytes, value: V, deadline: float, now: float) -> None:
        """Store ``value`` until ``deadline`` (ignored when already past), evicting the LRU."""
        if deadline <= now:
            return
        data = self._data
        data[key] = (deadline, value)
        data.move_to_end(key)
        while len(data) > self.max_entries:
            data.popitem(last=False)
            self.stats.evictions += 1

    def discard(self, key: bytes) -> None:
        """Remove ``key`` if present."""
        self._data.pop(key, None)

    def clear(self) -> None:
        """Remove everything."""
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
