"""An authz server under test started from a config file (short JWKS intervals, one worker,
JSON logs) and read through its health and its structured log: for the identity e2e tests
(``tests/e2e/test_identity.py``, ``tests/e2e/test_interop_oidc_provider.py``)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devkit import ports, procs
from devkit.components import AUDIENCE
from devkit.ports import free_addresses
from devkit.procs import ManagedProcess, StartupError


@dataclass
class Authz:
    """An authz server started from a config file."""

    proc: ManagedProcess
    address: tuple[str, int]  # where Envoy sends checks
    health_target: str  # gRPC health (the Check port, or health_listen in HTTP mode)
    transport: str
    log_path: Path

    def health(self) -> str:
        """SERVING / NOT_SERVING of the Check service, as Envoy's health checker asks it."""
        with grpc.insecure_channel(self.health_target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="envoy.service.auth.v3.Authorization"),
                timeout=2.0)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def http_health(self) -> int:
        """The HTTP transport's ``/healthz`` status code."""
        return procs.http_get(f"http://{self.address[0]}:{self.address[1]}/healthz")[0]

    def events(self, name: str) -> list[dict[str, Any]]:
        """The server's structured log events called ``name``."""
        out: list[dict[str, Any]] = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == name:
                    out.append(event)
        return out


def start_authz(workdir: Path, name: str, issuer_url: str, transport: str, *,
                wait_serving: bool = True, server: dict[str, Any] | None = None,
                **issuer: Any) -> Authz:
    """``extauthz serve --config`` trusting ``issuer_url`` with the given issuer settings
    (``server``: top-level keys on top of the defaults); ready when SERVING, or with
    ``wait_serving=False`` once it listens (NOT_SERVING while the issuer is down)."""
    listen, http_address, health_address = free_addresses(3)
    config: dict[str, Any] = {
        "listen": f"{listen[0]}:{listen[1]}", "workers": 1, "log_format": "json",
        "audit_allow_sample_rate": 0.0, "shutdown_delay_seconds": 0,
        "issuers": [{"issuer": issuer_url, "audiences": [AUDIENCE],
                     "allow_insecure_http": True, **issuer}],
    }
    config.update(server or {})
    address = health = listen
    if transport == "http":
        address, health = http_address, health_address
        config.update(transport="http", http_listen=f"{address[0]}:{address[1]}",
                      health_listen=f"{health[0]}:{health[1]}")
    path = workdir / f"{name}-{transport}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EXTAUTHZ_", "TEMPORAL_AUTH_"))}
    env["PYTHONUNBUFFERED"] = "1"
    log_path = workdir / f"{name}-{transport}.log"
    proc = ManagedProcess("extauthz", [sys.executable, "-m", "extauthz", "serve",
                                       "--config", str(path)], log_path=log_path, env=env)
    proc.start()
    authz = Authz(proc, address, f"{health[0]}:{health[1]}", transport, log_path)
    if wait_serving:
        proc.wait_ready(lambda: authz.health() == "SERVING", 30, "extauthz SERVING")
    else:
        proc.wait_ready(lambda: ports.port_open(*address) and ports.port_open(*health),
                        30, "extauthz listening")
    return authz


T = TypeVar("T")


def retry_port_clash(start: Callable[[], T], attempts: int = 3) -> T:
    """``start()`` again (new free ports) when the component lost its port between
    ``free_port()`` and its bind (another process took it meanwhile)."""
    for attempt in range(attempts):
        try:
            return start()
        except StartupError as exc:
            if "Address already in use" not in str(exc) and "cannot listen" not in str(exc):
                raise
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
