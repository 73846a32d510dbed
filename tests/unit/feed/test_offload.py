"""The pool of re-rank processes: bounded, failing open with its own reasons, made anew
when a process dies. Real processes (spawned), no stand-ins."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import numpy as np
import pytest

from plugins.registry import load
from plugins.run import RoutePlugins
from plugins.spec import PluginSpec
from proxy.feed import offload, pooled
from proxy.feed.offload import Offload
from proxy.outcome.errors import Reason, Skip
from proxy.routing.reads import build, plan


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def fail() -> None:
    raise ValueError("no")


def die() -> None:
    os._exit(3)


ITEMS = build(("items",), ("id",), ())
RAW = b'{"a": 1, "items": [ {"id": "x", "n": 123456789012345678901234},{"id": 2} ] }'
XS = (["x", "2"], ("x", "2"))  # the ids, and their tuple (no id is missing)
SWAPPED = b'{"a": 1, "items": [ {"id": 2},{"id": "x", "n": 123456789012345678901234} ] }'


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
    ticket = pool.open()
    assert await pool.find(ticket, deadline(), RAW, ITEMS) == XS
    assert await pool.join(ticket, deadline(), np.array([1, 0])) == SWAPPED
    ticket.close()
    again = pool.open()  # the same page: the same id list and tuple, not built again
    found = await pool.find(again, deadline(), RAW, ITEMS)
    assert found is not None and found == XS
    first = pool.pages[next(iter(pool.pages))]
    assert found[0] is first[0] and found[1] is first[1]
    again.close()
    nulls = pool.open()  # an item without an id: no tuple (the lookup skips it)
    assert await pool.find(nulls, deadline(), RAW.replace(b'"id": 2', b'"no": 2'), ITEMS) == (
        ["x", None],
        None,
    )
    nulls.close()
    other = pool.open()
    assert await pool.find(other, deadline(), b"[1]", ITEMS) is None
    assert await pool.call(other, deadline(), pooled.held) == []  # nothing kept
    other.close()
    assert pool.in_flight == 0


async def test_both_trips_of_a_feed_reach_its_own_process() -> None:
    pool = Offload(2, 10)
    try:
        await started(pool)
        one, two = pool.open(), pool.open()
        assert one.worker is not two.worker  # the least busy first
        pids = [await pool.call(t, deadline(), os.getpid) for t in (one, two)]
        assert pids[0] != pids[1]
        other = RAW.replace(b'"x"', b'"y"')
        assert await pool.find(one, deadline(), RAW, ITEMS) == XS
        assert await pool.find(two, deadline(), other, ITEMS) == (["y", "2"], ("y", "2"))
        assert await pool.join(two, deadline(), np.array([1, 0])) == SWAPPED.replace(b'"x"', b'"y"')
        assert await pool.join(one, deadline(), np.array([1, 0])) == SWAPPED
    finally:
        pool.close()


async def test_a_full_pool_fails_open_at_once_and_never_queues(pool: Offload) -> None:
    tickets = [pool.open() for _ in range(offload.PER_WORKER)]
    running = [asyncio.ensure_future(pool.call(t, deadline(), nap, 0.3)) for t in tickets]
    await asyncio.sleep(0)
    began = time.perf_counter()
    with pytest.raises(Skip) as busy:
        pool.open()
    assert busy.value.reason is Reason.OFFLOAD_BUSY
    assert time.perf_counter() - began < 0.05
    assert await asyncio.gather(*running) == [0.3] * offload.PER_WORKER
    with pytest.raises(Skip):  # a feed between its trips holds its place
        pool.open()
    tickets[0].close()
    ticket = pool.open()  # room again
    assert await pool.call(ticket, deadline(), nap, 0.0) == 0.0


async def test_a_call_past_the_budget_still_counts_until_its_process_is_done(pool: Offload) -> None:
    ticket = pool.open()
    with pytest.raises(Skip) as late:
        await pool.call(ticket, deadline(0.05), nap, 0.4)
    assert late.value.reason is Reason.BUDGET
    ticket.close()
    assert pool.in_flight == 1
    for _ in range(200):  # the first call of this module's function imports it there
        if pool.in_flight == 0:
            break
        await asyncio.sleep(0.05)
    assert pool.in_flight == 0


async def test_a_feed_given_up_between_its_trips_is_forgotten_there(pool: Offload) -> None:
    gone = pool.open()
    assert await pool.find(gone, deadline(), RAW, ITEMS) == XS
    gone.close()  # e.g. its user was unknown: no second trip
    assert pool.in_flight == 0
    ticket = pool.open()
    assert await pool.find(ticket, deadline(), RAW, ITEMS) == XS
    assert await pool.call(ticket, deadline(), pooled.held) == [ticket.key]
    with pytest.raises(Skip) as lost:  # a body no longer held is no body to splice
        await pool.call(ticket, deadline(), pooled.join, gone.key, np.array([1, 0]))
    assert lost.value.reason is Reason.OFFLOAD_ERROR
    assert await pool.join(ticket, deadline(), np.array([1, 0])) == SWAPPED


async def test_a_process_killed_between_the_two_trips_is_offload_error(pool: Offload) -> None:
    ticket = pool.open()
    assert await pool.find(ticket, deadline(), RAW, ITEMS) == XS
    pid = await pool.call(ticket, deadline(), os.getpid)
    assert isinstance(pid, int) and pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(Skip) as died:
        await pool.join(ticket, deadline(), np.array([1, 0]))
    assert died.value.reason is Reason.OFFLOAD_ERROR
    assert not pool.ready and pool.procs == []
    ticket.close()
    with pytest.raises(Skip) as down:  # until it is made anew, and then fresh
        pool.open()
    assert down.value.reason is Reason.OFFLOAD_ERROR
    pool.failed_at = -offload.RETRY_S
    await started(pool)
    fresh = pool.open()
    assert await pool.call(fresh, deadline(), pooled.held) == []


async def test_a_failing_or_dying_process_is_offload_error_and_the_pool_is_made_anew(
    pool: Offload,
) -> None:
    ticket = pool.open()
    with pytest.raises(Skip) as failed:
        await pool.call(ticket, deadline(), fail)
    assert failed.value.reason is Reason.OFFLOAD_ERROR
    assert await pool.call(ticket, deadline(), nap, 0.0) == 0.0  # a raising call breaks nothing
    with pytest.raises(Skip) as died:
        await pool.call(ticket, deadline(), die)
    assert died.value.reason is Reason.OFFLOAD_ERROR
    assert pool.procs == [] and not pool.ready
    with pytest.raises(Skip) as stale:  # a place in the old pool leads nowhere
        await pool.call(ticket, deadline(), nap, 0.0)
    assert stale.value.reason is Reason.OFFLOAD_ERROR
    pool.failed_at = -offload.RETRY_S  # no need to wait out the retry pause here
    await started(pool)
    assert await pool.call(pool.open(), deadline(), nap, 0.0) == 0.0


async def test_a_body_past_a_places_shared_memory_takes_the_pipe(
    pool: Offload, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offload, "PAGE_IDS", 12001)  # room for the big page's ids alone
    ticket = pool.open()
    shm = ticket.worker.slots[ticket.place]
    assert shm is not None  # /dev/shm here; a full one leaves the place to the pipe
    items = b",".join(b'{"id": "i%d", "pad": "%s"}' % (k, b"p" * 200) for k in range(12000))
    big = b'{"items": [' + items + b"]}"
    assert len(big) > offload.SLOT_BYTES
    found = await pool.find(ticket, deadline(), big, ITEMS)
    assert found is not None and len(found[0]) == 12000 and found[0][-1] == "i11999"
    out = await pool.join(ticket, deadline(), np.arange(12000)[::-1].copy())
    assert out.startswith(b'{"items": [{"id": "i11999", "pad"') and len(out) == len(big)
    ticket.close()
    small = pool.open()
    assert await pool.find(small, deadline(), RAW, ITEMS) == XS  # by the slot
    assert await pool.join(small, deadline(), np.array([1, 0])) == SWAPPED
    assert pool.page_ids == 2 and len(pool.pages) == 1  # the big page made room (PAGE_IDS)
    names = [s.name for w in pool.procs for s in w.slots if s is not None]
    pool.close()
    assert names and not set(names) & set(os.listdir("/dev/shm"))  # unlinked
