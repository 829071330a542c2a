"""Fixtures for the reliability suite: real Envoy (envoy/envoy.yaml), the real authz server
(its audit log is what the authorizer decided on), the dev issuer, a recording upstream that
decodes what reached it, and a real Temporal dev server for the cases that matter.

Tests that use the ``transport`` fixture (the split-view suite, and the fault cases where the
transport matters) run twice, as in ``tests/e2e/conftest.py``: with Envoy's gRPC ext_authz
protocol (``envoy/envoy.yaml``) and with its HTTP protocol (``envoy/envoy-http.yaml``), the
authz server serving that transport. The parameter is session-scoped, so pytest runs all
gRPC-mode tests, then all HTTP-mode ones, starting each module's stack once per transport.

Figures (case counts, soak numbers, fuzz executions) are written as JSON to
``EXTAUTHZ_REPORT_DIR`` (default: this session's temp dir) and printed at the end of the run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # the `fuzz` package (the decoding oracle) is at the root
    sys.path.insert(0, str(REPO))

from devkit.components import IssuerInstance, TemporalInstance  # noqa: E402

_REPORTS: list[Path] = []

TRANSPORTS = ("grpc", "http")


@pytest.fixture(scope="session", params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Envoy's ext_authz protocol for this run of the test: grpc or http."""
    value: str = request.param
    return value


@pytest.fixture(scope="session")
def rel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this session's logs and rendered configs go."""
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="session")
def report_dir(rel_dir: Path) -> Path:
    """Where the figures go (``EXTAUTHZ_REPORT_DIR`` or the session's temp dir)."""
    out = Path(os.environ.get("EXTAUTHZ_REPORT_DIR", str(rel_dir / "report")))
    out.mkdir(parents=True, exist_ok=True)
    _REPORTS.append(out)
    return out


@pytest.fixture(scope="session")
def rel_issuer(issuer: IssuerInstance) -> IssuerInstance:
    """The development OIDC issuer (the session's shared one)."""
    return issuer


@pytest.fixture(scope="session")
def rel_temporal(temporal: TemporalInstance) -> TemporalInstance:
    """A Temporal dev server with namespaces default, payroll, other (the session's)."""
    return temporal


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures this run wrote."""
    for directory in dict.fromkeys(_REPORTS):
        files = sorted(directory.glob("*.json"))
        if not files:
            continue
        terminalreporter.section(f"reliability figures ({directory})")
        for path in files:
            data = json.loads(path.read_text())
            summary = data.get("summary", data)
            terminalreporter.write_line(f"{path.stem}: {json.dumps(summary, sort_keys=True)}")

