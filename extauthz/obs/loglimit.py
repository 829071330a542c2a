"""Rate limiting of repetitive log events. Pure: no I/O; the clock is injected.

A client that sends the same bad value on every call (say a malformed
``authorization-extras`` header) must not write one log line per call. ``LogLimiter.admit``
lets through the first event of a key (e.g. a reason code), then at most one per
``interval_seconds``; the events dropped in between are counted and reported with the next
line that gets through (``suppressed=N``), so nothing is lost from the count.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_INTERVAL_SECONDS = 10.0
DEFAULT_MAX_KEYS = 256


class LogLimiter:
    """At most one log line per key per ``interval_seconds``, counting what was dropped.

    Args:
        interval_seconds: the shortest time between two lines of one key.
        clock: monotonic seconds (tests pass a fake).
        max_keys: keys remembered at most; past it the oldest is forgotten (its pending count
            is lost and its next event logs at once), so attacker-chosen keys cannot grow
            memory.
    """

    __slots__ = ("_clock", "_interval", "_max_keys", "_windows")

    def __init__(
        self,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = DEFAULT_MAX_KEYS,
    ):
        if interval_seconds < 0:
            raise ValueError("interval_seconds must be 0 or more")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._interval = interval_seconds
        self._clock = clock
        self._max_keys = max_keys
        # key -> [time of the last line, events dropped since]
        self._windows: dict[str, list[float]] = {}

    def admit(self, key: str) -> int | None:
        """Whether to log an event of ``key`` now.

        Returns:
            ``None``: drop the line (it is counted). A number: log the line, with that many
            events of this key dropped since the previous line (0 for the first).
        """
        now = self._clock()
        window = self._windows.get(key)
        if window is not None and now - window[0] < self._interval:
            window[1] += 1
            return None
        suppressed = 0 if window is None else int(window[1])
        if window is None:
            if len(self._windows) >= self._max_keys:
                del self._windows[next(iter(self._windows))]
            self._windows[key] = [now, 0.0]
        else:
            window[0], window[1] = now, 0.0
        return suppressed

    def pending(self, key: str) -> int:
        """Events of ``key`` dropped since its last line (not yet reported)."""
        window = self._windows.get(key)
        return 0 if window is None else int(window[1])
