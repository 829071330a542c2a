"""The measurements and sizing tables of docs/measurements.md, generated from one bench run.

Run: ``.venv/bin/python -m bench.report [bench/results/latest.json] [--write]`` prints the
markdown (``--write`` replaces the generated block of ``docs/measurements.md``, between
``<!-- bench:begin -->`` and ``<!-- bench:end -->``). ``./dev bench --report`` runs the bench
and then this.

Sizing arithmetic: one worker process is one event loop, so at most one core; a core answers
``1e6 / CPU µs per check`` checks per second at 100 % (cached token); a check whose token is not
cached yet also pays the signature verification measured in-process (``handler`` part). The
table plans for ``UTILIZATION`` of a core per worker (headroom for bursts, key rotation and the
cache misses after it) and for workers of ``WORKERS_PER_POD`` per pod.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from bench.common import REPO

DOC = REPO / "docs" / "measurements.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
UTILIZATION = 0.6  # of a core per worker, planned
WORKERS_PER_POD = 2
RATES = (500, 2_000, 10_000, 50_000)  # Temporal requests/s through Envoy


def _med(stat: dict[str, Any] | None) -> float | None:
    return None if not stat else stat.get("median")


def _fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def per_core(out: dict[str, Any]) -> dict[str, float]:
    """Checks/s per core (100 % of one core), cached token, per transport; and cache misses."""
    rates: dict[str, float] = {}
    cached_cpu: dict[str, float] = {}
    for name, t in (out.get("server") or {}).get("by_transport", {}).items():
        rows = {row["label"]: row for row in t["rows"]}
        cpu = _med(rows.get("extauthz w1", {}).get("cpu_us_per_check"))
        if cpu:
            cached_cpu[name] = cpu
            rates[f"{name}, cached token"] = 1e6 / cpu
    handler = out.get("handler") or {}
    cases = {row["case"]: _med(row["us"]) for row in handler.get("rows", [])}
    cached = cases.get("allow, cached token (servicer + metrics + audit)") or next(
        (v for k, v in cases.items() if k.startswith("allow, cached token")), None)
    for alg in ("RS256", "ES256"):
        miss = cases.get(f"allow, cache miss {alg}")
        if miss is None or cached is None:
            continue
        for name, cpu in cached_cpu.items():
            rates[f"{name}, cache miss {alg}"] = 1e6 / (cpu + miss - cached)
    return rates


def sizing(out: dict[str, Any]) -> list[str]:
    """The sizing table: checks/s per core, and workers and pods per request rate."""
    rates = per_core(out)
    lines = [f"| transport, token | checks/s per core | workers at {int(UTILIZATION * 100)} % "
             + " | ".join(f"{r:,}/s" for r in RATES) + " |",
             "|---|---|" + "---|" * len(RATES)]
    for name, rate in rates.items():
        cells = []
        for r in RATES:
            workers = max(1, math.ceil(r / (rate * UTILIZATION)))
            pods = math.ceil(workers / WORKERS_PER_POD)
            cells.append(f"{workers} ({pods} pod{'s' if pods > 1 else ''})")
        lines.append(f"| {name} | {_fmt(rate)} | " + " | ".join(cells) + " |")
    return lines


def candidates(out: dict[str, Any]) -> list[str]:
    """The gRPC server candidates side by side."""
    c = out.get("candidates")
    if not c:
        return []
    lines = ["| gRPC server (h2c, 2 × 16 in flight, 1 process pinned) | CPU µs/check | "
             "× bare grpc.aio | checks/s |", "|---|---|---|---|"]
    for row in c["rows"]:
        over = _med(row.get("cpu_over_grpc_aio"))
        lines.append(f"| {row['candidate']} | {_fmt(_med(row['cpu_us_per_check']), 1)} | "
                     f"{_fmt(over, 2)} | {_fmt(_med(row['checks_per_s']))} |")
    return lines


def e2e(out: dict[str, Any]) -> list[str]:
    """DescribeNamespace through Envoy: calls/s per variant and the ratios of issue #16."""
    e = out.get("e2e")
    if not e or "DescribeNamespace" not in e["workloads"]:
        return []
    w = e["workloads"]["DescribeNamespace"]
    lines = ["| e2e DescribeNamespace (Envoy → Temporal dev server) | calls/s | added p50 at "
             "half of extauthz's max, ms |", "|---|---|---|"]
    for name, row in w["variants"].items():
        own = row.get("half_own") or {}
        none = (w["variants"].get("none") or {}).get("half_own") or {}
        added = (_med(own.get("p50_ms")) or 0) - (_med(none.get("p50_ms")) or 0) \
            if own and none and name != "none" else None
        lines.append(f"| {name} | {_fmt(_med(row['calls_per_s']))} | {_fmt(added, 2)} |")
    for name in e["transports"]:
        r = w["ratios"][name]
        lines.append(f"| [{name}] extauthz ÷ jwt_authn | {_fmt(r['extauthz_over_jwt_authn'], 2)}"
                     " | |")
    return lines


def targets(out: dict[str, Any]) -> list[str]:
    """Every target of the run with its value."""
    mark = {True: "holds", False: "misses", None: "n/a"}
    return [f"- {mark[t['holds']]}: {t['target']}: {_fmt(t['value'], 3)} ({t['limit']})"
            for t in out.get("targets", []) if t["target"].startswith("#16")]


def render(out: dict[str, Any]) -> str:
    """The generated block."""
    m = out["machine"]
    head = (f"Generated by `python -m bench.report` from a `{out['mode']}` run started "
            f"{out['started']}, {len(m['cpus_usable'])} CPUs, load "
            f"{m['loadavg_before'][0]:.2f} before / {m.get('loadavg_after', [0])[0]:.2f} after; "
            f"medians of {out['repeats']}.")
    parts = [head, "", *candidates(out), "", *e2e(out), "", "Sizing (cached token: each "
             "Temporal call through Envoy is one check; a cache miss adds the signature "
             f"verification; planned at {int(UTILIZATION * 100)} % of a core per worker, "
             f"{WORKERS_PER_POD} workers per pod):", "", *sizing(out), "",
             "Issue #16 targets in this run:", *targets(out)]
    return "\n".join(parts).replace("\n\n\n", "\n\n")


def write(block: str, doc: Path = DOC) -> None:
    """Replace the generated block of ``doc``."""
    text = doc.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    doc.write_text(text[:start] + "\n" + block + "\n" + text[end:])


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="?", type=Path,
                    default=REPO / "bench" / "results" / "latest.json")
    ap.add_argument("--write", action="store_true", help=f"replace the block in {DOC.name}")
    args = ap.parse_args(argv)
    block = render(json.loads(args.results.read_text()))
    if args.write:
        write(block)
    print(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
