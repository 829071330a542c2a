"""Fixtures for the decision-core unit tests.

Wire helpers (varints, tags, gRPC frames) live in the test modules that need them: they are a few
lines each and a test reads better with them in view.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from extauthz import methods

REPO = Path(__file__).resolve().parents[2]
# Temporal facts vendored as test data; tests/data/README.md names their sources.
REFERENCE_DIR = REPO / "tests" / "data" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The folder of Temporal reference facts (``tests/data/reference``)."""
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def method_table() -> dict[str, methods.MethodEntry]:
    """The method table, built once."""
    return dict(methods.table())
