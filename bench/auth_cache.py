"""Micro-benchmark: µs per ``Authenticator.verify`` cache hit and miss (RS256, ES256, EdDSA).

Run: ``.venv/bin/python -m bench.auth_cache``.
Misses are distinct tokens with the keys already loaded (parse + signature + claims + cache put);
hits repeat one token (hash + lookup + deadline check). Also prints aiocache's
``SimpleMemoryCache.get`` for comparison.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from aiocache import SimpleMemoryCache

from devkit.issuer import DevIssuer
from extauthz.auth.authenticator import Authenticator, token_digest
from extauthz.auth.types import IssuerConfig


async def bench(alg: str, misses: int = 2000, hits: int = 200_000) -> tuple[float, float]:
    with DevIssuer(alg=alg) as dev:
        cfg = IssuerConfig(dev.url, audiences=("temporal",), allow_insecure_http=True)
        tokens = [dev.mint({"sub": f"user{i}", "permissions": ["default:write", "ns2:read"],
                            "email": f"user{i}@example.com"}) for i in range(misses)]
        async with Authenticator([cfg], cache_max_entries=misses + 10) as auth:
            assert await auth.wait_ready(5)
            t0 = time.perf_counter()
            for token in tokens:
                await auth.verify(token)
            miss_us = (time.perf_counter() - t0) / misses * 1e6
            token = tokens[0]
            t0 = time.perf_counter()
            for _ in range(hits):
                await auth.verify(token)
            hit_us = (time.perf_counter() - t0) / hits * 1e6
            print(f"{alg:6} token {len(token):4} B  miss {miss_us:7.1f} µs  hit {hit_us:5.2f} µs")
    return miss_us, hit_us


async def bench_aiocache(n: int = 200_000) -> None:
    cache = SimpleMemoryCache()
    key = token_digest("x" * 900)
    await cache.set(key, 1, ttl=600)
    t0 = time.perf_counter()
    for _ in range(n):
        await cache.get(key)
    print(f"aiocache SimpleMemoryCache.get alone: {(time.perf_counter() - t0) / n * 1e6:.2f} µs")


async def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    for alg in ("RS256", "ES256", "EdDSA"):
        await bench(alg)
    await bench_aiocache()


if __name__ == "__main__":
    asyncio.run(main())
