"""Shared pieces of the bench: statistics, CPU and memory accounting from /proc, core pinning,
subprocesses, the h2load load generator, and gRPC framing.

Nothing here is on the server's request path.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- statistics ---------------------------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and spread ((max - min) / median) of repeated measurements."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": None, "min": None, "max": None, "spread": None, "values": []}
    med = statistics.median(vals)
    return {
        "median": med,
        "min": min(vals),
        "max": max(vals),
        "spread": (max(vals) - min(vals)) / med if med else None,
        "values": vals,
    }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[index])


def latency_summary(latencies_s: Iterable[float]) -> dict[str, float | int]:
    """p50/p99/p99.9 in milliseconds of one run's per-call latencies."""
    vals = sorted(latencies_s)
    return {
        "n": len(vals),
        "p50_ms": percentile(vals, 0.50) * 1e3,
        "p99_ms": percentile(vals, 0.99) * 1e3,
        "p999_ms": percentile(vals, 0.999) * 1e3,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b


# -- /proc accounting ---------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    return text[text.rindex(")") + 2:].split()


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (all their threads)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            f = _stat_fields(pid)
            total += int(f[11]) + int(f[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid``."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (scanning /proc: no CONFIG_PROC_CHILDREN needed)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(_stat_fields(int(entry))[1]) == pid:
                    out.append(int(entry))
    return out


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def usable_cpus() -> list[int]:
    """CPUs this process may run on."""
    return sorted(os.sched_getaffinity(0))


# -- processes ----------------------------------------------------------------------------------




@dataclass
class Proc:
    """A subprocess in its own session, optionally pinned to CPUs, logging to a file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cpus: Sequence[int] | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False)

    def start(self) -> Proc:
        """Start it (pinning happens before exec, so every thread and child inherits it)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        cpus = set(self.cpus) if self.cpus else None

        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        self.popen = subprocess.Popen(
            list(self.argv), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, env=dict(self.env) if self.env is not None else None,
            start_new_session=True, preexec_fn=pin if cpus else None,  # noqa: PLW1509
        )
        return self

    @property
    def pid(self) -> int:
        """Its pid."""
        assert self.popen is not None
        return self.popen.pid

    def tree(self) -> list[int]:
        """Its pid and its direct children's (the workers of ``serve --workers N``)."""
        return [self.pid, *children(self.pid)]

    def check_alive(self) -> None:
        """Raise with the log tail if it exited."""
        if self.popen is not None and self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n"
                               f"{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The end of its log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def terminate(self) -> None:
        """SIGTERM its process group without waiting (``stop`` then waits)."""
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGTERM)

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM its process group, SIGKILL after ``grace``; returns the exit status."""
        proc = self.popen
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode


def python_module(module: str, *args: str) -> list[str]:
    """argv running ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


# -- the h2load load generator ------------------------------------------------------------------


def h2load_path() -> str | None:
    """h2load (Debian ``nghttp2-client``), if installed."""
    return shutil.which("h2load")


def h2load_version() -> str:
    """``h2load nghttp2/x.y.z`` or ``absent``."""
    path = h2load_path()
    if path is None:
        return "absent"
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "h2load"


@dataclass(frozen=True)
class LoadRequest:
    """One request the load generator replays: path, headers, body; HTTP/2 (h2c), or HTTP/1.1
    (``h1``: h2load ``--h1``, where ``streams`` > 1 would mean pipelining)."""

    path: str
    headers: Mapping[str, str]
    body: bytes
    h1: bool = False


@dataclass
class LoadResult:
    """What one load-generator run measured."""

    seconds: float
    succeeded: int
    failed: int
    latencies_s: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Succeeded requests per second."""
        return self.succeeded / self.seconds if self.seconds > 0 else 0.0


_FINISHED = re.compile(r"finished in ([\d.]+)(m?s)")
_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                       r"(\d+) failed, (\d+) errored, (\d+) timeout")


def run_h2load(
    address: tuple[str, int],
    request: LoadRequest,
    workdir: Path,
    *,
    seconds: float | None = None,
    requests: int | None = None,
    clients: int = 2,
    streams: int = 16,
    rps_total: float | None = None,
    cpus: Sequence[int] | None = None,
    want_latencies: bool = False,
) -> LoadResult:
    """Replay ``request`` against ``address`` with h2load for ``seconds`` (or ``requests``).

    ``rps_total`` spreads a fixed request rate over the clients (open loop); otherwise each
    client keeps ``streams`` requests in flight (closed loop, as fast as the server answers).
    """
    path = h2load_path()
    if path is None:
        raise RuntimeError("h2load not found: apt-get install -y nghttp2-client")
    workdir.mkdir(parents=True, exist_ok=True)
    body = workdir / f"body-{abs(hash(request.body))}.bin"
    if not body.exists():
        body.write_bytes(request.body)
    argv = [path, "-c", str(clients), "-t", "1", "-m", str(streams), "-d", str(body)]
    if request.h1:
        argv.append("--h1")
    for name, value in request.headers.items():
        argv += ["-H", f"{name}: {value}"]
    if rps_total is not None:
        argv += ["--rps", f"{max(1.0, rps_total / clients):.3f}"]
    log_file = workdir / "h2load-latency.tsv"
    if want_latencies:
        argv += ["--log-file", str(log_file)]
    if seconds is not None:
        argv += ["-D", f"{max(100, round(seconds * 1000))}ms"]
    else:
        argv += ["-n", str(requests or 1)]
    argv.append(f"http://{address[0]}:{address[1]}{request.path}")
    cpuset = set(cpus) if cpus else None

    def pin() -> None:
        if cpuset:
            os.sched_setaffinity(0, cpuset)

    timeout = (seconds or 0) + 60 + (requests or 0) / 500
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout,
                         preexec_fn=pin if cpuset else None)
    text = out.stdout + out.stderr
    finished, counts = _FINISHED.search(text), _REQUESTS.search(text)
    if out.returncode != 0 or finished is None or counts is None:
        raise RuntimeError(f"h2load failed ({out.returncode}):\n{text[-2000:]}")
    took = float(finished.group(1)) / (1000.0 if finished.group(2) == "ms" else 1.0)
    result = LoadResult(took, int(counts.group(4)),
                        int(counts.group(5)) + int(counts.group(6)) + int(counts.group(7)))
    if want_latencies and log_file.exists():
        for line in log_file.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1].startswith("2"):
                result.latencies_s.append(int(parts[2]) / 1e6)
        log_file.unlink()
    return result
