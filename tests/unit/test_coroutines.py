"""The coroutine driver (``server.coroutines``): synchronous first step, Task-like rest."""

from __future__ import annotations

import asyncio

import pytest

from extauthz.server.coroutines import resume, step


async def _value(x: int) -> int:
    return x


async def _yields_then(x: int) -> int:
    await asyncio.sleep(0)
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(fut.set_result, x)
    return await fut


async def _fails() -> int:
    raise ValueError("boom")


def test_a_coroutine_that_never_suspends_finishes_in_one_step() -> None:
    """``step`` returns the result of a coroutine that completes without awaiting."""
    assert step(_value(7)) == (True, 7)


async def test_a_suspended_coroutine_is_finished_by_resume() -> None:
    """A coroutine that yields (bare yields and futures) is finished by ``resume``."""
    coro = _yields_then(5)
    finished, suspended = step(coro)
    assert not finished
    assert await resume(coro, suspended) == 5


def test_exceptions_propagate_from_step() -> None:
    """``step`` lets the coroutine's exception through to the caller."""
    with pytest.raises(ValueError, match="boom"):
        step(_fails())
