"""Fixtures for auth integration tests: the real dev issuer over loopback, a fake clock."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from support_auth import FakeClock

from devkit.issuer import DevIssuer


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at the current time."""
    return FakeClock(time.time())


@pytest.fixture
def fresh_dev() -> Iterator[DevIssuer]:
    """A private RS256 dev issuer a test may rotate, break or slow down."""
    with DevIssuer(slow_seconds=30.0) as issuer:
        yield issuer


