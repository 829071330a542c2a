"""The benchmark: ``.venv/bin/python -m bench`` (or ``./dev bench``).

One invocation runs, each figure repeated (default 3 times) with the variants in alternation:

1. ``handler``: µs per Check in-process (``bench.handler``);
2. ``candidates``: gRPC server implementations side by side, bare and extauthz on each
   (``bench.grpc_servers``): CPU µs per check and checks/s, each ÷ bare grpc.aio;
3. ``server``: h2load → extauthz vs the transport's bare always-allow server, same load, same
   run, for each transport (gRPC: grpc.aio; HTTP: asyncio + httptools): checks/s, server CPU µs
   per check, their ratio; ``--workers 1`` vs ``2``; HTTP ÷ gRPC (``bench.server``);
4. ``e2e``: Temporal calls through Envoy to a real Temporal dev server with no authz, the bare
   Python ext_authz and extauthz in each transport's mode, and Envoy's jwt_authn
   (``bench.e2e``); HTTP ÷ gRPC;
5. ``memory`` (only with ``--memory``): RSS per worker after 10k and after 1M checks;
6. ``worst`` (only with ``--parts ...,worst``): the worst body of each family, CPU and peak RSS
   of the scan path and a check, each in a fresh process (``bench.worst_body``, ~1 minute).

Transports (``--transport``, default ``grpc,http``: both in the same run, in alternation): see
``bench.transports``.

It prints a table, checks the issue's targets (every target is a ratio within this run), and
writes everything as JSON to ``bench/results/`` (``latest.json`` and a timestamped copy).
Default ~6-8 minutes; ``--quick`` ~2; ``--tiny`` a few seconds (the smoke test's mode).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import handler, server, transports
from bench.common import REPO, h2load_path, h2load_version, loadavg, usable_cpus

SCHEMA = "extauthz-bench/2"
RESULTS = REPO / "bench" / "results"
PARTS = ("handler", "candidates", "server", "e2e", "memory", "worst")


@dataclass(frozen=True)
class Mode:
    """Durations and repeats of one mode."""

    name: str
    repeats: int
    handler_seconds: float
    miss_calls: int
    server_seconds: float
    e2e_seconds: float
    e2e_rate_seconds: float  # the fixed-rate (latency) runs
    memory_first: int
    memory_total: int


MODES = {
    "default": Mode("default", 3, 0.3, 200, 3.0, 2.0, 1.5, 10_000, 1_000_000),
    "quick": Mode("quick", 3, 0.1, 60, 1.0, 1.0, 1.0, 10_000, 200_000),
    "tiny": Mode("tiny", 1, 0.02, 5, 0.3, 0.5, 0.5, 500, 2_000),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="~2 minutes, shorter runs")
    size.add_argument("--tiny", action="store_true",
                      help="seconds; proves the harness works (figures meaningless)")
    ap.add_argument("--parts", default="handler,candidates,server,e2e",
                    help=f"comma-separated, from {','.join(PARTS)} (default: the first four)")
    ap.add_argument("--memory", action="store_true", help="add the memory part (RSS after 1M)")
    ap.add_argument("--memory-workers", type=int, default=2)
    ap.add_argument("--memory-checks", type=int, default=None,
                    help="checks for the memory part (default 1M; quick 200k)")
    ap.add_argument("--repeats", type=int, default=None, help="override the mode's repeats")
    ap.add_argument("--transport", default=",".join(transports.TRANSPORTS),
                    help="comma-separated, from "
                         f"{','.join(transports.TRANSPORTS)} (default: all, in one run)")
    ap.add_argument("--jwt-cache", action="store_true",
                    help="e2e: add Envoy jwt_authn with its JWT cache as a fifth variant")
    ap.add_argument("--report", action="store_true",
                    help="regenerate the tables of docs/measurements.md from this run "
                         "(bench.report)")
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/)")
    ap.add_argument("--workdir", type=Path, default=None, help="logs and configs (default: tmp)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the selected parts; print the table; write the JSON."""
    args = parse(argv)
    mode = MODES["tiny" if args.tiny else "quick" if args.quick else "default"]
    repeats = args.repeats or mode.repeats
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if args.memory and "memory" not in parts:
        parts.append("memory")
    unknown = set(parts) - set(PARTS)
    if unknown:
        print(f"bench: unknown part(s) {sorted(unknown)}", file=sys.stderr)
        return 2
    names = list(dict.fromkeys(t.strip() for t in args.transport.split(",") if t.strip()))
    try:
        chosen = [transports.get(name) for name in names]
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    if not chosen:
        print("bench: --transport names no transport", file=sys.stderr)
        return 2
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from extauthz.obs.logs import configure_logging

    configure_logging("error", "json")
    started = time.time()
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "mode": mode.name, "repeats": repeats, "transports": names, "parts": parts,
        "machine": machine(), "skipped": {},
    }
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="extauthz-bench-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    out["workdir"] = str(workdir)
    try:
        run_parts(out, parts, mode, repeats, chosen, workdir, args)
    finally:
        out["machine"]["loadavg_after"] = loadavg()
        out["seconds"] = time.time() - started
        out["targets"] = targets(out)
        path = write(out, args.out)
        print(render(out))
        print(f"\nJSON: {path}")
        if args.report:
            from bench import report

            report.write(report.render(out))
            print(f"tables regenerated: {report.DOC}")
        if tmp is not None:
            tmp.cleanup()
    return 0


