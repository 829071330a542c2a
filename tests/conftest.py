"""Shared pytest setup. ``tests/`` is on ``sys.path`` (pytest's rootdir conftest insertion), so
test modules import helpers as ``support.*``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.components import IssuerInstance, TemporalInstance, start_issuer, start_temporal

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository checkout."""
    return REPO


# One Temporal dev server and one dev issuer for the whole session: every suite that needs them
# (e2e, reliability, deploy) shares them instead of starting its own.


@pytest.fixture(scope="session")
def temporal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalInstance]:
    """Temporal dev server with namespaces default, payroll, other."""
    instance = start_temporal(tmp_path_factory.mktemp("temporal"))
    try:
        yield instance
    finally:
        instance.proc.stop()


@pytest.fixture(scope="session")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IssuerInstance]:
    """The development OIDC issuer."""
    instance = start_issuer(tmp_path_factory.mktemp("issuer"))
    try:
        yield instance
    finally:
        instance.proc.stop()
