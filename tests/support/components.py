"""Real components for e2e tests: Envoy rendered from ``envoy/envoy.yaml``, the Temporal dev
server, the development issuer and the authz server, each on free loopback ports.

Fixtures in ``tests/e2e/conftest.py`` wrap these; tests that need a private instance (a stopped
authz server, a recorder behind Envoy) call them directly and stop them in ``finally``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from extauthz import envoyconfig, procs
from extauthz.procs import LOOPBACK, ManagedProcess, free_port

Address = tuple[str, int]
T = TypeVar("T")

_counter = itertools.count()

# Namespaces the e2e Temporal server creates (plus "default").
NAMESPACES = ("default", "payroll", "other")
AUDIENCE = "temporal"


def target(address: Address) -> str:
    """``host:port`` for a gRPC client."""
    return f"{address[0]}:{address[1]}"


@dataclass
class EnvoyInstance:
    """A running Envoy rendered from the canonical config."""

    proc: ManagedProcess
    listen: Address
    internal_listen: Address
    admin: Address
    config_path: Path

    @property
    def target(self) -> str:
        """The external (authorized) listener, for gRPC clients."""
        return target(self.listen)

    @property
    def internal_target(self) -> str:
        """The internal (unauthorized) listener."""
        return target(self.internal_listen)

    def stats(self) -> dict[str, int]:
        """Envoy's counters and gauges from the admin endpoint."""
        status, body = procs.http_get(
            f"http://{self.admin[0]}:{self.admin[1]}/stats?format=json"
        )
        assert status == 200, body
        out: dict[str, int] = {}
        for item in json.loads(body)["stats"]:
            if "value" in item:
                out[item["name"]] = int(item["value"])
        return out

    def stop(self) -> None:
        """Stop Envoy."""
        self.proc.stop()


_BIND_RACE = ("address already in use", "cannot listen", "cannot bind")
_BIND_ATTEMPTS = 3


def _retrying_bind_races(start: Callable[[], T]) -> T:
    """``free_port`` picks a port that another process may take before we bind it: start
    again on fresh ports when (and only when) the failure is that race."""
    for attempt in range(_BIND_ATTEMPTS):
        try:
            return start()
        except procs.StartupError as exc:
            text = str(exc).lower()
            if attempt == _BIND_ATTEMPTS - 1 or not any(r in text for r in _BIND_RACE):
                raise
    raise AssertionError("unreachable")


def start_envoy(
    workdir: Path,
    **kwargs: Any,
) -> EnvoyInstance:
    """Envoy on fresh free ports (see ``_start_envoy``), retried if a port was taken."""
    return _retrying_bind_races(lambda: _start_envoy(workdir, **kwargs))


def _start_envoy(
    workdir: Path,
    *,
    authz: Address,
    upstream: Address,
    authz_timeout: float | None = None,
    transport: str = "grpc",
    http_upstream: Address | None = None,
) -> EnvoyInstance:
    """Envoy from ``envoy/envoy.yaml`` (``transport="http"``: ``envoy/envoy-http.yaml``) with
    every address moved to a free loopback port; ``authz`` is the server's address for that
    transport, ``http_upstream`` the frontend's HTTP API (default: a free port, nothing there)."""
    n = next(_counter)
    listen = (LOOPBACK, free_port())
    internal = (LOOPBACK, free_port())
    admin = (LOOPBACK, free_port())
    text = envoyconfig.render(
        listen=listen,
        internal_listen=internal,
        admin=admin,
        authz=authz,
        upstream=upstream,
        authz_timeout=authz_timeout,
        transport=transport,
        http_upstream=http_upstream or (LOOPBACK, free_port()),
    )
    config_path = workdir / f"envoy-{n}-{transport}.yaml"
    proc = procs.start_envoy(
        text, config_path=config_path, log_path=workdir / f"envoy-{n}.log", admin=admin
    )
    return EnvoyInstance(proc, listen, internal, admin, config_path)


@dataclass
class TemporalInstance:
    """A running Temporal dev server (in memory)."""

    proc: ManagedProcess
    address: Address
    # its HTTP API (`--http-port`), directly
    http_address: Address | None = None

    @property
    def target(self) -> str:
        """The frontend, directly (no Envoy, no authz)."""
        return target(self.address)


