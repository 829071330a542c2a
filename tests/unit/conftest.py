"""Fixtures for the decision-core unit tests.

Wire helpers (varints, tags, gRPC frames) live in the test modules that need them: they are a few
lines each and a test reads better with them in view.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from extauthz import methods

REPO = Path(__file__).resolve().parents[2]
# CI checks ``shared`` out beside the repository; locally it is /work/shared.
REFERENCE_CANDIDATES = (REPO.parent / "shared" / "reference", Path("/work/shared/reference"))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The folder of Temporal reference facts (``../shared/reference`` beside the clone)."""
    for candidate in REFERENCE_CANDIDATES:
        if (candidate / "temporal-api-access.csv").is_file():
            return candidate
    pytest.fail(
        "Temporal reference data not found: expected temporal-api-access.csv in one of "
        + ", ".join(str(c) for c in REFERENCE_CANDIDATES)
        + " (check out `shared` beside the repository)"
    )


@pytest.fixture(scope="session")
def method_table() -> dict[str, methods.MethodEntry]:
    """The method table, built once."""
    return dict(methods.table())
