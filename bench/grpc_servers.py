"""gRPC server candidates side by side: bare always-allow ``Authorization/Check`` servers on
each implementation, and extauthz itself on each ``grpc_server``, under the same h2load load
as ``bench.server`` (h2c, 2 connections x 16 streams, the recorded CheckRequest), in
alternation, same run.

Every bare candidate parses the CheckRequest (``CheckRequest.FromString``) and answers a fixed
OK, on uvloop, one process pinned to one CPU (h2load on the others):

- ``grpc.aio``: the baseline of ``bench.server`` (``bench.baseline``);
- ``grpc.aio-tuned``: grpc.aio with the options that could matter for many small unary calls
  (no BDP probing, a large stream limit, no per-call retries/census);
- ``grpc-sync``: the grpcio sync server (4 threads);
- ``grpclib``: grpclib (asyncio, on the ``h2`` state machine);
- ``h2``: a minimal unary gRPC server on ``h2``'s state machine (``h2.connection``);
- ``h2grpc``: extauthz's hand-framed server (``extauthz.server.h2grpc``) with the same route;
- ``extauthz grpcio`` / ``extauthz h2``: ``extauthz serve`` (1 worker, cached token) on each.

Run: ``.venv/bin/python -m bench.grpc_servers [--seconds 3] [--repeats 3]`` (or as the
``candidates`` part of ``python -m bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import LoadRequest, Proc, python_module, ratio, summary
from bench.server import Server, extauthz_env, measure, plan_cpus
from bench.transports import CHECK_PATH, GrpcTransport
from devkit.ports import LOOPBACK, free_port
from devkit.procs import wait_until

BARE = ("grpc.aio", "grpc.aio-tuned", "grpc-sync", "grpclib", "h2", "h2grpc")
EXTAUTHZ = ("extauthz grpcio", "extauthz h2")
CANDIDATES = BARE + EXTAUTHZ


def _ok() -> bytes:
    from envoy.service.auth.v3 import external_auth_pb2
    from google.rpc import status_pb2

    return bytes(external_auth_pb2.CheckResponse(status=status_pb2.Status(code=0))
                 .SerializeToString())


def _parse(message: bytes) -> None:
    from envoy.service.auth.v3 import external_auth_pb2

    external_auth_pb2.CheckRequest.FromString(message)


# ---- the bare candidates (``--serve NAME --listen HOST:PORT``) -------------------------------


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _serve_aio_tuned(host: str, port: int) -> None:
    import grpc

    ok = _ok()

    def check(message: bytes, _context: Any) -> bytes:
        _parse(message)
        return ok

    server = grpc.aio.server(options=[
        ("grpc.so_reuseport", 0), ("grpc.http2.bdp_probe", 0), ("grpc.enable_retries", 0),
        ("grpc.max_concurrent_streams", 1000), ("grpc.enable_channelz", 0),
        ("grpc.max_receive_message_length", 8 * 1024 * 1024)])
    # a generic handler with a sync function: no servicer class, no coroutine per call
    handler = grpc.method_handlers_generic_handler("envoy.service.auth.v3.Authorization", {
        "Check": grpc.unary_unary_rpc_method_handler(check)})
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await _until_signal()
    await server.stop(0)


def _serve_sync(host: str, port: int) -> None:
    from concurrent import futures

    import grpc

    ok = _ok()

    def check(message: bytes, _context: Any) -> bytes:
        _parse(message)
        return ok

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.so_reuseport", 0),
                                  ("grpc.max_receive_message_length", 8 * 1024 * 1024)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "envoy.service.auth.v3.Authorization",
        {"Check": grpc.unary_unary_rpc_method_handler(check)}),))
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop(0)


async def _serve_grpclib(host: str, port: int) -> None:
    from envoy.service.auth.v3 import external_auth_pb2
    from google.rpc import status_pb2
    from grpclib.const import Cardinality, Handler
    from grpclib.server import Server as GrpclibServer

    ok = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=0))

    class Check:
        async def check(self, stream: Any) -> None:
            await stream.recv_message()  # grpclib parses the CheckRequest
            await stream.send_message(ok)

        def __mapping__(self) -> dict[str, Handler]:
            return {CHECK_PATH: Handler(self.check, Cardinality.UNARY_UNARY,
                                        external_auth_pb2.CheckRequest,
                                        external_auth_pb2.CheckResponse)}

    server = GrpclibServer([Check()])
    await server.start(host, port)
    await _until_signal()
    server.close()


async def _serve_h2(host: str, port: int) -> None:
    import h2.config
    import h2.connection
    import h2.events

    ok = b"\x00" + len(_ok()).to_bytes(4, "big") + _ok()
    config = h2.config.H2Configuration(client_side=False, header_encoding=None)

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.t = transport
            self.c = h2.connection.H2Connection(config)
            self.c.initiate_connection()
            self.bodies: dict[int, bytearray] = {}
            self.t.write(self.c.data_to_send())

        def data_received(self, data: bytes) -> None:
            c = self.c
            for ev in c.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    self.bodies[ev.stream_id] = bytearray()
                elif isinstance(ev, h2.events.DataReceived):
                    self.bodies[ev.stream_id] += ev.data
                    c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    body = self.bodies.pop(ev.stream_id)
                    _parse(bytes(body[5:]))
                    c.send_headers(ev.stream_id, [(b":status", b"200"),
                                                  (b"content-type", b"application/grpc")])
                    c.send_data(ev.stream_id, ok)
                    c.send_headers(ev.stream_id, [(b"grpc-status", b"0")], end_stream=True)
            self.t.write(c.data_to_send())

    server = await asyncio.get_running_loop().create_server(Proto, host, port)
    await _until_signal()
    server.close()


async def _serve_h2grpc(host: str, port: int) -> None:
    from extauthz.server.h2grpc.server import H2GrpcServer

    ok = _ok()

    async def check(message: bytes) -> bytes:
        _parse(message)
        return ok

    serving = b"\x08\x01"  # HealthCheckResponse(status=SERVING)

    async def health(_message: bytes) -> bytes:
        return serving

    server = H2GrpcServer({CHECK_PATH.encode(): check,
                           b"/grpc.health.v1.Health/Check": health})
    await server.start(host, port)
    await _until_signal()
    await server.drain(0)


def serve(name: str, listen: str) -> None:
    """Run bare candidate ``name`` on ``listen`` in this process (uvloop)."""
    import uvloop

    host, _, port_text = listen.rpartition(":")
    port = int(port_text)
    if name == "grpc-sync":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        _serve_sync(host, port)
        return
    mains = {"grpc.aio-tuned": _serve_aio_tuned, "grpclib": _serve_grpclib, "h2": _serve_h2,
             "h2grpc": _serve_h2grpc}
    if name not in mains:
        raise SystemExit(f"unknown candidate {name!r}")
    uvloop.run(mains[name](host, port))


# ---- the driver ---------------------------------------------------------------------------


def _spawn(name: str, workdir: Path, issuer_url: str, cpus: list[int] | None) -> Server:
    transport = GrpcTransport()
    address = (LOOPBACK, free_port())
    listen = f"{address[0]}:{address[1]}"
    if name == "grpc.aio":
        argv, env = transport.baseline_argv(address), None
    elif name.startswith("extauthz"):
        argv = python_module("extauthz", "serve", "--workers", "1")
        env = extauthz_env(transport, address, issuer_url)
        env["EXTAUTHZ_GRPC_SERVER"] = name.split()[1]  # grpcio | h2
        env["EXTAUTHZ_AUDIT_ALLOW_SAMPLE_RATE"] = "0"
    else:
        argv, env = python_module("bench.grpc_servers", "--serve", name, "--listen", listen), None
    log = workdir / f"{name.replace(' ', '-')}.log"
    proc = Proc(name, argv, log, env, cpus).start()
    return Server(name, "extauthz" if name.startswith("extauthz") else "baseline", 1, proc,
                  address, cpus)


def run(workdir: Path, issuer_url: str, token: str, *, seconds: float, repeats: int,
        names: tuple[str, ...] = CANDIDATES, warmup: float = 0.5) -> dict[str, Any]:
    """Each candidate under the same h2load load, in alternation: CPU µs per check, checks/s,
    and each one's ratio to bare grpc.aio (medians; per-repeat ratios too)."""
    server_cpus, load_cpus, pinning = plan_cpus()
    transport = GrpcTransport()
    request: LoadRequest = transport.load_request(token)
    servers: list[Server] = []
    samples: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    try:
        servers.extend(_spawn(name, workdir, issuer_url, server_cpus) for name in names)
        for srv in servers:
            wait_until(lambda s=srv: _allowed(transport, s, request), 60,  # type: ignore[misc]
                       f"{srv.label} allows", alive=srv.proc.check_alive)
        for _ in range(repeats):
            for srv in servers:
                measure(srv, request, workdir, warmup, load_cpus)
                samples[srv.label].append(measure(srv, request, workdir, seconds, load_cpus))
    finally:
        for srv in servers:
            srv.proc.terminate()
        for srv in servers:
            srv.proc.stop()
    rows = []
    base = samples.get("grpc.aio")
    for name in names:
        runs = samples[name]
        row: dict[str, Any] = {
            "candidate": name,
            "cpu_us_per_check": summary([r["cpu_us_per_check"] for r in runs]),
            "checks_per_s": summary([r["checks_per_s"] for r in runs]),
            "failed": sum(int(r["failed"]) for r in runs),
        }
        if base:
            row["cpu_over_grpc_aio"] = summary([
                r["cpu_us_per_check"] / b["cpu_us_per_check"]
                for r, b in zip(runs, base, strict=True)])
            row["checks_per_s_over_grpc_aio"] = ratio(row["checks_per_s"]["median"],
                                                       summary([b["checks_per_s"]
                                                                for b in base])["median"])
        rows.append(row)
    return {"pinning": pinning, "seconds_per_run": seconds, "repeats": repeats,
            "load": "h2c, 2 connections x 16 streams, recorded CheckRequest", "rows": rows}


