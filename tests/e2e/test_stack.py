"""The local stack (`./dev stack` → `python -m devkit.stack`) starts, checks itself, prints
its examples and stops every component cleanly on Ctrl-C."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from devkit.ports import LOOPBACK, free_ports, port_open
from devkit.procs import devkit_env

READY = "Ctrl-C stops everything."


def _ports() -> dict[str, int]:
    names = ("envoy", "temporal", "temporal-http", "internal", "authz", "authz-http", "admin",
             "issuer")
    return dict(zip(names, free_ports(len(names)), strict=True))


def _argv(state: Path, ports: dict[str, int], transport: str = "grpc") -> list[str]:
    argv = [sys.executable, "-m", "devkit.stack", "--state-dir", str(state), "--in-memory",
            "--transport", transport]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    return argv


def _wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = log.read_text(errors="replace")
        if text in out:
            return out
        if proc.poll() is not None:
            raise AssertionError(f"stack exited {proc.returncode} before {text!r}:\n{out}")
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} within {timeout}s:\n{log.read_text(errors='replace')}")


def test_stack_runs_checks_itself_and_stops_cleanly(tmp_path: Path, transport: str) -> None:
    """The stack (either transport) passes its allowed/denied self-check, prints copy-paste
    examples pointing at its Envoy, and on SIGINT stops every component and exits 0."""
    ports = _ports()
    log = tmp_path / "stack.out"
    with log.open("wb") as out:
        proc = subprocess.Popen(_argv(tmp_path / "state", ports, transport), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=devkit_env())
    try:
        text = _wait_for(log, READY, proc, timeout=90)
        assert "self-check: allowed call passed, denied calls refused" in text
        assert f"{LOOPBACK}:{ports['envoy']}" in text
        assert "--api-key" in text and "--permissions default:read" in text
        assert f"extauthz ({transport})" in text
        assert (tmp_path / "state" / "stack.json").is_file()
        assert (tmp_path / "state" / "envoy.yaml").is_file()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        for port in ports.values():
            assert not port_open(LOOPBACK, port), f"port {port} still open after stop"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stack_refuses_a_taken_port(tmp_path: Path) -> None:
    """If one of its ports is taken, the stack says which and exits 1 without starting."""
    ports = _ports()
    with socket.socket() as blocker:
        blocker.bind((LOOPBACK, ports["envoy"]))
        blocker.listen()
        result = subprocess.run(_argv(tmp_path / "state", ports), capture_output=True,
                                text=True, timeout=60, check=False, env=devkit_env())
    assert result.returncode == 1
    assert f"{LOOPBACK}:{ports['envoy']} (Envoy)" in result.stderr
