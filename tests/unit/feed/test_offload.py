"""The pool of re-rank processes: bounded, failing open with its own reasons, made anew
when a process dies. Real processes (spawned), no stand-ins."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

from plugins.registry import load
from plugins.run import RoutePlugins
from plugins.spec import PluginSpec
from proxy.feed import offload
from proxy.feed.offload import Offload
from proxy.outcome.errors import Reason, Skip
from proxy.routing.reads import plan


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def fail() -> None:
    raise ValueError("no")


def die() -> None:
    os._exit(3)


async def started(pool: Offload) -> None:
    body_plan = plan(RoutePlugins(items=load(PluginSpec(use="dotted"), "i", implicit=True)))
    big = b"x" * pool.min_bytes
    assert not pool.takes(big, body_plan, 0, False)  # starts the pool; this one stays here
    for _ in range(600):
        if pool.takes(big, body_plan, 0, False):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the pool did not start")


@pytest.fixture
async def pool():
    pool = Offload(1, 10)
    await started(pool)
    yield pool
    pool.close()


def deadline(seconds: float = 10.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_small_bodies_other_routes_and_explains_stay_on_the_loop(pool: Offload) -> None:
    body_plan = plan(RoutePlugins(items=load(PluginSpec(use="dotted"), "i", implicit=True)))
    assert not pool.takes(b"x" * 9, body_plan, 0, False)
    assert not pool.takes(b"x" * 10, None, 0, False)
    assert not pool.takes(b"x" * 10, body_plan, 1, False)
    assert not pool.takes(b"x" * 10, body_plan, 0, True)


async def test_the_processes_find_and_join_as_the_loop_would(pool: Offload) -> None:
    raw = b'{"a": 1, "items": [ {"id": "x", "n": 123456789012345678901234},{"id": 2} ] }'
    ids = await pool.call(deadline(), offload.find_ids, raw, ("items",), ("id",))
    assert ids == ["x", "2"]
    out = await pool.call(deadline(), offload.join, raw, ("items",), ("id",), np.array([1, 0]))
    assert out == b'{"a": 1, "items": [ {"id": 2},{"id": "x", "n": 123456789012345678901234} ] }'
    assert await pool.call(deadline(), offload.find_ids, b"[1]", ("items",), ("id",)) is None


async def test_a_full_pool_fails_open_at_once_and_never_queues(pool: Offload) -> None:
    assert await pool.call(deadline(), nap, 0.0) == 0.0  # this module imported there
    running = [asyncio.ensure_future(pool.call(deadline(), nap, 0.5)) for _ in range(2)]
    await asyncio.sleep(0)
    began = time.perf_counter()
    with pytest.raises(Skip) as busy:
        await pool.call(deadline(), nap, 0.0)
    assert busy.value.reason is Reason.OFFLOAD_BUSY
    assert time.perf_counter() - began < 0.05
    assert await asyncio.gather(*running) == [0.5, 0.5]
    assert await pool.call(deadline(), nap, 0.0) == 0.0  # room again


async def test_a_call_past_the_budget_still_counts_until_its_process_is_done(pool: Offload) -> None:
    with pytest.raises(Skip) as late:
        await pool.call(deadline(0.05), nap, 0.4)
    assert late.value.reason is Reason.BUDGET
    assert pool.in_flight == 1
    for _ in range(200):  # the first call of this module's function imports it there
        if pool.in_flight == 0:
            break
        await asyncio.sleep(0.05)
    assert pool.in_flight == 0


async def test_a_failing_or_dying_process_is_offload_error_and_the_pool_is_made_anew(
    pool: Offload,
) -> None:
    with pytest.raises(Skip) as failed:
        await pool.call(deadline(), fail)
    assert failed.value.reason is Reason.OFFLOAD_ERROR
    assert await pool.call(deadline(), nap, 0.0) == 0.0  # a raising call breaks nothing
    with pytest.raises(Skip) as died:
        await pool.call(deadline(), die)
    assert died.value.reason is Reason.OFFLOAD_ERROR
    assert pool.pool is None and not pool.ready
    pool.failed_at = -offload.RETRY_S  # no need to wait out the retry pause here
    await started(pool)
    assert await pool.call(deadline(), nap, 0.0) == 0.0
