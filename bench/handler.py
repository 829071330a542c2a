"""Handler microbench: µs per Check in-process, from CheckRequest bytes to CheckResponse bytes.

Run: ``.venv/bin/python bench/handler.py [--seconds 1.0]``. Starts a development issuer on
loopback for the signing keys; the token cache is warm for "cached" cases and bypassed for
"miss" cases. The baseline is an always-allow handler (parse request, build an OK response)
measured in the same run, so the ratio is comparable across noisy machines.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator

from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2, status_pb2
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from extauthz.auth.authenticator import Authenticator
from extauthz.auth.types import IssuerConfig
from extauthz.devissuer import DevIssuer
from extauthz.pipeline import Pipeline
from extauthz.server.responses import ResponseBuilder, check_input

WS = "/temporal.api.workflowservice.v1.WorkflowService/"


def frame(msg: bytes, flag: int = 0) -> bytes:
    return bytes([flag]) + len(msg).to_bytes(4, "big") + msg


def check_request(path: str, body: bytes, token: str | None, **headers: str) -> bytes:
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.path, http.method, http.raw_body = path, "POST", body
    http.headers.update({"content-type": "application/grpc", "x-request-id": "bench", **headers})
    if token:
        http.headers["authorization"] = f"Bearer {token}"
    return bytes(req.SerializeToString())


async def measure(fn: Callable[[], Awaitable[bytes]], seconds: float, limit: int) -> float:
    """Median µs per call over 5 rounds of ``seconds``/5 each (at most ``limit`` calls)."""
    rounds = []
    per_round = limit // 5
    for _ in range(5):
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 5 and n < per_round:
            for _ in range(10):
                await fn()
            n += 10
        rounds.append(elapsed / n * 1e6)
    return statistics.median(rounds)


async def main(seconds: float, miss_tokens: int) -> None:
    issuers = {alg: DevIssuer(alg=alg).start() for alg in ("RS256", "ES256", "EdDSA")}
    configs = [IssuerConfig(issuer=i.url, audiences=("temporal",), allow_insecure_http=True)
               for i in issuers.values()]
    auth = Authenticator(configs)
    await auth.start()
    await auth.wait_ready(10)
    pipeline, responses = Pipeline(auth), ResponseBuilder()

    def token(alg: str, perms: list[str]) -> str:
        return issuers[alg].mint({"sub": "bench", "permissions": perms})

    describe = frame(rr.DescribeNamespaceRequest(namespace="default").SerializeToString())
    big = rr.RespondWorkflowTaskCompletedRequest(namespace="default")
    big.commands.add().complete_workflow_execution_command_attributes.result.payloads.add(
        data=b"x" * (1 << 20))
    big_body = frame(big.SerializeToString())
    gz_body = frame(gzip.compress(
        rr.StartWorkflowExecutionRequest(namespace="default").SerializeToString()), 1)

    async def handle(raw: bytes) -> bytes:
        req = external_auth_pb2.CheckRequest.FromString(raw)
        decision = await pipeline.check(check_input(req))
        return bytes(responses.build(decision).SerializeToString())

    ok = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))

    async def baseline(raw: bytes) -> bytes:
        external_auth_pb2.CheckRequest.FromString(raw)
        return bytes(ok.SerializeToString())

    write = token("RS256", ["default:write"])
    cases: dict[str, Callable[[], Awaitable[bytes]]] = {}
    plain = check_request(WS + "DescribeNamespace", describe, write)
    cases["baseline always-allow"] = lambda: baseline(plain)
    cases["allow, cached token"] = lambda: handle(plain)
    for alg in issuers:
        # distinct tokens minted up front: every check verifies a signature (cache miss)
        fresh = iter([check_request(WS + "DescribeNamespace", describe,
                                    token(alg, ["default:write", f"n{i}:read"]))
                      for i in range(miss_tokens)])

        async def miss(fresh: Iterator[bytes] = fresh) -> bytes:
            return await handle(next(fresh))

        cases[f"allow, cache miss {alg}"] = miss
    reader = check_request(WS + "StartWorkflowExecution",
                           frame(rr.StartWorkflowExecutionRequest(
                               namespace="default").SerializeToString()),
                           token("RS256", ["default:read"]))
    cases["deny by policy"] = lambda: handle(reader)
    bad = check_request(WS + "DescribeNamespace", describe, write[:-4] + "AAAA")
    cases["401 bad token"] = lambda: handle(bad)
    large = check_request(WS + "RespondWorkflowTaskCompleted", big_body, write)
    cases["1 MiB body, namespace at field 9"] = lambda: handle(large)
    gz = check_request(WS + "StartWorkflowExecution", gz_body, write, **{"grpc-encoding": "gzip"})
    cases["gzip body"] = lambda: handle(gz)

    base = 0.0
    print(f"{'case':<40}{'µs/check':>10}{'× baseline':>12}")
    for name, fn in cases.items():
        us = await measure(fn, seconds, miss_tokens if 'miss' in name else 10**9)
        base = base or us
        print(f"{name:<40}{us:>10.1f}{us / base:>12.2f}")
    await auth.close()
    for i in issuers.values():
        i.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--miss-tokens", type=int, default=4000,
                    help="tokens minted per algorithm for the cache-miss cases")
    args = ap.parse_args()
    asyncio.run(main(args.seconds, args.miss_tokens))
