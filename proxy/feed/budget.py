"""Waiting for a future within the route's budget, without cancelling it.

The budget is enforced by deadlines, not cancellation: redis-py does not honour
cancelling a command, and a late item lookup should still fill the cache.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TypeVar

from proxy.outcome.errors import Reason, Skip

T = TypeVar("T")


async def within(future: asyncio.Future[T], deadline: float, plugin: str | None = None) -> T:
    """The future's result if it is ready by ``deadline`` (``loop.time()``), else
    ``Skip(budget)``. A future still running is left to finish on its own (Redis calls
    are bounded by redis.timeout_ms); its late failure is read so asyncio does not log
    it as never retrieved."""
    if not future.done():
        # A waiter woken by whichever comes first: asyncio.wait() does the same with
        # sets and a counter, a few us more per wait (docs/performance.md).
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_at(deadline, _wake, waiter)
        callback = functools.partial(_wake, waiter)
        future.add_done_callback(callback)
        try:
            await waiter
        finally:
            timer.cancel()
            future.remove_done_callback(callback)
        if not future.done():
            future.add_done_callback(consume)
            raise Skip(Reason.BUDGET, plugin=plugin)
    return future.result()


def past(deadline: float) -> bool:
    return asyncio.get_running_loop().time() > deadline


def _wake(waiter: asyncio.Future[None], _: object = None) -> None:
    if not waiter.done():
        waiter.set_result(None)


def consume(future: asyncio.Future[object]) -> None:
    """A done-callback that reads a late failure (asyncio would log it otherwise)."""
    if not future.cancelled():
        future.exception()
