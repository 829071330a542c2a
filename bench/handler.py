"""Handler microbench: µs per Check in-process, from CheckRequest bytes to CheckResponse bytes.

Each case runs the server's own code path: parse the CheckRequest, ``AuthorizationService.Check``
(the pipeline plus the observer with Prometheus metrics and the audit log, as ``serve`` wires
them), serialize the CheckResponse. The baseline is the bare always-allow handler (parse, return
a pre-built OK, serialize). Cases run in alternation, ``repeats`` rounds each; each figure is the
median of the rounds, with the spread.

With ``http`` (the HTTP transport is in the run), two more cases drive the HTTP adapter
(``extauthz.server.http_service``) in-process: the check Envoy sent in HTTP mode (recorded, a
fresh token) as raw HTTP/1.1 bytes into one keep-alive connection (llhttp parse, the pipeline
with metrics and audit, the response bytes written to an in-memory transport), allowed with a
cached token; and the same with a bare always-allow checker instead of the pipeline (what the
adapter alone costs).

Standalone: ``.venv/bin/python -m bench.handler [--seconds 0.3] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2, status_pb2
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from bench.common import summary
from devkit.grpcframe import frame
from devkit.issuer import DevIssuer
from extauthz.auth.authenticator import Authenticator
from extauthz.auth.types import IssuerConfig
from extauthz.model import CheckInput, Decision, Principal, Reason
from extauthz.obs.audit import AuditLog
from extauthz.obs.metrics import Metrics
from extauthz.obs.observer import Telemetry
from extauthz.pipeline import Pipeline
from extauthz.server.grpc_service import AuthorizationService
from extauthz.server.http1 import Connection
from extauthz.server.http_service import HttpCheckServer
from extauthz.server.responses import HttpResponses, ResponseBuilder, check_input

WS = "/temporal.api.workflowservice.v1.WorkflowService/"
BASELINE = "baseline always-allow"
CACHED = "allow, cached token"
HTTP_CACHED = "HTTP adapter: allow, cached token"
HTTP_BARE = "HTTP adapter: always-allow checker"
ALGORITHMS = ("RS256", "ES256", "EdDSA")

Case = Callable[[], Awaitable[bytes]]


def check_request(path: str, body: bytes, token: str | None, **headers: str) -> bytes:
    """A serialized CheckRequest like Envoy's (path, method, headers, raw body)."""
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.path, http.method, http.raw_body = path, "POST", body
    http.headers.update({":path": path, ":method": "POST", "content-type": "application/grpc",
                         "te": "trailers", "x-request-id": "bench", **headers})
    if token:
        http.headers["authorization"] = f"Bearer {token}"
    return bytes(req.SerializeToString())


async def _time_calls(fn: Case, *, seconds: float | None, calls: int | None) -> float:
    """µs per call over ``seconds`` (or exactly ``calls`` calls)."""
    n, start = 0, time.perf_counter()
    if calls is not None:
        for _ in range(calls):
            await fn()
        return (time.perf_counter() - start) / calls * 1e6
    assert seconds is not None
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(20):
            await fn()
        n += 20
    return elapsed / n * 1e6


class _MemoryTransport:
    """What the HTTP adapter writes to, kept in memory (the last write is the answer)."""

    def __init__(self) -> None:
        self.last = b""

    def write(self, data: bytes) -> None:
        self.last = data

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        raise RuntimeError("the HTTP adapter closed the bench connection")


class _AlwaysAllow:
    """A checker deciding nothing (the HTTP adapter's own cost)."""

    _ALLOW = Decision.allow(Reason.ALLOWED, "bench", Principal("bench", "http://127.0.0.1"))

    async def check(self, req: CheckInput) -> Decision:
        return self._ALLOW


def http_case(server: HttpCheckServer, raw: bytes) -> Case:
    """Raw HTTP/1.1 request bytes into one keep-alive connection; the answer's bytes out."""
    transport = _MemoryTransport()
    conn = Connection(server.http1)
    conn.connection_made(transport)  # type: ignore[arg-type]

    async def case() -> bytes:
        conn.data_received(raw)
        return transport.last

    return case


def http_request(token: str) -> bytes:
    """The recorded HTTP-mode check as raw bytes, carrying ``token``."""
    from bench.record import recorded_http_check

    check = recorded_http_check(token)
    head = f"{check.method} {check.path} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in check.headers)
    return head.encode("latin-1") + b"\r\n" + check.body


