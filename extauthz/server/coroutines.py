"""The coroutine driver: run a coroutine synchronously up to its first suspension, and finish
one that suspended inside a task as if a Task had run it from the start.

Why: most checks complete without awaiting (a cached token), so the HTTP server answers them
right in ``data_received`` instead of paying for a Task per request; only a coroutine that
really suspends gets a task. The TLS accept path uses the same two steps to hand the socket to
``loop.start_tls`` inside ``connection_made`` (``server.http1.server``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def step(coro: Coroutine[Any, Any, T]) -> tuple[bool, Any]:
    """Run ``coro`` until it returns or first suspends: ``(True, its result)`` or
    ``(False, what it yielded)`` (pass that to ``resume``). Its exceptions propagate."""
    try:
        return False, coro.send(None)
    except StopIteration as done:
        return True, done.value


async def resume(coro: Coroutine[Any, Any, T], suspended: Any) -> T:
    """Finish ``coro``, which suspended yielding ``suspended``, waiting on what it yields as a
    Task would; returns its result (its exceptions, and a cancellation, propagate)."""
    while True:
        if suspended is None:  # a bare yield (asyncio.sleep(0))
            await asyncio.sleep(0)
        else:  # a future: wait for it as the Task would, then resume
            suspended._asyncio_future_blocking = False
            await asyncio.wait((suspended,))
        try:
            suspended = coro.send(None)
        except StopIteration as done:
            result: T = done.value
            return result