def _allowed(transport: GrpcTransport, srv: Server, request: LoadRequest) -> bool:
    try:
        return transport.allowed(srv.address, request)
    except Exception:
        return False


def render(out: dict[str, Any]) -> list[str]:
    """The side-by-side table."""
    lines = [f"gRPC server candidates ({out['load']}; {out['pinning']}; medians of "
             f"{out['repeats']} x {out['seconds_per_run']:.1f} s)",
             f"  {'candidate':18s} {'CPU µs/check':>13s} {'× grpc.aio':>11s} {'checks/s':>9s} "
             f"{'× grpc.aio':>11s} {'failed':>7s}"]
    for row in out["rows"]:
        cpu_ratio = (row.get("cpu_over_grpc_aio") or {}).get("median")
        rate_ratio = row.get("checks_per_s_over_grpc_aio")
        lines.append(
            f"  {row['candidate']:18s} {row['cpu_us_per_check']['median']:13.1f} "
            f"{cpu_ratio if cpu_ratio is not None else float('nan'):11.2f} "
            f"{row['checks_per_s']['median']:9.0f} "
            f"{rate_ratio if rate_ratio is not None else float('nan'):11.2f} "
            f"{row['failed']:7d}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Command line: the driver, or one bare candidate (``--serve``)."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", choices=BARE[1:])
    ap.add_argument("--listen")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default=",".join(CANDIDATES))
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.serve, args.listen)
        return 0
    from devkit.issuer import DevIssuer

    names = tuple(n.strip() for n in args.only.split(",") if n.strip())
    unknown = set(names) - set(CANDIDATES)
    if unknown:
        print(f"unknown candidate(s) {sorted(unknown)} (known: {', '.join(CANDIDATES)})",
              file=sys.stderr)
        return 2
    issuer = DevIssuer().start()
    try:
        token = issuer.mint({"sub": "bench", "permissions": ["default:write"]}, ttl=7200)
        with tempfile.TemporaryDirectory(prefix="extauthz-grpc-") as tmp:
            out = run(Path(tmp), issuer.url, token, seconds=args.seconds, repeats=args.repeats,
                      names=names)
    finally:
        issuer.stop()
    print("\n".join(render(out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
