"""Rate-limited log lines: one per key per interval, the dropped ones counted."""

from __future__ import annotations

import pytest

from extauthz.obs.loglimit import LogLimiter


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_event_logs_then_repeats_are_dropped_within_the_interval() -> None:
    """1,000 events in one interval: one line."""
    clock = Clock()
    limiter = LogLimiter(10.0, clock=clock)
    admitted = [limiter.admit("bad_signature") for _ in range(1000)]
    assert admitted[0] == 0 and admitted[1:] == [None] * 999
    assert limiter.pending("bad_signature") == 999


def test_next_line_after_the_interval_reports_the_dropped_count() -> None:
    """The first line after the interval carries how many were dropped, then counts anew."""
    clock = Clock()
    limiter = LogLimiter(10.0, clock=clock)
    limiter.admit("r")
    for _ in range(41):
        clock.now += 0.2
        assert limiter.admit("r") is None  # 8.2 s after the line: still dropped
    clock.now += 1.8  # exactly 10 s after the line
    assert limiter.admit("r") == 41
    assert limiter.admit("r") is None
    clock.now += 10.0
    assert limiter.admit("r") == 1
    clock.now += 10.0
    assert limiter.admit("r") == 0


def test_each_key_has_its_own_window() -> None:
    """A flood of one reason does not silence another."""
    limiter = LogLimiter(10.0, clock=Clock())
    assert limiter.admit("token_expired") == 0
    assert limiter.admit("token_expired") is None
    assert limiter.admit("malformed_authorization") == 0
    assert limiter.admit("error") == 0


def test_keys_are_bounded() -> None:
    """Attacker-chosen keys cannot grow memory: the oldest is forgotten (and logs again)."""
    limiter = LogLimiter(10.0, clock=Clock(), max_keys=3)
    for key in "abcd":
        assert limiter.admit(key) == 0
    assert limiter.admit("d") is None and limiter.admit("b") is None
    assert limiter.admit("a") == 0  # forgotten when "d" came: logs at once
    assert len(limiter._windows) == 3


def test_zero_interval_logs_everything() -> None:
    """``interval_seconds: 0`` turns the limit off."""
    limiter = LogLimiter(0.0, clock=Clock())
    assert [limiter.admit("r") for _ in range(3)] == [0, 0, 0]


@pytest.mark.parametrize(("interval", "max_keys"), [(-1.0, 10), (1.0, 0)])
def test_bad_arguments_are_refused(interval: float, max_keys: int) -> None:
    """A negative interval or no room for keys is a programming error."""
    with pytest.raises(ValueError, match="must be"):
        LogLimiter(interval, max_keys=max_keys)
