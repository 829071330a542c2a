"""Server CPU per always-allow HTTP ext_authz check, per HTTP server candidate.

Run: ``.venv/bin/python bench/http_servers.py [--seconds 8] [--rate 2000] [--clients 4]``
(needs ``h2load`` from Debian ``nghttp2-client``; granian, uvicorn and httptools from PyPI).

Each candidate runs in its own process (uvloop, one worker) and answers what Envoy's HTTP
ext_authz mode sends: ``POST /<gRPC path>`` with a 5-byte-framed protobuf body, ``200`` with
three identity headers. ``h2load --h1`` drives it from a separate process at a fixed rate over
keep-alive connections (as Envoy's connection pool does); server CPU = utime+stime of the server
process (all threads) over the run, divided by the requests answered. ``extauthz-http`` is the
real ``extauthz serve`` in HTTP mode with a cached token (full pipeline, DescribeNamespace).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PATH = "/temporal.api.workflowservice.v1.WorkflowService/DescribeNamespace"
BODY = b"\x00\x00\x00\x00\x09\x0a\x07default"
OK_HEADERS = [
    (b"x-temporal-authz-subject", b"bench"),
    (b"x-temporal-authz-issuer", b"http://127.0.0.1"),
    (b"x-temporal-authz-kind", b"human"),
]


# ---- candidates (each runs as `python bench/http_servers.py --serve NAME PORT`) -----------


async def _asgi_app(scope: dict[str, Any], receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [*OK_HEADERS, (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


class _Rsgi:
    async def __rsgi__(self, scope, protocol) -> None:  # type: ignore[no-untyped-def]
        await protocol()
        protocol.response_empty(200, [(k.decode(), v.decode()) for k, v in OK_HEADERS])


def _serve_httptools(port: int) -> None:
    import httptools
    import uvloop

    head = (b"HTTP/1.1 200 OK\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in OK_HEADERS)
            + b"content-length: 0\r\n\r\n")

    class Proto(asyncio.Protocol):
        def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
            self.t = transport
            self.p = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            self.p.feed_data(data)

        def on_message_complete(self) -> None:
            self.t.write(head)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Proto, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


def serve(name: str, port: int) -> None:
    """Run candidate ``name`` on ``port`` in this process."""
    if name == "httptools-protocol":
        _serve_httptools(port)
    elif name == "uvicorn-httptools":
        import uvicorn

        uvicorn.run(_asgi_app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                    log_level="warning", access_log=False, lifespan="off")
    elif name.startswith(("granian-rsgi", "granian-asgi")):
        from granian import Granian
        from granian.constants import HTTPModes, Interfaces, Loops, RuntimeModes, TaskImpl

        rsgi = name.startswith("granian-rsgi")
        Granian(f"http_servers:{'RSGI' if rsgi else 'ASGI'}", address="127.0.0.1", port=port,
                interface=Interfaces.RSGI if rsgi else Interfaces.ASGI, workers=1,
                runtime_threads=1, loop=Loops.uvloop, log_access=False, websockets=False,
                http=HTTPModes.http1,
                runtime_mode=RuntimeModes.st if name.endswith("-st") else RuntimeModes.auto,
                task_impl=TaskImpl.rust if name.endswith("-st") else TaskImpl.asyncio,
                ).serve()
    else:
        raise SystemExit(f"unknown candidate {name}")


RSGI = _Rsgi()
ASGI = _asgi_app


# ---- driver -------------------------------------------------------------------------------


def _cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _tree(pid: int) -> list[int]:
    out = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        out += _tree(int(child))
    return out


def load(port: int, seconds: float, rate: int, clients: int, headers: list[str],
         body: Path, prefix: str = "") -> int:
    """h2load at ``rate`` req/s over ``clients`` keep-alive HTTP/1.1 connections; 2xx count."""
    argv = ["h2load", "--h1", "-c", str(clients), "-D", str(max(1, round(seconds))),
            "-d", str(body), f"http://127.0.0.1:{port}{prefix}{PATH}"]
    if rate > 0:  # 0: as fast as the server answers (one request in flight per connection)
        argv += ["--rps", str(max(1, rate // clients))]
    for h in headers:
        argv += ["-H", h]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    match = re.search(r"status codes: (\d+) 2xx", out)
    assert match, out
    assert int(match.group(1)) > 0, out
    return int(match.group(1))


def measure(name: str, port: int, pids: list[int], args: argparse.Namespace,
            headers: list[str], body: Path) -> tuple[float, int]:
    prefix = "/check" if name == "extauthz-http" else ""
    load(port, 1.0, args.rate, args.clients, headers, body, prefix)  # warm-up
    before = _cpu_seconds(pids)
    n = load(port, args.seconds, args.rate, args.clients, headers, body, prefix)
    used = _cpu_seconds(pids) - before
    return used / max(1, n) * 1e6, n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--serve", nargs=2, metavar=("NAME", "PORT"))
    args = parser.parse_args()
    if args.serve:
        sys.path.insert(0, str(Path(__file__).parent))
        serve(args.serve[0], int(args.serve[1]))
        return
    from devkit.ports import free_ports, wait_port

    names = args.only or ["httptools-protocol", "granian-rsgi", "granian-asgi",
                          "uvicorn-httptools", "extauthz-http"]
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body"
        body.write_bytes(BODY)
        print(f"{args.rate or 'max'} req/s over {args.clients} keep-alive connections, "
              f"{args.seconds:.0f} s per candidate")
        for name in names:
            port, grpc_port = free_ports(2)
            headers = ["x-extauthz-content-type: application/grpc"]
            issuer = None
            if name == "extauthz-http":
                from devkit.issuer import DevIssuer

                issuer = DevIssuer().start()
                token = issuer.mint({"sub": "bench", "permissions": ["default:read"]})
                headers.append(f"authorization: Bearer {token}")
                env = {**os.environ, "EXTAUTHZ_TRANSPORT": "http",
                       "EXTAUTHZ_HTTP_LISTEN": f"127.0.0.1:{port}",
                       "EXTAUTHZ_LISTEN": f"127.0.0.1:{grpc_port}",
                       "TEMPORAL_AUTH_PROVIDER_URL": issuer.url,
                       "TEMPORAL_AUTH_CLIENT_ID": "temporal",
                       "EXTAUTHZ_ALLOW_INSECURE_ISSUER": "1", "EXTAUTHZ_WORKERS": "1",
                       "EXTAUTHZ_LOG_LEVEL": "warning",
                       "EXTAUTHZ_AUDIT_ALLOW_SAMPLE_RATE": "0"}
                argv = [sys.executable, "-m", "extauthz", "serve"]
            else:
                env = dict(os.environ)
                argv = [sys.executable, __file__, "--serve", name, str(port)]
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                wait_port("127.0.0.1", port)
                if name == "extauthz-http":
                    from devkit.procs import http_get, wait_until

                    health = f"http://127.0.0.1:{port}/healthz"
                    wait_until(lambda h=health: http_get(h)[0] == 200,  # type: ignore[misc]
                               30, "extauthz SERVING")
                time.sleep(1.0)
                us, n = measure(name, port, _tree(proc.pid), args, headers, body)
                print(f"  {name:20s} {us:6.1f} µs server CPU per check  ({n} checks)")
            finally:
                proc.terminate()
                proc.wait(30)
                if issuer is not None:
                    issuer.stop()


if __name__ == "__main__":
    main()