class Cases:
    """The cases, built once: a dev issuer per algorithm, the authenticator, the servicer."""

    def __init__(self, miss_calls: int, http: bool = False) -> None:
        self.miss_calls = miss_calls
        self.http = http
        self.issuers = {alg: DevIssuer(alg=alg).start() for alg in ALGORITHMS}
        self.auth = Authenticator([
            IssuerConfig(issuer=i.url, audiences=("temporal",), allow_insecure_http=True)
            for i in self.issuers.values()])
        self._devnull = open(os.devnull, "w")  # noqa: SIM115 (closed in close())
        self.metrics = Metrics()
        self.observer = Telemetry(self.metrics, AuditLog(0.01, "json", stream=self._devnull))
        self.pipeline = Pipeline(self.auth)
        self.responses = ResponseBuilder()
        self.service = AuthorizationService(self.pipeline, self.responses, self.observer)
        self.cases: dict[str, Case] = {}
        self._fresh: dict[str, Iterator[bytes]] = {}
        self._refill: dict[str, Callable[[], Iterator[bytes]]] = {}

    async def start(self) -> None:
        """Load keys and build every case."""
        await self.auth.start()
        if not await self.auth.wait_ready(10):
            raise RuntimeError("dev issuers' keys did not load")
        write = self.token("RS256", ["default:write"])
        describe = frame(rr.DescribeNamespaceRequest(namespace="default").SerializeToString())
        plain = check_request(WS + "DescribeNamespace", describe, write)
        ok = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))

        async def baseline() -> bytes:
            external_auth_pb2.CheckRequest.FromString(plain)
            return bytes(ok.SerializeToString())

        self.cases[BASELINE] = baseline
        self.cases[CACHED] = lambda: self.handle(plain)

        async def pipeline_only() -> bytes:  # no observer: what metrics + audit cost
            req = external_auth_pb2.CheckRequest.FromString(plain)
            decision = await self.pipeline.check(check_input(req))
            return bytes(self.responses.build(decision).SerializeToString())

        self.cases["allow, cached token, no metrics/audit"] = pipeline_only
        if self.http:
            raw = http_request(write)
            self.cases[HTTP_CACHED] = http_case(
                HttpCheckServer(self.pipeline, HttpResponses(), self.observer), raw)
            self.cases[HTTP_BARE] = http_case(
                HttpCheckServer(_AlwaysAllow(), HttpResponses(), self.observer), raw)
        for alg in ALGORITHMS:
            self.cases[f"allow, cache miss {alg}"] = self._miss_case(alg, describe)
        reader = check_request(
            WS + "StartWorkflowExecution",
            frame(rr.StartWorkflowExecutionRequest(namespace="default").SerializeToString()),
            self.token("RS256", ["default:read"]))
        self.cases["deny by policy"] = lambda: self.handle(reader)
        bad = check_request(WS + "DescribeNamespace", describe, write[:-4] + "AAAA")
        self.cases["401 bad token"] = lambda: self.handle(bad)
        big = rr.RespondWorkflowTaskCompletedRequest(namespace="default")
        big.commands.add().complete_workflow_execution_command_attributes.result.payloads.add(
            data=b"x" * (1 << 20))
        large = check_request(WS + "RespondWorkflowTaskCompleted",
                              frame(big.SerializeToString()), write)
        self.cases["1 MiB body, namespace at field 9"] = lambda: self.handle(large)
        gz_body = frame(gzip.compress(
            rr.StartWorkflowExecutionRequest(namespace="default").SerializeToString()), 1)
        gz = check_request(WS + "StartWorkflowExecution", gz_body, write,
                           **{"grpc-encoding": "gzip"})
        self.cases["gzip body"] = lambda: self.handle(gz)
        # every case must decide as its name says
        for name, expect in ((CACHED, code_pb2.OK), ("deny by policy", code_pb2.PERMISSION_DENIED),
                             ("401 bad token", code_pb2.UNAUTHENTICATED),
                             ("1 MiB body, namespace at field 9", code_pb2.OK),
                             ("gzip body", code_pb2.OK)):
            got = external_auth_pb2.CheckResponse.FromString(await self.cases[name]()).status.code
            if got != expect:
                raise RuntimeError(f"case {name!r} answered {got}, expected {expect}")
        if self.http:
            answer = await self.cases[HTTP_CACHED]()
            if not answer.startswith(b"HTTP/1.1 200 ") or b"x-temporal-authz-subject" not in answer:
                raise RuntimeError(f"case {HTTP_CACHED!r} answered {answer[:200]!r}")

    def token(self, alg: str, perms: list[str], n: int = 0) -> str:
        """A token of issuer ``alg``."""
        return self.issuers[alg].mint({"sub": f"bench{n}", "permissions": perms})

    def _miss_case(self, alg: str, describe: bytes) -> Case:
        """Each call verifies a token never seen before (minted in batches, ahead of time)."""
        counter = [0]

        def batch() -> Iterator[bytes]:
            start = counter[0]
            counter[0] += self.miss_calls
            return iter([check_request(WS + "DescribeNamespace", describe,
                                       self.token(alg, ["default:write"], start + i))
                         for i in range(self.miss_calls)])

        self._fresh[alg] = batch()
        self._refill[alg] = batch

        async def miss() -> bytes:
            return await self.handle(next(self._fresh[alg]))

        return miss

    def refill(self, alg: str) -> None:
        """Fresh tokens for the next round of a miss case (minting is not timed)."""
        self._fresh[alg] = self._refill[alg]()

    async def handle(self, raw: bytes) -> bytes:
        """What the server does with one CheckRequest."""
        reply = await self.service.Check(external_auth_pb2.CheckRequest.FromString(raw), None)
        return bytes(reply.SerializeToString())

    async def close(self) -> None:
        """Stop the issuers and the authenticator."""
        await self.auth.close()
        for issuer in self.issuers.values():
            issuer.stop()
        self._devnull.close()


