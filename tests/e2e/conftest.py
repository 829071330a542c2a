"""Fixtures for end-to-end tests: real Envoy, Temporal dev server, dev issuer and authz server,
each a subprocess on free loopback ports, torn down at the end of the session.

Every test that uses the ``transport`` fixture (through ``extauthz``, ``envoy``, ``recorder``,
``fake_envoy``, ``fakes``) runs twice: with Envoy's gRPC ext_authz protocol (``envoy/envoy.yaml``)
and with its HTTP protocol (``envoy/envoy-http.yaml``). The parameter is session-scoped, so
pytest runs all gRPC-mode tests, then all HTTP-mode ones, starting each stack once; Temporal and
the issuer are shared by both.

Logs and rendered configs of a run are under pytest's basetemp (``pytest --basetemp DIR`` to
keep them somewhere known); a component that fails to start raises with the tail of its log.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fakes import RecordingAuthz, RecordingHttpAuthz, RecordingUpstream

from devkit.components import (
    EnvoyInstance,
    ExtauthzInstance,
    IssuerInstance,
    TemporalInstance,
    start_envoy,
    start_extauthz,
)

TRANSPORTS = ("grpc", "http")


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this session's logs and rendered configs go."""
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session", params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Envoy's ext_authz protocol for this run of the test: grpc or http."""
    value: str = request.param
    return value


# ---- real stack ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def extauthz(e2e_dir: Path, issuer: IssuerInstance,
             transport: str) -> Iterator[ExtauthzInstance]:
    """The authz server, trusting the dev issuer, serving ``transport``."""
    instance = start_extauthz(e2e_dir, issuer.url, transport=transport)
    try:
        yield instance
    finally:
        instance.proc.stop()


@pytest.fixture(scope="session")
def envoy(
    e2e_dir: Path, temporal: TemporalInstance, extauthz: ExtauthzInstance
) -> Iterator[EnvoyInstance]:
    """Envoy (envoy/envoy.yaml or envoy/envoy-http.yaml) → extauthz → Temporal (its gRPC and
    its HTTP API port)."""
    instance = start_envoy(e2e_dir, authz=extauthz.address, upstream=temporal.address,
                           transport=extauthz.transport, http_upstream=temporal.http_address)
    try:
        yield instance
    finally:
        instance.stop()


# ---- Envoy against fakes ------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorder(transport: str) -> Iterator[RecordingAuthz | RecordingHttpAuthz]:
    """A recording authorizer (gRPC or HTTP protocol) that denies everything unless a test
    changes its decision."""
    server = RecordingAuthz().start() if transport == "grpc" else RecordingHttpAuthz().start()
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
    e2e_dir: Path, recorder: RecordingAuthz | RecordingHttpAuthz, upstream: RecordingUpstream,
    transport: str,
) -> Iterator[EnvoyInstance]:
    """Envoy (envoy/envoy.yaml or envoy-http.yaml) → recording authz → recording upstream."""
    instance = start_envoy(e2e_dir, authz=recorder.address, upstream=upstream.address,
                           transport=transport)
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def fakes(
    recorder: RecordingAuthz | RecordingHttpAuthz, upstream: RecordingUpstream,
    fake_envoy: EnvoyInstance,
) -> Iterator[tuple[RecordingAuthz | RecordingHttpAuthz, RecordingUpstream, EnvoyInstance]]:
    """The fake trio, with recordings cleared and the authorizer back to deny-all."""
    from support.fakes import Decision

    recorder.decision = Decision()
    recorder.clear()
    upstream.clear()
    yield recorder, upstream, fake_envoy
    recorder.decision = Decision()
