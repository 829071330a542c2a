"""Server throughput: h2load replays a recorded CheckRequest at extauthz and at the bare
always-allow baseline, in alternation, same load, same run.

Reports checks/s and server CPU µs per check (utime + stime of the server's processes from
/proc/<pid>/stat, over the measured window). Pinning on a machine with ≥ 2 usable CPUs: the
one-process servers run on the last CPU, h2load on the others; ``--workers 2`` runs unpinned
with h2load on every CPU too (on a 2-CPU machine the load generator then shares the workers'
cores, so that scaling figure understates what separate cores would give).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    LOOPBACK,
    LoadRequest,
    Proc,
    cpu_seconds,
    free_port,
    python_module,
    ratio,
    rss_bytes,
    run_h2load,
    summary,
    usable_cpus,
    wait_until,
)
from bench.transports import Address, Transport

CLIENTS, STREAMS = 2, 16  # like Envoy: a few connections, many streams each


@dataclass
class Server:
    """One authz server under load."""

    label: str
    kind: str  # baseline | extauthz
    workers: int
    proc: Proc
    address: Address
    cpus: Sequence[int] | None

    def pids(self) -> list[int]:
        """The supervisor and its workers (or the single process)."""
        return self.proc.tree()


def extauthz_env(transport: Transport, address: Address, issuer_url: str) -> dict[str, str]:
    """Environment for ``extauthz serve``: the issuer, metrics on, quiet logs, fast stop."""
    env = dict(os.environ)
    env.update({
        "TEMPORAL_AUTH_PROVIDER_URL": issuer_url,
        "TEMPORAL_AUTH_CLIENT_ID": "temporal",
        "EXTAUTHZ_ALLOW_INSECURE_ISSUER": "1",
        "EXTAUTHZ_METRICS_LISTEN": f"{LOOPBACK}:{free_port()}",
        "EXTAUTHZ_LOG_LEVEL": "warning",
        "EXTAUTHZ_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(transport.extauthz_env(address))
    return env


def start_server(transport: Transport, kind: str, workers: int, workdir: Path, issuer_url: str,
                 cpus: Sequence[int] | None, label: str | None = None) -> Server:
    """Start the baseline or extauthz (``serve --workers N``) and wait until it is SERVING."""
    address = (LOOPBACK, free_port())
    label = label or f"{kind} w{workers}"
    if kind == "baseline":
        argv, env = transport.baseline_argv(address), dict(os.environ)
    else:
        argv = python_module("extauthz", "serve", "--workers", str(workers))
        env = extauthz_env(transport, address, issuer_url)
    proc = Proc(label, argv, workdir / f"{label.replace(' ', '-')}.log", env, cpus).start()
    try:
        wait_until(lambda: transport.ready(address), 60, f"{label} on {address}",
                   alive=proc.check_alive)
        if kind == "extauthz" and workers > 1:
            wait_until(lambda: len(proc.tree()) > workers, 30, f"{label} workers")
    except BaseException:
        proc.stop()
        raise
    return Server(label, kind, workers, proc, address, cpus)


def plan_cpus() -> tuple[list[int] | None, list[int] | None, str]:
    """(server CPUs, load-generator CPUs, description) for the one-process comparisons."""
    cpus = usable_cpus()
    if len(cpus) < 2:
        return None, None, f"not pinned (only CPU {cpus} usable)"
    return [cpus[-1]], cpus[:-1], (
        f"one-process servers pinned to CPU {cpus[-1]}, h2load to CPU(s) {cpus[:-1]}; "
        f"--workers 2 and its h2load unpinned (CPUs {cpus})")


def measure(server: Server, request: LoadRequest, workdir: Path, seconds: float,
            load_cpus: Sequence[int] | None) -> dict[str, float]:
    """One h2load run against ``server``: checks/s and server CPU µs per check."""
    pids = server.pids()
    before = cpu_seconds(pids)
    result = run_h2load(server.address, request, workdir, seconds=seconds, clients=CLIENTS,
                        streams=STREAMS, cpus=load_cpus)
    used = cpu_seconds(pids) - before
    return {
        "checks_per_s": result.rate,
        "cpu_us_per_check": used / result.succeeded * 1e6 if result.succeeded else float("nan"),
        "server_cpu_util": used / result.seconds if result.seconds else float("nan"),
        "failed": result.failed,
    }


def run(transport: Transport, workdir: Path, issuer_url: str, token: str, *, seconds: float,
        repeats: int, scaling: bool = True) -> dict[str, Any]:
    """Baseline vs extauthz (1 worker) pinned, and extauthz 1 vs 2 workers, in alternation."""
    server_cpus, load_cpus, pinning = plan_cpus()
    request = transport.load_request(token)
    servers: list[tuple[Server, Sequence[int] | None]] = []
    try:
        base = start_server(transport, "baseline", 1, workdir, issuer_url, server_cpus)
        servers.append((base, load_cpus))
        ours = start_server(transport, "extauthz", 1, workdir, issuer_url, server_cpus)
        servers.append((ours, load_cpus))
        if scaling:
            # the 1-vs-2 comparison: both unpinned, h2load on every CPU
            servers.append((start_server(transport, "extauthz", 1, workdir, issuer_url, None,
                                         "extauthz w1 unpinned"), None))
            servers.append((start_server(transport, "extauthz", 2, workdir, issuer_url, None),
                            None))
        for server, _ in servers:
            if not transport.allowed(server.address, request):
                raise RuntimeError(f"{server.label} does not allow the recorded request")
            # warm-up: method table, metric children, token cache, connection set-up
            run_h2load(server.address, request, workdir, seconds=1, clients=CLIENTS,
                       streams=STREAMS, cpus=load_cpus)
        samples: dict[str, list[dict[str, float]]] = {s.label: [] for s, _ in servers}
        for _ in range(repeats):
            for server, cpus in servers:  # alternation: drift hits every variant alike
                samples[server.label].append(measure(server, request, workdir, seconds, cpus))
    finally:
        for server, _ in servers:  # they drain for shutdown_delay_seconds: in parallel
            server.proc.terminate()
        for server, _ in servers:
            server.proc.stop()
    rows: list[dict[str, Any]] = []
    for server, _ in servers:
        runs = samples[server.label]
        rows.append({
            "label": server.label, "kind": server.kind, "workers": server.workers,
            "pinned_cpus": list(server.cpus) if server.cpus else None,
            "checks_per_s": summary([r["checks_per_s"] for r in runs]),
            "cpu_us_per_check": summary([r["cpu_us_per_check"] for r in runs]),
            "server_cpu_util": summary([r["server_cpu_util"] for r in runs]),
            "failed": sum(int(r["failed"]) for r in runs),
        })
    by = {row["label"]: row for row in rows}

    def med(label: str, key: str) -> float | None:
        row = by.get(label)
        return row[key]["median"] if row else None

    ratios = {
        "cpu_per_check_extauthz_over_baseline": ratio(med("extauthz w1", "cpu_us_per_check"),
                                                      med("baseline w1", "cpu_us_per_check")),
        "cpu_us_per_check_extauthz_minus_baseline": (
            med("extauthz w1", "cpu_us_per_check") - med("baseline w1", "cpu_us_per_check")  # type: ignore[operator]
        ),
        "checks_per_s_extauthz_over_baseline": ratio(med("extauthz w1", "checks_per_s"),
                                                     med("baseline w1", "checks_per_s")),
        # per-pair ratios (same repeat, adjacent runs) are less noisy than ratios of medians
        "cpu_per_check_ratio_per_repeat": summary([
            o["cpu_us_per_check"] / b["cpu_us_per_check"]
            for o, b in zip(samples["extauthz w1"], samples["baseline w1"], strict=True)]),
    }
    if scaling:
        ratios["workers2_over_workers1_checks_per_s"] = ratio(
            med("extauthz w2", "checks_per_s"), med("extauthz w1 unpinned", "checks_per_s"))
    return {"pinning": pinning, "clients": CLIENTS, "streams_per_client": STREAMS,
            "seconds_per_run": seconds, "repeats": repeats, "rows": rows, "ratios": ratios}


def memory(transport: Transport, workdir: Path, issuer_url: str, token: str, *,
           workers: int, first: int, total: int) -> dict[str, Any]:
    """RSS per worker after ``first`` checks and after ``total`` checks."""
    request = transport.load_request(token)
    server = start_server(transport, "extauthz", workers, workdir, issuer_url, None)
    try:
        def worker_pids() -> list[int]:
            tree = server.pids()
            return tree[1:] if workers > 1 else tree[:1]

        run_h2load(server.address, request, workdir, requests=first, clients=4, streams=16)
        after_first = {pid: rss_bytes(pid) for pid in worker_pids()}
        done = first
        while done < total:  # in chunks, so a stuck run cannot hang the bench
            chunk = min(total - done, 250_000)
            result = run_h2load(server.address, request, workdir, requests=chunk, clients=4,
                                streams=16)
            done += result.succeeded + result.failed
        after_total = {pid: rss_bytes(pid) for pid in worker_pids()}
    finally:
        server.proc.stop()
    per_worker = [
        {"pid": pid, "rss_mib_after_first": after_first[pid] / 2**20,
         "rss_mib_after_total": after_total.get(pid, 0) / 2**20,
         "ratio": ratio(after_total.get(pid), after_first[pid])}
        for pid in after_first
    ]
    return {"workers": workers, "first_checks": first, "total_checks": done,
            "per_worker": per_worker,
            "max_ratio": max((w["ratio"] or 0.0) for w in per_worker) if per_worker else None}
