"""Server throughput: h2load replays the check real Envoy sends at extauthz and at the bare
always-allow baseline of each transport, all in alternation, same load, same run.

Per transport: gRPC mode replays the recorded CheckRequest over h2c (2 connections x 16
streams, like Envoy's few multiplexed connections); HTTP mode replays the recorded HTTP check
with ``h2load --h1`` over 32 keep-alive connections with one request in flight each (Envoy's
HTTP/1.1 pool does not pipeline; it opens a connection per concurrent check): the same 32
checks in flight. Reports checks/s and server CPU µs per check (utime + stime of the server's
processes from /proc/<pid>/stat, over the measured window), the ratios to the transport's bare
baseline, and HTTP ÷ gRPC. Pinning on a machine with ≥ 2 usable CPUs: the one-process servers
run on the last CPU, h2load on the others; ``--workers 2`` runs unpinned with h2load on every
CPU too (on a 2-CPU machine the load generator then shares the workers' cores, so that scaling
figure understates what separate cores would give).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    LoadRequest,
    Proc,
    cpu_seconds,
    python_module,
    ratio,
    rss_bytes,
    run_h2load,
    summary,
    usable_cpus,
)
from bench.transports import Address, Transport
from devkit.ports import LOOPBACK, free_port
from devkit.procs import wait_until

CLIENTS, STREAMS = 2, 16  # like Envoy: a few connections, many streams each


def shape(request: LoadRequest, clients: int = CLIENTS, streams: int = STREAMS) -> tuple[int, int]:
    """(connections, requests in flight per connection) for ``clients`` x ``streams`` in flight:
    HTTP/1.1 as Envoy's pool does it (a connection per request in flight, no pipelining)."""
    return (clients * streams, 1) if request.h1 else (clients, streams)


@dataclass
class Server:
    """One authz server under load."""

    label: str  # unique in the run (the transport's name first)
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


def spawn_server(transport: Transport, kind: str, workers: int, workdir: Path, issuer_url: str,
                 cpus: Sequence[int] | None, label: str | None = None) -> Server:
    """Start the baseline or extauthz (``serve --workers N``) without waiting for it."""
    address = (LOOPBACK, free_port())
    label = label or f"{transport.name} {kind} w{workers}"
    if kind == "baseline":
        argv, env = transport.baseline_argv(address), dict(os.environ)
    else:
        argv = python_module("extauthz", "serve", "--workers", str(workers))
        env = extauthz_env(transport, address, issuer_url)
    proc = Proc(label, argv, workdir / f"{label.replace(' ', '-')}.log", env, cpus).start()
    return Server(label, kind, workers, proc, address, cpus)


def wait_serving(server: Server, transport: Transport) -> None:
    """Wait until ``server`` answers its transport's health check (and its workers run)."""
    wait_until(lambda: transport.ready(server.address), 60, f"{server.label} on "
               f"{server.address}", alive=server.proc.check_alive)
    if server.kind == "extauthz" and server.workers > 1:
        wait_until(lambda: len(server.proc.tree()) > server.workers, 30,
                   f"{server.label} workers")


def start_server(transport: Transport, kind: str, workers: int, workdir: Path, issuer_url: str,
                 cpus: Sequence[int] | None, label: str | None = None) -> Server:
    """Start the baseline or extauthz (``serve --workers N``) and wait until it is SERVING."""
    server = spawn_server(transport, kind, workers, workdir, issuer_url, cpus, label)
    try:
        wait_serving(server, transport)
    except BaseException:
        server.proc.stop()
        raise
    return server


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
    clients, streams = shape(request)
    before = cpu_seconds(pids)
    result = run_h2load(server.address, request, workdir, seconds=seconds, clients=clients,
                        streams=streams, cpus=load_cpus)
    used = cpu_seconds(pids) - before
    return {
        "checks_per_s": result.rate,
        "cpu_us_per_check": used / result.succeeded * 1e6 if result.succeeded else float("nan"),
        "server_cpu_util": used / result.seconds if result.seconds else float("nan"),
        "failed": result.failed,
    }


@dataclass
class _Slot:
    """One server of the alternation, with what to replay at it and where h2load runs."""

    transport: Transport
    label: str  # within its transport: "baseline w1", "extauthz w1", …
    server: Server
    request: LoadRequest
    load_cpus: Sequence[int] | None