def run_parts(out: dict[str, Any], parts: list[str], mode: Mode, repeats: int,
              chosen: list[transports.Transport], workdir: Path,
              args: argparse.Namespace) -> None:
    """Run each part in order, recording it in ``out`` as soon as it finishes."""
    if "handler" in parts:
        _say("handler microbench")
        out["handler"] = asyncio.run(handler.run(mode.handler_seconds, repeats, mode.miss_calls,
                                                 http="http" in out["transports"]))
    if "worst" in parts:
        _say("worst bodies")
        from bench import worst_body

        out["worst_body"] = worst_body.run(repeats=repeats)
    needs_servers = [p for p in parts if p in ("candidates", "server", "e2e", "memory")]
    if not needs_servers:
        return
    if h2load_path() is None:
        for p in needs_servers:
            out["skipped"][p] = "h2load not installed (apt-get install -y nghttp2-client)"
        return
    from devkit.issuer import DevIssuer

    issuer = DevIssuer().start()
    try:
        token = issuer.mint({"sub": "bench", "permissions": ["default:write"]}, ttl=7200)
        if "candidates" in parts:
            _say("gRPC server candidates")
            from bench import grpc_servers

            out["candidates"] = grpc_servers.run(
                workdir / "candidates", issuer.url, token, seconds=mode.server_seconds,
                repeats=repeats, warmup=min(0.5, mode.server_seconds / 2))
        if "server" in parts:
            _say("server throughput")
            out["server"] = server.run(chosen, workdir / "server", issuer.url, token,
                                       seconds=mode.server_seconds, repeats=repeats,
                                       warmup=min(1.0, mode.server_seconds / 2))
        if "e2e" in parts:
            _say("end to end through Envoy to Temporal")
            from bench import e2e

            variants = e2e.FULL_VARIANTS if args.jwt_cache else e2e.VARIANTS
            out["e2e"] = e2e.run(chosen, workdir / "e2e", issuer, token,
                                 seconds=mode.e2e_seconds, rate_seconds=mode.e2e_rate_seconds,
                                 repeats=repeats, variants=variants)
        if "memory" in parts:
            out["memory"] = {}
            for t in chosen:
                _say(f"memory ({t.name})")
                out["memory"][t.name] = server.memory(
                    t, workdir / "memory", issuer.url, token, workers=args.memory_workers,
                    first=mode.memory_first, total=args.memory_checks or mode.memory_total)
    finally:
        issuer.stop()


