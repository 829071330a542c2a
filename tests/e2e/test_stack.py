"""The local stack (`./dev stack` → `python -m devkit.stack`) starts, checks itself, prints
its examples and stops every component cleanly on Ctrl-C."""

from __future__ import annotations

import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from devkit import stack
from devkit.ports import LOOPBACK, free_ports, port_open
from devkit.procs import devkit_env

REPO = Path(__file__).resolve().parents[2]

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
        _run_the_tour(_config(tmp_path / "state", ports, transport))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        for port in ports.values():
            assert not port_open(LOOPBACK, port), f"port {port} still open after stop"
    finally:
        if proc.poll() is None:
            # the stack stops its components (each runs in its own session, so killing the
            # stack alone would leave Temporal, Envoy, the issuer and extauthz running)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _config(state: Path, ports: dict[str, int], transport: str) -> stack.StackConfig:
    return stack.StackConfig(
        state_dir=state, transport=transport, envoy_port=ports["envoy"],
        temporal_port=ports["temporal"], temporal_http_port=ports["temporal-http"],
        internal_port=ports["internal"], authz_port=ports["authz"],
        authz_http_port=ports["authz-http"], admin_port=ports["admin"],
        issuer_port=ports["issuer"])


def _run_the_tour(config: stack.StackConfig) -> None:
    """Run the README's tour, as the banner prints it for this stack, from the repository root:
    each `temporal` step's outcome is the one its comment promises."""
    script = tour_script(stack.tour(config))
    result = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True,
                            timeout=180, check=False)
    steps = result.stdout.split("### step ")[1:]
    assert len(steps) == 5, result.stdout + result.stderr
    expected = ("allowed", "allowed", "PERMISSION_DENIED", "PERMISSION_DENIED",
                "UNAUTHENTICATED")
    for step, want in zip(steps, expected, strict=True):
        comment, _, rest = step.partition("\n")
        output, _, code = rest.rpartition("### rc=")
        assert comment.startswith(f"# {want}"), step
        if want == "allowed":
            assert code.strip() == "0", step
        else:
            assert code.strip() != "0", step
            # the CLI prints the denial's message: it starts with the reason code
            marker = "permission_denied: " if want == "PERMISSION_DENIED" else "missing_token: "
            assert marker in output, step
    assert "hello-1" in steps[1], steps[1]


def tour_script(tour: str) -> str:
    """The tour as a bash script that marks each `temporal` step with its comment and exit code."""
    lines: list[str] = []
    comment = ""
    command = ""
    for line in tour.splitlines():
        if line.startswith("# "):
            comment = line
            continue
        command += line.removesuffix("\\") + (" " if line.endswith("\\") else "")
        if line.endswith("\\"):
            continue
        if command.startswith("temporal "):
            lines += [f"echo {shlex.quote('### step ' + comment)}", f"{command} 2>&1",
                      'echo "### rc=$?"']
        elif command:
            lines.append(command)
        command = ""
    return "\n".join(lines)


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
