"""``extauthz serve --workers N``: N server processes on one port, like gunicorn workers.

A single grpc.aio process tops out at one core (~3.4k Checks/s here), so the supervisor
(this module, the process ``serve`` runs in) starts N workers, each a full server
(``python -m extauthz.server.workers worker``) binding the same ``listen`` address with
``grpc.so_reuseport`` = 1: the kernel spreads connections across them.

The supervisor:

- creates a private ``PROMETHEUS_MULTIPROC_DIR`` before any worker starts, serves ``/metrics``
  on ``metrics_listen`` from it (the counters of all workers summed, gauges aggregated as each
  declares), and deletes it on exit;
- restarts a worker that dies (marking its gauges dead), but gives up and stops everything when
  workers keep dying right after they start;
- forwards SIGTERM/SIGINT to every worker, waits up to ``shutdown_grace_seconds`` + 5 s for
  them to drain, then SIGKILLs the rest.

The default N is the number of CPUs the process may use: the cgroup CPU quota (v2
``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``) rounded down (at least 1), capped
by the CPU affinity mask.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import structlog

from extauthz.config import Settings, parse_host_port
from extauthz.obs import metrics as m

log = structlog.get_logger("extauthz.workers")

CRASH_WINDOW_SECONDS = 5.0  # a worker dying sooner than this after its start is a crash
MAX_QUICK_CRASHES = 5
WORKER_INDEX_ENV = "EXTAUTHZ_WORKER_INDEX"


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup quota, or None when unlimited / unknown."""
    try:  # cgroup v2
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def default_workers(root: Path = Path("/sys/fs/cgroup")) -> int:
    """One worker per CPU the process may use (quota rounded down, at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, max(1, math.floor(limit)))
    return max(1, cpus)


def resolve_workers(requested: int | None, settings: Settings) -> int:
    """``--workers`` if given, else the ``workers`` key, else (0) the CPU-quota default."""
    if requested is not None and requested > 0:
        return requested
    if settings.workers > 0:
        return settings.workers
    return default_workers()


class Supervisor:
    """Starts, watches and stops the workers; serves their summed metrics."""

    def __init__(self, settings: Settings, workers: int, config_path: str | None = None,
                 *, python: str = sys.executable):
        self.settings = settings
        self.n = workers
        self.config_path = config_path
        self.python = python
        self.procs: dict[int, subprocess.Popen[bytes]] = {}  # index -> process
        self.started_at: dict[int, float] = {}
        self.metrics_port = 0
        self._stopping = False
        self._quick_crashes = 0
        self._dir = tempfile.mkdtemp(prefix="extauthz-metrics-")
        self._http: object | None = None

    # -- workers -----------------------------------------------------------------------------

    def _argv(self) -> list[str]:
        argv = [self.python, "-m", "extauthz.server.workers", "worker"]
        if self.config_path is not None:
            argv += ["--config", self.config_path]
        return argv

    def _spawn(self, index: int) -> None:
        env = dict(os.environ)
        env[m.MULTIPROC_ENV] = self._dir
        env[WORKER_INDEX_ENV] = str(index)
        self.procs[index] = subprocess.Popen(self._argv(), env=env, stdin=subprocess.DEVNULL)
        self.started_at[index] = time.monotonic()
        log.info("worker.started", index=index, pid=self.procs[index].pid)

    def start(self) -> None:
        """Serve the metrics and start every worker."""
        if self.settings.metrics_listen:
            host, port = parse_host_port(self.settings.metrics_listen, "metrics_listen",
                                         self.settings.source)
            self._http, self.metrics_port = m.serve_metrics(
                host, port, m.multiprocess_registry(self._dir))
            log.info("metrics.listening", address=f"{host}:{self.metrics_port}",
                     workers=self.n)
        for index in range(self.n):
            self._spawn(index)

    def poll(self) -> bool:
        """Restart workers that died; False when they crash-loop (the supervisor gives up)."""
        for index, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None or self._stopping:
                continue
            m.mark_worker_dead(proc.pid, self._dir)
            quick = time.monotonic() - self.started_at[index] < CRASH_WINDOW_SECONDS
            self._quick_crashes = self._quick_crashes + 1 if quick else 0
            log.error("worker.exited", index=index, pid=proc.pid, status=code,
                      quick_crashes=self._quick_crashes)
            if self._quick_crashes >= MAX_QUICK_CRASHES:
                return False
            self._spawn(index)
        return True

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to every running worker."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    def stop(self) -> None:
        """SIGTERM every worker, wait for them to drain, SIGKILL stragglers, clean up."""
        self._stopping = True
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds + 5.0
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker.kill", pid=proc.pid)
                proc.kill()
                proc.wait()
        if self._http is not None:
            self._http.shutdown()  # type: ignore[attr-defined]
            self._http.server_close()  # type: ignore[attr-defined]
            self._http = None
        shutil.rmtree(self._dir, ignore_errors=True)
        log.info("workers.stopped")

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT (or a crash loop); returns the exit code."""
        stop_signal: list[int] = []

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            stop_signal.append(signum)

        def on_hangup(_signum: int, _frame: FrameType | None) -> None:
            self.signal_all(signal.SIGHUP)  # each worker reloads its policy

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
        code = 0
        try:
            self.start()
            while not stop_signal:
                if not self.poll():
                    log.error("workers.crash_loop", workers=self.n)
                    code = 1
                    break
                time.sleep(0.2)
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code


def supervise(settings: Settings, workers: int, config_path: str | None) -> int:
    """Run ``workers`` server processes on ``settings.listen``; returns the exit code."""
    return Supervisor(settings, workers, config_path).run()


def _worker_main(argv: Sequence[str]) -> int:
    import argparse

    from extauthz import config
    from extauthz.obs.logs import configure_logging
    from extauthz.server.app import serve

    parser = argparse.ArgumentParser(prog="extauthz-worker")
    parser.add_argument("role", choices=["worker"])
    parser.add_argument("--config")
    args = parser.parse_args(argv)
    settings = config.load(args.config)
    configure_logging(settings.log_level, settings.log_format)
    structlog.contextvars.bind_contextvars(worker=int(os.environ.get(WORKER_INDEX_ENV, "0")))
    # the supervisor forwards SIGTERM; a Ctrl-C on the terminal reaches the whole group
    return serve(settings, worker=True)


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
