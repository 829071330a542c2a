"""The real components of a development stack, started as subprocesses on loopback: the Temporal
dev server, the development OIDC issuer, the authz server and Envoy. The one set of starters the
tests, the bench and the local stack (``devkit.stack``) use.

Each ``start_*`` takes a work directory (logs, state, rendered config), returns once the component
answers, and gives back an ``*Instance`` with its process and addresses. Addresses not given are
picked with ``devkit.ports.free_ports`` (all of one component's ports in one call), and a start on
picked ports is retried when another process took one of them first; a start on given addresses
is not. Tests stop private instances in ``finally``; the fixtures in ``tests/conftest.py`` and
``tests/e2e/conftest.py`` wrap these.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from devkit import envoyconfig, probes, tokens
from devkit.ports import Address, free_addresses, target
from devkit.procs import (
    ManagedProcess,
    StartupError,
    devkit_env,
    envoy_binary,
    find_binary,
    http_get,
)

T = TypeVar("T")

_counter = itertools.count()

# Namespaces the test Temporal server creates (plus "default").
NAMESPACES = ("default", "payroll", "other")
AUDIENCE = "temporal"

_BIND_RACE = ("address already in use", "cannot listen", "cannot bind")
_BIND_ATTEMPTS = 3


def _retrying_bind_races(start: Callable[[], T], *, retry: bool = True) -> T:
    """A free port may be taken by another process before the component binds it: start again
    on fresh ports when (and only when) the failure is that race."""
    attempts = _BIND_ATTEMPTS if retry else 1
    for attempt in range(attempts):
        try:
            return start()
        except StartupError as exc:
            text = str(exc).lower()
            if attempt == attempts - 1 or not any(r in text for r in _BIND_RACE):
                raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# Temporal
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TemporalInstance:
    """A running Temporal dev server."""

    proc: ManagedProcess
    address: Address
    # its HTTP API (`--http-port`), directly
    http_address: Address | None = None

    @property
    def target(self) -> str:
        """The frontend, directly (no Envoy, no authz)."""
        return target(self.address)


def start_temporal(
    workdir: Path,
    *,
    address: Address | None = None,
    http_address: Address | None = None,
    namespaces: Sequence[str] = NAMESPACES,
    log_path: Path | None = None,
    db_filename: Path | None = None,
    dynamic_config: Mapping[str, Any] | None = None,
    log_level: str = "warn",
    timeout: float = 60.0,
) -> TemporalInstance:
    """``temporal server start-dev --headless`` with ``namespaces`` (plus ``default``), gRPC and
    HTTP API on ``address``/``http_address`` (default: free ports); ready once every namespace
    answers DescribeNamespace and the HTTP API answers. In memory unless ``db_filename``."""
    if address is None or http_address is None:
        picked = free_addresses(2)
        address, http_address = address or picked[0], http_address or picked[1]
    host, port = address
    argv = [find_binary("temporal"), "server", "start-dev", "--headless", "--ip", host,
            "--port", str(port), "--log-level", log_level, "--http-port", str(http_address[1])]
    if db_filename is not None:
        argv += ["--db-filename", str(db_filename)]
    for namespace in namespaces:
        if namespace != "default":
            argv += ["--namespace", namespace]
    for key, value in (dynamic_config or {}).items():
        argv += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
    proc = ManagedProcess("temporal", argv,
                          log_path=log_path or workdir / "temporal.log").start()
    wanted = ["default", *(n for n in namespaces if n != "default")]
    proc.wait_ready(
        lambda: probes.temporal_namespaces_ready(target(address), wanted)
        and probes.http_api_ready(*http_address),
        timeout,
        f"Temporal dev server at {target(address)} with namespaces {wanted} and its HTTP API "
        f"on port {http_address[1]}",
    )
    return TemporalInstance(proc, address, http_address)


# --------------------------------------------------------------------------------------------
# the development issuer
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuerInstance:
    """The development OIDC issuer (``python -m devkit.issuer``)."""

    proc: ManagedProcess
    url: str

    def mint(self, **claims: Any) -> str:
        """A signed token with ``claims`` (the issuer fills iss/aud/exp/iat defaults)."""
        return tokens.mint(self.url, claims)


def start_issuer(
    workdir: Path,
    *,
    address: Address | None = None,
    state_dir: Path | None = None,
    log_path: Path | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
) -> IssuerInstance:
    """The development issuer on ``address`` (default: a free port), keeping its keys in
    ``state_dir`` (default: ``workdir/issuer-state``); ready when discovery is served."""
    host, port = address or free_addresses(1)[0]
    state = state_dir or workdir / "issuer-state"
    state.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "devkit.issuer", "--host", host, "--port", str(port),
            "--state-dir", str(state), *extra_args]
    proc = ManagedProcess("devissuer", argv, log_path=log_path or workdir / "issuer.log",
                          env=devkit_env()).start()
    url = f"http://{host}:{port}"
    discovery = f"{url}/.well-known/openid-configuration"
    proc.wait_ready(lambda: http_get(discovery)[0] == 200, timeout,
                    f"issuer discovery {discovery}")
    return IssuerInstance(proc, url)


# --------------------------------------------------------------------------------------------
# the authz server
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
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


def extauthz_env(
    *,
    listen: Address,
    issuer_url: str,
    audience: str = AUDIENCE,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment ``python -m extauthz serve`` reads, on top of this process's."""
    env = dict(os.environ)
    env.update({
        "EXTAUTHZ_LISTEN": f"{listen[0]}:{listen[1]}",
        "TEMPORAL_AUTH_PROVIDER_URL": issuer_url,
        "TEMPORAL_AUTH_CLIENT_ID": audience,
        "EXTAUTHZ_ALLOW_INSECURE_ISSUER": "1",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env


def start_extauthz(
    workdir: Path,
    issuer_url: str,
    *,
    name: str = "extauthz",
    extra_env: Mapping[str, str] | None = None,
    transport: str = "grpc",
    listen: Address | None = None,
    http_listen: Address | None = None,
    health_listen: Address | None = None,
    config_file: Path | None = None,
    log_path: Path | None = None,
    timeout: float = 30.0,
) -> ExtauthzInstance:
    """The authz server trusting ``issuer_url`` for audience ``temporal``; ready when its gRPC
    health says SERVING (once the issuer's keys are loaded). ``transport="http"``: Envoy's HTTP
    protocol on ``http_listen``, ready on its ``/healthz``, and gRPC health on a plaintext
    ``health_listen`` (unless ``extra_env`` sets ``EXTAUTHZ_HEALTH_LISTEN``). Addresses not
    given are free ports; only then is a start that lost a port race retried."""
    fixed = listen is not None

    def start() -> ExtauthzInstance:
        picked = iter(free_addresses(3))
        grpc_listen = listen or next(picked)
        extra = dict(extra_env or {})
        health_url = None
        address = health = grpc_listen
        if transport == "http":
            address, health = http_listen or next(picked), health_listen or next(picked)
            extra.update({"EXTAUTHZ_TRANSPORT": "http",
                          "EXTAUTHZ_HTTP_LISTEN": f"{address[0]}:{address[1]}"})
            extra.setdefault("EXTAUTHZ_HEALTH_LISTEN", f"{health[0]}:{health[1]}")
            health_url = f"http://{address[0]}:{address[1]}/healthz"
        env = extauthz_env(listen=grpc_listen, issuer_url=issuer_url, extra=extra)
        argv = [sys.executable, "-m", "extauthz", "serve"]
        if config_file is not None:
            argv += ["--config", str(config_file)]
        proc = ManagedProcess("extauthz", argv, env=env,
                              log_path=log_path or workdir / f"{name}-{transport}.log").start()
        if health_url is not None:
            url = health_url
            proc.wait_ready(lambda: http_get(url)[0] == 200, timeout,
                            f"extauthz health at {url}")
        else:
            proc.wait_ready(lambda: probes.grpc_health_serving(target(health)), timeout,
                            f"extauthz health at {target(health)}")
        return ExtauthzInstance(proc, address, transport, health)

    return _retrying_bind_races(start, retry=not fixed)


# --------------------------------------------------------------------------------------------
# Envoy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnvoyInstance:
    """A running Envoy."""

    proc: ManagedProcess
    listen: Address
    internal_listen: Address | None
    admin: Address
    config_path: Path

    @property
    def target(self) -> str:
        """The external (authorized) listener, for gRPC clients."""
        return target(self.listen)

    @property
    def internal_target(self) -> str:
        """The internal (unauthorized) listener."""
        if self.internal_listen is None:
            raise ValueError("this Envoy has no internal listener")
        return target(self.internal_listen)

    def stats(self) -> dict[str, int]:
        """Envoy's counters and gauges from the admin endpoint."""
        status, body = http_get(f"http://{self.admin[0]}:{self.admin[1]}/stats?format=json")
        if status != 200:
            raise RuntimeError(f"Envoy admin /stats answered {status}: {body!r}")
        out: dict[str, int] = {}
        for item in json.loads(body)["stats"]:
            if "value" in item:
                out[item["name"]] = int(item["value"])
        return out

    def stop(self) -> None:
        """Stop Envoy."""
        self.proc.stop()


def start_envoy(
    workdir: Path,
    *,
    authz: Address | None = None,
    upstream: Address | None = None,
    authz_timeout: float | None = None,
    transport: str = "grpc",
    http_upstream: Address | None = None,
    listen: Address | None = None,
    internal_listen: Address | None = None,
    admin: Address | None = None,
    config_text: str | None = None,
    config_path: Path | None = None,
    log_path: Path | None = None,
    timeout: float = 30.0,
) -> EnvoyInstance:
    """Envoy from ``envoy/envoy.yaml`` (``transport="http"``: ``envoy/envoy-http.yaml``) in front
    of ``authz`` (the server's address for that transport) and ``upstream``, with its listeners,
    admin and ``http_upstream`` (the frontend's HTTP API) on the given addresses or free ports.
    With ``config_text`` (a config rendered by the caller; ``admin`` and ``listen`` must be its
    addresses) that config runs as is. Ready when admin ``/ready`` says LIVE; hot restart is
    off, so parallel Envoys never share a base id or shared memory."""
    if config_text is not None:
        if admin is None or listen is None:
            raise ValueError("start_envoy(config_text=...) needs its admin and listen addresses")
        n = next(_counter)
        path = config_path or workdir / f"envoy-{n}.yaml"
        proc = _run_envoy(config_text, path, log_path or workdir / f"envoy-{n}.log", admin,
                          timeout)
        return EnvoyInstance(proc, listen, internal_listen, admin, path)
    if authz is None or upstream is None:
        raise ValueError("start_envoy needs authz and upstream (or a config_text)")
    fixed = listen is not None and admin is not None

    def start() -> EnvoyInstance:
        n = next(_counter)
        picked = iter(free_addresses(4))
        ext, internal = listen or next(picked), internal_listen or next(picked)
        adm = admin or next(picked)
        text = envoyconfig.render(
            listen=ext, internal_listen=internal, admin=adm, authz=authz, upstream=upstream,
            authz_timeout=authz_timeout, transport=transport,
            http_upstream=http_upstream or next(picked))
        path = config_path or workdir / f"envoy-{n}-{transport}.yaml"
        proc = _run_envoy(text, path, log_path or workdir / f"envoy-{n}.log", adm, timeout)
        return EnvoyInstance(proc, ext, internal, adm, path)

    return _retrying_bind_races(start, retry=not fixed)


def _run_envoy(config_text: str, config_path: Path, log_path: Path, admin: Address,
               timeout: float) -> ManagedProcess:
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(config_text, encoding="utf-8")
    argv = [envoy_binary(), "-c", str(config_path), "--disable-hot-restart", "--concurrency", "2",
            "-l", "warning", "--drain-time-s", "1"]
    proc = ManagedProcess("envoy", argv, log_path=log_path).start()
    url = f"http://{admin[0]}:{admin[1]}/ready"
    proc.wait_ready(lambda: http_get(url)[0] == 200, timeout, f"Envoy {url}")
    return proc


def validate_envoy_config(
    config_path: Path, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """``envoy --mode validate`` on a file; the completed process (check ``returncode``)."""
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config_path), "--disable-hot-restart",
         "-l", "warning"],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


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