def start_temporal(workdir: Path) -> TemporalInstance:
    """``temporal server start-dev`` with the e2e namespaces, gRPC and HTTP API on free ports."""
    address = (LOOPBACK, free_port())
    http_address = (LOOPBACK, free_port())
    proc = procs.start_temporal_dev_server(
        address[1], log_path=workdir / "temporal.log", namespaces=NAMESPACES,
        http_port=http_address[1],
    )
    return TemporalInstance(proc, address, http_address)


@dataclass
class IssuerInstance:
    """The development OIDC issuer."""

    proc: ManagedProcess
    url: str

    def mint(self, **claims: Any) -> str:
        """A signed token with ``claims`` (the issuer fills iss/aud/exp/iat defaults)."""
        return procs.mint_token(self.url, claims)


def start_issuer(workdir: Path) -> IssuerInstance:
    """The development issuer on a free port, with its state in ``workdir``."""
    port = free_port()
    state = workdir / "issuer-state"
    state.mkdir(parents=True, exist_ok=True)
    proc = procs.start_issuer(port, log_path=workdir / "issuer.log", state_dir=state)
    return IssuerInstance(proc, f"http://{LOOPBACK}:{port}")


@dataclass
class ExtauthzInstance:
    """A running ``python -m extauthz serve``."""

    proc: ManagedProcess
    # where Envoy sends checks: the gRPC listen, or in HTTP mode the http_listen
    address: Address
    transport: str = "grpc"
    # gRPC health (grpc.health.v1, incl. `extauthz.policy`): `listen`, or in HTTP mode the
    # plaintext health_listen
    health_address: Address | None = None

    @property
    def target(self) -> str:
        """Its gRPC health address (the Check address too in gRPC mode)."""
        return target(self.health_address or self.address)


def start_extauthz(workdir: Path, issuer_url: str, **kwargs: Any) -> ExtauthzInstance:
    """The authz server on fresh free ports (see ``_start_extauthz``), retried if a port was
    taken."""
    return _retrying_bind_races(lambda: _start_extauthz(workdir, issuer_url, **kwargs))


def _start_extauthz(
    workdir: Path,
    issuer_url: str,
    *,
    name: str = "extauthz",
    extra_env: Mapping[str, str] | None = None,
    transport: str = "grpc",
) -> ExtauthzInstance:
    """The authz server trusting ``issuer_url`` for audience ``temporal``, on free ports.
    ``transport="http"``: Envoy's HTTP protocol on ``address`` (gRPC Check off) and gRPC health
    on a plaintext ``health_listen``."""
    listen = (LOOPBACK, free_port())
    extra = dict(extra_env or {})
    health_url = None
    address = health = listen
    if transport == "http":
        address, health = (LOOPBACK, free_port()), (LOOPBACK, free_port())
        extra.update({"EXTAUTHZ_TRANSPORT": "http",
                      "EXTAUTHZ_HTTP_LISTEN": f"{address[0]}:{address[1]}",
                      "EXTAUTHZ_HEALTH_LISTEN": f"{health[0]}:{health[1]}"})
        health_url = f"http://{address[0]}:{address[1]}/healthz"
    env = procs.extauthz_env(listen=listen, issuer_url=issuer_url, audience=AUDIENCE, extra=extra)
    proc = procs.start_extauthz(env, listen=health, log_path=workdir / f"{name}-{transport}.log",
                                health_url=health_url)
    return ExtauthzInstance(proc, address, transport, health)


@contextlib.contextmanager
def policy_stack(workdir: Path, temporal: TemporalInstance, issuer: IssuerInstance, *,
                 policy: Path, transport: str, name: str = "extauthz-policy",
                 http_api: bool = False) -> Iterator[EnvoyInstance]:
    """Envoy → an authz server running ``policy`` (a file) → ``temporal``; both stopped after.
    With ``http_api``, Envoy also routes Temporal's HTTP API to the server's HTTP port."""
    authz = start_extauthz(workdir, issuer.url, name=name,
                           extra_env={"EXTAUTHZ_POLICY_FILE": str(policy)}, transport=transport)
    try:
        envoy = start_envoy(workdir, authz=authz.address, upstream=temporal.address,
                            transport=transport,
                            http_upstream=temporal.http_address if http_api else None)
        try:
            yield envoy
        finally:
            envoy.stop()
    finally:
        authz.proc.stop()