async def run(seconds: float = 0.3, repeats: int = 3, miss_calls: int = 200,
              http: bool = False) -> dict[str, Any]:
    """Every case, ``repeats`` rounds in alternation; µs per check (median, spread)."""
    cases = Cases(miss_calls, http)
    try:
        await cases.start()
        samples: dict[str, list[float]] = {name: [] for name in cases.cases}
        for name, fn in cases.cases.items():  # warm-up
            if "miss" not in name:
                await _time_calls(fn, seconds=None, calls=50)
        for _ in range(repeats):
            for name, fn in cases.cases.items():
                if "miss" in name:
                    alg = name.rsplit(" ", 1)[1]
                    cases.refill(alg)
                    samples[name].append(await _time_calls(fn, seconds=None, calls=miss_calls))
                else:
                    samples[name].append(await _time_calls(fn, seconds=seconds, calls=None))
        verify_hit = await _verify_hit_us(cases, seconds)
    finally:
        await cases.close()
    rows: list[dict[str, Any]] = [{"case": name, "us": summary(vals)}
                                  for name, vals in samples.items()]
    base = rows[0]["us"]["median"]
    for row in rows:
        row["x_baseline"] = row["us"]["median"] / base if base else None
    med = {row["case"]: row["us"]["median"] for row in rows}
    derived_http = {"http_cached_minus_adapter_us": med[HTTP_CACHED] - med[HTTP_BARE]} \
        if http else {}
    return {
        "seconds_per_round": seconds, "repeats": repeats, "miss_calls_per_round": miss_calls,
        "rows": rows,
        "derived": {
            "cached_minus_baseline_us": med[CACHED] - med[BASELINE],
            "miss_rs256_minus_cached_us": med["allow, cache miss RS256"] - med[CACHED],
            "observer_us": med[CACHED] - med["allow, cached token, no metrics/audit"],
            "token_cache_hit_us": verify_hit,
            **derived_http,
        },
    }


async def _verify_hit_us(cases: Cases, seconds: float) -> float:
    """µs of one ``Authenticator.verify`` served from the cache (the hit alone)."""
    token = cases.token("RS256", ["default:write"], 10**6)
    await cases.auth.verify(token)

    async def hit() -> bytes:
        await cases.auth.verify(token)
        return b""

    return await _time_calls(hit, seconds=seconds, calls=None)


def table(result: dict[str, Any]) -> str:
    """The microbench as a text table."""
    lines = [f"{'case':<42}{'µs/check':>10}{'spread':>9}{'× base':>9}"]
    for row in result["rows"]:
        us = row["us"]
        lines.append(f"{row['case'][:42]:<42}{us['median']:>10.1f}{us['spread'] * 100:>8.0f}%"
                     f"{row['x_baseline']:>9.2f}")
    d = result["derived"]
    lines.append(f"cached − baseline {d['cached_minus_baseline_us']:.1f} µs; miss RS256 − cached "
                 f"{d['miss_rs256_minus_cached_us']:.1f} µs; metrics+audit "
                 f"{d['observer_us']:.1f} µs; token-cache hit {d['token_cache_hit_us']:.2f} µs")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=0.3, help="per case per round")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--miss-calls", type=int, default=200, help="calls per miss round")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--no-http", action="store_true", help="without the HTTP adapter cases")
    a = ap.parse_args()
    out = asyncio.run(run(a.seconds, a.repeats, a.miss_calls, http=not a.no_http))
    print(json.dumps(out, indent=2) if a.json else table(out))
