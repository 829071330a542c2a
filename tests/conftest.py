"""Shared pytest setup. ``tests/`` is on ``sys.path`` (pytest's rootdir conftest insertion), so
test modules import helpers as ``support.*``."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository checkout."""
    return REPO
