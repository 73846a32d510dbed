"""Waiting within the route's budget: a result in time, Skip(budget) past it, the
future left running and its callbacks gone."""

from __future__ import annotations

import asyncio

import pytest

from proxy.feed.budget import within
from proxy.outcome.errors import Skip


async def test_within_a_done_future_is_its_result() -> None:
    future = asyncio.get_running_loop().create_future()
    future.set_result(7)
    assert await within(future, 0.0) == 7  # even with the deadline long past


async def test_within_waits_for_a_future_that_beats_the_deadline() -> None:
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    loop.call_later(0.01, future.set_result, "late but in time")
    assert await within(future, loop.time() + 5) == "late but in time"
    assert not future._callbacks  # type: ignore[attr-defined]


async def test_within_skips_at_the_deadline_and_leaves_the_future_running() -> None:
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    started = loop.time()
    with pytest.raises(Skip) as caught:
        await within(future, started + 0.05, plugin="slowpoke")
    assert (caught.value.reason, caught.value.plugin) == ("budget", "slowpoke")
    assert 0.04 <= loop.time() - started < 1.0
    assert not future.done() and not future.cancelled()
    # A late failure is read by within's callback: asyncio logs nothing about it.
    future.set_exception(ConnectionError("late"))
    await asyncio.sleep(0)
    assert future._log_traceback is False  # type: ignore[attr-defined]


async def test_within_cancelled_leaves_no_callback_behind() -> None:
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    waiting = asyncio.ensure_future(within(future, loop.time() + 5))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not future._callbacks  # type: ignore[attr-defined]
