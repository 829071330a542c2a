"""Fixtures for the deployment tests: a real Temporal dev server and the development issuer on
free loopback ports (shared by this directory's end-to-end tests), and where their logs go."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from devkit.components import IssuerInstance, TemporalInstance

# helmchart.py and pki.py sit beside the tests
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def deploy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Logs, rendered configs and certificates of this session's deployment tests."""
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="session")
def deploy_temporal(temporal: TemporalInstance) -> TemporalInstance:
    """Temporal dev server with namespaces default, payroll, other (the session's)."""
    return temporal


@pytest.fixture(scope="session")
def deploy_issuer(issuer: IssuerInstance) -> IssuerInstance:
    """The development OIDC issuer (the session's)."""
    return issuer
