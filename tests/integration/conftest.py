"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devkit.issuer import DevIssuer


@pytest.fixture(scope="module")
def dev() -> Iterator[DevIssuer]:
    """A shared RS256 dev issuer in this process, minting tokens directly (tests must not
    change its keys or mode; ``tests/integration/auth``'s ``fresh_dev`` is the private one)."""
    with DevIssuer() as issuer:
        yield issuer
