"""Fixtures for end-to-end tests: real Envoy, Temporal dev server, dev issuer and authz server,
each a subprocess on free loopback ports, torn down at the end of the session.

Logs and rendered configs of a run are under pytest's basetemp (``pytest --basetemp DIR`` to
keep them somewhere known); a component that fails to start raises with the tail of its log.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.components import (
    EnvoyInstance,
    ExtauthzInstance,
    IssuerInstance,
    TemporalInstance,
    start_envoy,
    start_extauthz,
    start_issuer,
    start_temporal,
)
from support.fakes import RecordingAuthz, RecordingUpstream


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this session's logs and rendered configs go."""
    return tmp_path_factory.mktemp("e2e")


# ---- real stack ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def temporal(e2e_dir: Path) -> Iterator[TemporalInstance]:
    """Temporal dev server with namespaces default, payroll, other."""
    instance = start_temporal(e2e_dir)
    try:
        yield instance
    finally:
        instance.proc.stop()


@pytest.fixture(scope="session")
def issuer(e2e_dir: Path) -> Iterator[IssuerInstance]:
    """The development OIDC issuer."""
    instance = start_issuer(e2e_dir)
    try:
        yield instance
    finally:
        instance.proc.stop()


@pytest.fixture(scope="session")
def extauthz(e2e_dir: Path, issuer: IssuerInstance) -> Iterator[ExtauthzInstance]:
    """The authz server, trusting the dev issuer."""
    instance = start_extauthz(e2e_dir, issuer.url)
    try:
        yield instance
    finally:
        instance.proc.stop()


@pytest.fixture(scope="session")
def envoy(
    e2e_dir: Path, temporal: TemporalInstance, extauthz: ExtauthzInstance
) -> Iterator[EnvoyInstance]:
    """Envoy (from envoy/envoy.yaml) → extauthz → Temporal."""
    instance = start_envoy(e2e_dir, authz=extauthz.address, upstream=temporal.address)
    try:
        yield instance
    finally:
        instance.stop()


# ---- Envoy against fakes ------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorder() -> Iterator[RecordingAuthz]:
    """A recording authorizer that denies everything unless a test changes its decision."""
    server = RecordingAuthz().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    """A recording upstream that accepts any method."""
    server = RecordingUpstream().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def fake_envoy(
    e2e_dir: Path, recorder: RecordingAuthz, upstream: RecordingUpstream
) -> Iterator[EnvoyInstance]:
    """Envoy (from envoy/envoy.yaml) → recording authz → recording upstream."""
    instance = start_envoy(e2e_dir, authz=recorder.address, upstream=upstream.address)
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def fakes(
    recorder: RecordingAuthz, upstream: RecordingUpstream, fake_envoy: EnvoyInstance
) -> Iterator[tuple[RecordingAuthz, RecordingUpstream, EnvoyInstance]]:
    """The fake trio, with recordings cleared and the authorizer back to deny-all."""
    from support.fakes import Decision

    recorder.decision = Decision()
    recorder.clear()
    upstream.clear()
    yield recorder, upstream, fake_envoy
    recorder.decision = Decision()