def _say(what: str) -> None:
    print(f"bench: {what} …", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    try:
        import uvloop  # noqa: F401

        has_uvloop = True
    except ImportError:
        has_uvloop = False
    return {
        "cpus_online": os.cpu_count(), "cpus_usable": usable_cpus(),
        "loadavg_before": loadavg(), "python": platform.python_version(),
        "platform": platform.platform(), "uvloop": has_uvloop, "loadgen": h2load_version(),
    }


def write(out: dict[str, Any], path: Path | None) -> Path:
    """Write the JSON (and ``latest.json`` beside the default location)."""
    text = json.dumps(out, indent=2, default=str)
    if path is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{out['mode']}.json"
        (RESULTS / "latest.json").write_text(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- targets ------------------------------------------------------------------------------------


def _target(name: str, value: float | None, limit: float, op: str,
            note: str = "") -> dict[str, Any]:
    holds = None if value is None else (value <= limit if op == "<=" else value >= limit)
    return {"target": name, "value": value, "limit": f"{op} {limit}", "holds": holds,
            "note": note}


def targets(out: dict[str, Any]) -> list[dict[str, Any]]:
    """The issues' targets (#7 performance, #9 HTTP transport), each checked against this run's
    figures. #7's targets are read in gRPC mode (its baseline is grpc.aio) and, where they are
    ratios to the same transport's bare server or to no authz, in HTTP mode too."""
    got: list[dict[str, Any]] = []
    h = out.get("handler")
    s = out.get("server")
    cpus = len(out["machine"]["cpus_usable"])
    if s:
        by = s["by_transport"]
        if "grpc" in by:
            r = by["grpc"]["ratios"]
            got.append(_target("#7 server CPU/check, extauthz ÷ bare grpc.aio (cached token)",
                               r["cpu_per_check_extauthz_over_baseline"], 1.15, "<="))
        for name, t in by.items():
            r = t["ratios"]
            if r.get("workers2_over_workers1_checks_per_s") is not None:
                got.append(_target(
                    f"#7 [{name}] checks/s, --workers 2 ÷ --workers 1",
                    r["workers2_over_workers1_checks_per_s"], 1.6, ">=",
                    "h2load shares the workers' cores" if cpus <= 2 else ""))
        if "http" in by:
            rows = {row["label"]: row for row in by["http"]["rows"]}
            got.append(_target("#9 [http] server CPU µs per allowed check (cached token, full "
                               "pipeline)", rows["extauthz w1"]["cpu_us_per_check"]["median"],
                               60, "<="))
    c = out.get("candidates")
    if c:
        rows = {row["candidate"]: row for row in c["rows"]}
        got.extend(_target(f"#16 server CPU/check, {name} ÷ bare grpc.aio",
                           rows[name]["cpu_over_grpc_aio"]["median"], 0.35, "<=")
                   for name in ("extauthz h2", "h2grpc")
                   if name in rows and rows[name].get("cpu_over_grpc_aio"))
    if h:
        d = h["derived"]
        got.append(_target("#7 cache miss RS256 − cached, µs (in-process)",
                           d["miss_rs256_minus_cached_us"], 300, "<="))
        got.append(_target("#7 token-cache hit, µs (Authenticator.verify from cache)",
                           d["token_cache_hit_us"], 10, "<="))
        got.append(_target("#7 allow cached − bare handler, µs (strict reading: hit ≤ 10 µs "
                           "more)", d["cached_minus_baseline_us"], 10, "<="))
    e = out.get("e2e")
    if e:
        for workload, w in e["workloads"].items():
            ratios = w["ratios"]
            if "http_over_grpc" in ratios:
                got.append(_target(f"#9 e2e {workload}: calls/s extauthz http ÷ grpc",
                                   ratios["http_over_grpc"]["extauthz"], 1.25, ">="))
            for name in e["transports"]:
                r = ratios[name]
                got.append(_target(f"#7 [{name}] e2e {workload}: calls/s extauthz ÷ bare "
                                   "ext_authz", r["extauthz_over_bare"], 0.9, ">="))
                if workload == "DescribeNamespace":
                    got.append(_target(f"#7 [{name}] e2e {workload}: calls/s extauthz ÷ "
                                       "jwt_authn", r["extauthz_over_jwt_authn"], 0.6, ">="))
                    want = 0.9 if name == "http" else 0.7
                    got.append(_target(f"#16 [{name}] e2e {workload}: calls/s extauthz ÷ "
                                       "jwt_authn", r["extauthz_over_jwt_authn"], want, ">="))
                if "added_p50_ms_half_own" in r:
                    got.append(_target(f"#16 [{name}] e2e {workload}: added p50 at half of "
                                       "extauthz's own max, ms", r["added_p50_ms_half_own"],
                                       1.0, "<="))
                if "added_p50_ms_half_bare" in r:
                    got.append(_target(f"#7 [{name}] e2e {workload}: added p50 at half of bare "
                                       "ext_authz max, ms", r["added_p50_ms_half_bare"], 0.6,
                                       "<="))
                    got.append(_target(f"#7 [{name}] e2e {workload}: added p99 at half of bare "
                                       "ext_authz max, ms", r["added_p99_ms_half_bare"], 2.0,
                                       "<="))
    for name, m in (out.get("memory") or {}).items():
        got.append(_target(f"#7 [{name}] RSS per worker after {m['total_checks']} ÷ after "
                           f"{m['first_checks']}", m["max_ratio"], 1.2, "<="))
    return got


# -- the table ----------------------------------------------------------------------------------


def _f(value: float | None, fmt: str = ".1f") -> str:
    return "–" if value is None else format(value, fmt)


def _ms(stat: dict[str, Any], fmt: str = ".1f") -> str:
    return f"{_f(stat['median'], fmt)} ±{_f((stat['spread'] or 0) * 100, '.0f')}%"


def render(out: dict[str, Any]) -> str:
    """The human-readable table of a run."""
    m = out["machine"]
    lines = [f"extauthz bench ({out['mode']}, transports {','.join(out['transports'])}, "
             f"{out['repeats']}× each, median ±spread) on {len(m['cpus_usable'])} CPUs, load "
             f"{m['loadavg_before'][0]:.2f} before / {m.get('loadavg_after', [0])[0]:.2f} after, "
             f"{out.get('seconds', 0):.0f} s"]
    if "handler" in out:
        lines += ["", "1. handler microbench (in-process)", handler.table(out["handler"])]
    if "candidates" in out:
        from bench import grpc_servers

        lines += ["", *grpc_servers.render(out["candidates"])]
    if "server" in out:
        lines += ["", *_render_server(out["server"])]
    if "e2e" in out:
        lines += ["", *_render_e2e(out["e2e"])]
    for name, mem in (out.get("memory") or {}).items():
        lines += ["", f"4. memory [{name}]: RSS per worker after {mem['first_checks']} vs "
                  f"{mem['total_checks']} checks ({mem['workers']} workers)"]
        for w in mem["per_worker"]:
            lines.append(f"  pid {w['pid']}: {w['rss_mib_after_first']:.1f} MiB → "
                         f"{w['rss_mib_after_total']:.1f} MiB (× {_f(w['ratio'], '.3f')})")
    if out.get("worst_body"):
        from bench import worst_body

        lines += ["", "5. worst bodies (scan path, fresh process per case)",
                  worst_body.table(out["worst_body"])]
    for part, why in out.get("skipped", {}).items():
        lines.append(f"\n{part}: skipped — {why}")
    if out.get("targets"):
        lines += ["", "targets (ratios within this run)"]
        for t in out["targets"]:
            mark = {True: "holds", False: "MISSES", None: "n/a"}[t["holds"]]
            note = f"  [{t['note']}]" if t["note"] else ""
            lines.append(f"  {mark:<7}{t['target']}: {_f(t['value'], '.3g')} ({t['limit']}){note}")
    return "\n".join(lines)


def _render_server(s: dict[str, Any]) -> list[str]:
    lines = [f"2. server throughput ({s['seconds_per_run']} s runs; {s['pinning']})",
             f"{'server':<30}{'checks/s':>16}{'CPU µs/check':>18}{'CPU util':>10}"]
    for name, t in s["by_transport"].items():
        load = t["load"]
        lines.append(f"[{name}] h2load {load['protocol']}, {load['connections']} connections × "
                     f"{load['in_flight_per_connection']} in flight")
        lines.extend(f"  {row['label']:<28}{_ms(row['checks_per_s']):>16}"
                     f"{_ms(row['cpu_us_per_check']):>18}"
                     f"{_f(row['server_cpu_util']['median'], '.2f'):>10}" for row in t["rows"])
        r = t["ratios"]
        lines.append(f"  CPU/check extauthz ÷ bare: "
                     f"{_f(r['cpu_per_check_extauthz_over_baseline'], '.3f')}"
                     f" (+{_f(r['cpu_us_per_check_extauthz_minus_baseline'])} µs); checks/s ÷ "
                     f"bare: {_f(r['checks_per_s_extauthz_over_baseline'], '.3f')}; workers 2 ÷ "
                     f"1: {_f(r.get('workers2_over_workers1_checks_per_s'), '.2f')}")
    hg = s.get("http_over_grpc")
    if hg:
        lines.append("http ÷ grpc: CPU/check extauthz "
                     f"{_f(hg.get('extauthz_w1_cpu_per_check'), '.3f')}, bare "
                     f"{_f(hg.get('baseline_w1_cpu_per_check'), '.3f')}; checks/s extauthz "
                     f"{_f(hg.get('extauthz_w1_checks_per_s'), '.2f')}, bare "
                     f"{_f(hg.get('baseline_w1_checks_per_s'), '.2f')}, extauthz w2 "
                     f"{_f(hg.get('extauthz_w2_checks_per_s'), '.2f')}")
    return lines


def _render_e2e(e: dict[str, Any]) -> list[str]:
    lines = [f"3. end to end via Envoy → Temporal dev server ({e['seconds_per_run']} s max runs, "
             f"{e.get('seconds_per_fixed_rate_run', e['seconds_per_run'])} s fixed-rate runs; "
             f"pinning: {e['pinning']}); errors: failed or not forwarded in the runs; !OK: "
             "non-OK gRPC statuses in the variant's Envoy access log over the whole part"]
    for workload, w in e["workloads"].items():
        rates = w["fixed_rates_ops_per_s"]
        unit = "loops/s" if workload == "poll/complete" else "calls/s"
        lines.append(f"{workload}: max, then p50/p99/p99.9 ms at fixed rates " + ", ".join(
            f"{phase} = {rate:.0f} {unit}" for phase, rate in rates.items()))
        head = f"  {'variant':<16}{'calls/s':>16}{'errors':>7}{'!OK':>6}"
        for phase in rates:
            head += f"  {phase + ' p50':>12}{'p99':>12}{'p99.9':>12}"
        lines.append(head)
        for name, row in w["variants"].items():
            line = (f"  {name:<16}{_ms(row['calls_per_s']):>16}"
                    f"{row['failed'] + row['not_forwarded']:>7}{row.get('grpc_not_ok', 0):>6}")
            for phase in rates:
                ph = row.get(phase)
                if ph:
                    line += (f"  {_ms(ph['p50_ms'], '.2f'):>12}{_ms(ph['p99_ms'], '.2f'):>12}"
                             f"{_ms(ph['p999_ms'], '.2f'):>12}")
            lines.append(line)
        for name in e["transports"]:
            r = w["ratios"][name]
            lines.append(f"  [{name}] extauthz ÷ none {_f(r['extauthz_over_none'], '.2f')}, "
                         f"÷ bare {_f(r['extauthz_over_bare'], '.2f')}, ÷ jwt_authn "
                         f"{_f(r['extauthz_over_jwt_authn'], '.2f')}; bare ÷ none "
                         f"{_f(r['bare_over_none'], '.2f')}" + "".join(
                             f"; added at {phase}: p50 {_f(r.get(f'added_p50_ms_{phase}'), '.2f')}"
                             f" ms, p99 {_f(r.get(f'added_p99_ms_{phase}'), '.2f')} ms"
                             for phase in rates))
        hg = w["ratios"].get("http_over_grpc")
        if hg:
            lines.append(f"  http ÷ grpc: extauthz {_f(hg['extauthz'], '.2f')}, bare "
                         f"{_f(hg['bare'], '.2f')}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