def run(transports: Sequence[Transport], workdir: Path, issuer_url: str, token: str, *,
        seconds: float, repeats: int, scaling: bool = True,
        warmup: float = 1.0) -> dict[str, Any]:
    """Per transport: baseline vs extauthz (1 worker) pinned, and extauthz 1 vs 2 workers; every
    server of every transport in one alternation (all started at once, then each warmed up
    for ``warmup`` seconds)."""
    server_cpus, load_cpus, pinning = plan_cpus()
    slots: list[_Slot] = []
    try:
        for t in transports:
            request = t.load_request(token)

            def add(label: str, kind: str, workers: int, cpus: Sequence[int] | None,
                    loadgen: Sequence[int] | None, t: Transport = t,
                    request: LoadRequest = request) -> None:
                srv = spawn_server(t, kind, workers, workdir, issuer_url, cpus,
                                   f"{t.name} {label}")
                slots.append(_Slot(t, label, srv, request, loadgen))

            add("baseline w1", "baseline", 1, server_cpus, load_cpus)
            add("extauthz w1", "extauthz", 1, server_cpus, load_cpus)
            if scaling:  # the 1-vs-2 comparison: both unpinned, h2load on every CPU
                add("extauthz w1 unpinned", "extauthz", 1, None, None)
                add("extauthz w2", "extauthz", 2, None, None)
        for slot in slots:
            wait_serving(slot.server, slot.transport)
        for slot in slots:
            if not slot.transport.allowed(slot.server.address, slot.request):
                raise RuntimeError(f"{slot.server.label} does not allow the recorded request")
            # warm-up: method table, metric children, token cache, connection set-up
            clients, streams = shape(slot.request)
            run_h2load(slot.server.address, slot.request, workdir, seconds=warmup,
                       clients=clients, streams=streams, cpus=slot.load_cpus)
        samples: dict[str, list[dict[str, float]]] = {s.server.label: [] for s in slots}
        for _ in range(repeats):
            for slot in slots:  # alternation: drift hits every variant and transport alike
                samples[slot.server.label].append(
                    measure(slot.server, slot.request, workdir, seconds, slot.load_cpus))
    finally:
        for slot in slots:  # they drain for shutdown_delay_seconds: in parallel
            slot.server.proc.terminate()
        for slot in slots:
            slot.server.proc.stop()
    by_transport: dict[str, Any] = {}
    for t in transports:
        mine = [s for s in slots if s.transport is t]
        by_transport[t.name] = _summarize(mine, samples, scaling)
    out: dict[str, Any] = {
        "pinning": pinning, "seconds_per_run": seconds, "repeats": repeats,
        "transports": [t.name for t in transports], "by_transport": by_transport,
    }
    if "grpc" in by_transport and "http" in by_transport:
        out["http_over_grpc"] = _http_over_grpc(by_transport["http"], by_transport["grpc"])
    return out


def _summarize(slots: list[_Slot],
               samples: dict[str, list[dict[str, float]]], scaling: bool) -> dict[str, Any]:
    """Rows and ratios of one transport."""
    rows: list[dict[str, Any]] = []
    for slot in slots:
        runs = samples[slot.server.label]
        rows.append({
            "label": slot.label, "kind": slot.server.kind, "workers": slot.server.workers,
            "pinned_cpus": list(slot.server.cpus) if slot.server.cpus else None,
            "checks_per_s": summary([r["checks_per_s"] for r in runs]),
            "cpu_us_per_check": summary([r["cpu_us_per_check"] for r in runs]),
            "server_cpu_util": summary([r["server_cpu_util"] for r in runs]),
            "failed": sum(int(r["failed"]) for r in runs),
        })
    by = {row["label"]: row for row in rows}
    raw = {slot.label: samples[slot.server.label] for slot in slots}

    def med(label: str, key: str) -> float | None:
        row = by.get(label)
        return row[key]["median"] if row else None

    ours, base = med("extauthz w1", "cpu_us_per_check"), med("baseline w1", "cpu_us_per_check")
    ratios = {
        "cpu_per_check_extauthz_over_baseline": ratio(ours, base),
        "cpu_us_per_check_extauthz_minus_baseline": (
            ours - base if ours is not None and base is not None else None),
        "checks_per_s_extauthz_over_baseline": ratio(med("extauthz w1", "checks_per_s"),
                                                     med("baseline w1", "checks_per_s")),
        # per-pair ratios (same repeat, adjacent runs) are less noisy than ratios of medians
        "cpu_per_check_ratio_per_repeat": summary([
            o["cpu_us_per_check"] / b["cpu_us_per_check"]
            for o, b in zip(raw["extauthz w1"], raw["baseline w1"], strict=True)]),
    }
    if scaling:
        ratios["workers2_over_workers1_checks_per_s"] = ratio(
            med("extauthz w2", "checks_per_s"), med("extauthz w1 unpinned", "checks_per_s"))
    request = slots[0].request
    clients, streams = shape(request)
    return {"load": {"protocol": "HTTP/1.1 (h2load --h1)" if request.h1 else "h2c",
                     "connections": clients, "in_flight_per_connection": streams},
            "rows": rows, "ratios": ratios}


def _http_over_grpc(http: dict[str, Any], grpc: dict[str, Any]) -> dict[str, Any]:
    """HTTP mode ÷ gRPC mode, row by row (medians of the same run)."""
    out: dict[str, Any] = {}
    g = {row["label"]: row for row in grpc["rows"]}
    for row in http["rows"]:
        other = g.get(row["label"])
        if other is None:
            continue
        key = row["label"].replace(" ", "_")
        out[f"{key}_cpu_per_check"] = ratio(row["cpu_us_per_check"]["median"],
                                            other["cpu_us_per_check"]["median"])
        out[f"{key}_checks_per_s"] = ratio(row["checks_per_s"]["median"],
                                           other["checks_per_s"]["median"])
    return out


def memory(transport: Transport, workdir: Path, issuer_url: str, token: str, *,
           workers: int, first: int, total: int) -> dict[str, Any]:
    """RSS per worker after ``first`` checks and after ``total`` checks."""
    request = transport.load_request(token)
    clients, streams = shape(request, 4, 16)
    server = start_server(transport, "extauthz", workers, workdir, issuer_url, None)
    try:
        def worker_pids() -> list[int]:
            tree = server.pids()
            return tree[1:] if workers > 1 else tree[:1]

        run_h2load(server.address, request, workdir, requests=first, clients=clients,
                   streams=streams)
        after_first = {pid: rss_bytes(pid) for pid in worker_pids()}
        done = first
        while done < total:  # in chunks, so a stuck run cannot hang the bench
            chunk = min(total - done, 250_000)
            result = run_h2load(server.address, request, workdir, requests=chunk,
                                clients=clients, streams=streams)
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
    return {"transport": transport.name, "workers": workers, "first_checks": first,
            "total_checks": done, "per_worker": per_worker,
            "max_ratio": max((w["ratio"] or 0.0) for w in per_worker) if per_worker else None}
