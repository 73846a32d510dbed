"""The guardrails' shared counts: the Lua script on a real Valkey adds up what the
in-process store adds up (per-user moments, the first click per exposure, the cap of
exposures per user), trips are written once, and resuming starts a new test."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from proxy.config.routes import Route
from proxy.experiments.guardrails import Guard
from proxy.experiments.guardstore import Batch, MemoryGuardStore, RedisGuardStore
from proxy.outcome.errors import Outcome, Reason
from proxy.outcome.record import RequestRecord


@pytest.fixture
async def store(redis_url: str, redis_db: redis.Redis) -> AsyncIterator[RedisGuardStore]:
    s = RedisGuardStore(redis_url)
    try:
        yield s
    finally:
        await s.close()


def batches(seed: int) -> list[Batch]:
    rng = random.Random(seed)
    out, ids = [], []
    for b in range(6):
        batch = Batch()
        for k in range(200):
            rid = f"r{b}-{k}"
            arm = rng.choice(["beta:0", "default:0"])
            batch.exposures.append((rid, arm, f"u{rng.randrange(40)}", 8))
            ids.append(rid)
            batch.add(arm, "requests")
        # Clicks on earlier exposures, some twice, some on ids nobody served.
        batch.clicks = rng.sample(ids, 60) + rng.sample(ids, 20) + ["nobody"]
        out.append(batch)
    return out


async def test_redis_counts_what_memory_counts(store: RedisGuardStore) -> None:
    memory = MemoryGuardStore()
    for batch in batches(3):
        left_redis = await store.add("feed", batch, 60)
        left_memory = await memory.add("feed", batch, 60)
        assert sorted(left_redis) == sorted(left_memory)
    for arm in ("beta:0", "default:0"):
        have = await store.counts("feed", arm)
        assert have == await memory.counts("feed", arm)
        assert have["n"] <= 40 * 8 and have["units"] <= 40  # the cap held
        assert 0 < have["x"] <= have["n"]


async def test_a_click_before_its_exposure_comes_back_unmatched(store: RedisGuardStore) -> None:
    assert await store.add("feed", Batch(clicks=["r1"]), 60) == ["r1"]
    await store.add("feed", Batch(exposures=[("r1", "beta:0", "u1", 50)]), 60)
    assert await store.add("feed", Batch(clicks=["r1"]), 60) == []
    assert (await store.counts("feed", "beta:0"))["x"] == 1


async def test_a_trip_is_written_once_and_resume_starts_a_new_test(
    store: RedisGuardStore,
) -> None:
    assert await store.trip("feed", "beta", {"guardrail": "ctr"})
    assert not await store.trip("feed", "beta", {"guardrail": "not_applied"})
    trips, epochs = await store.state()
    assert trips == {"feed beta": {"guardrail": "ctr"}} and epochs == {}
    assert await store.resume("feed", "beta") == (True, 1)
    assert await store.resume("feed", "beta") == (False, 2)
    assert await store.state() == ({}, {"feed beta": 2})


ROUTE = Route.model_validate(
    {
        "name": "feed",
        "match": {"path": "/feed"},
        "model": "m1",
        "experiments": [
            {
                "name": "beta",
                "when": {"percent": 50},
                "model": "m2",
                "guardrails": {"not_applied": "+5pp", "min_requests": 20},
            }
        ],
    }
)


def record(arm: str, reason: Reason | None) -> RequestRecord:
    rec = RequestRecord("GET", "/feed", route="feed", arm=arm, user_id="u")
    rec.outcome = Outcome.SKIPPED if reason else Outcome.APPLIED
    rec.reason = reason
    rec.timings.update(total=0.004, origin=0.003)
    return rec


async def test_a_failing_arm_trips_once_stays_tripped_and_resumes() -> None:
    store = MemoryGuardStore()
    guard, other = Guard(store, lambda: [ROUTE]), Guard(store, lambda: [ROUTE])
    await guard.poll()
    for _ in range(60):
        guard.observe(record("beta", Reason.MODEL_ERROR))
        guard.observe(record("default", None))
        guard.observe(record("beta", Reason.NO_USER))  # not the arm's own reason
    await guard.tick()
    assert guard.moved("feed", "beta") and not guard.moved("feed", "default")
    assert guard.trip_counts == {("feed", "beta", "not_applied"): 1}
    await other.tick()  # the other process sees it, and does not count it again
    assert other.moved("feed", "beta") and other.trip_counts == {}
    (entry,) = other.describe()
    assert entry["state"] == "tripped" and entry["trip"]["figures"]["arm_pct"] == 50.0
    for _ in range(100):  # healthy now: a tripped arm stays tripped
        guard.observe(record("default", None))
    await guard.tick()
    assert guard.moved("feed", "beta")
    await store.resume("feed", "beta")
    await guard.tick()
    assert not guard.moved("feed", "beta") and guard.epochs == {"feed beta": 1}
    assert guard.describe()[0]["checks"] == []  # the last reading was the old test's
    await guard.check()
    assert guard.describe()[0]["checks"][0]["waiting"] == "min_requests"  # a new test


async def test_the_store_works_on_a_cluster(cluster: Any) -> None:
    store = RedisGuardStore(cluster.url, cluster=True)
    try:
        for route in ("feed", "other-feed", "third"):  # keys of routes on several nodes
            batch = Batch(exposures=[("r1", "beta:0", "u1", 50)])
            batch.add("beta:0", "requests", 3)
            assert await store.add(route, batch, 60) == []
            assert await store.add(route, Batch(clicks=["r1"]), 60) == []
            have = await store.counts(route, "beta:0")
            assert have["requests"] == 3 and have["n"] == 1 and have["x"] == 1
        assert await store.trip("feed", "beta", {"guardrail": "ctr"})
        assert await store.resume("feed", "beta") == (True, 1)
        assert await store.put_bandit("feed versions", 7, {"period": 7})
        assert await store.bandits() == {"feed versions": {"period": 7}}
    finally:
        await store.close()


async def test_redis_gone_keeps_the_trips_and_the_loop() -> None:
    import asyncio

    from tests.support.common import start_valkey

    server = start_valkey()
    store = RedisGuardStore(server.connection_url, timeout_s=0.3)
    guard = Guard(store, lambda: [ROUTE])
    task = None
    try:
        await store.trip("feed", "beta", {"guardrail": "not_applied"})
        await guard.poll()
        assert guard.moved("feed", "beta")
        server.stop()
        task = asyncio.create_task(guard.run())
        for _ in range(50):
            guard.observe(record("beta", None))
            await asyncio.sleep(0.05)
        assert guard.errors >= 2 and not task.done()  # still trying, every 0.5 s
        assert guard.moved("feed", "beta")  # what was known stays in force
    finally:
        if task is not None:
            task.cancel()
        await store.close()
        with contextlib.suppress(Exception):  # stopped above unless the test failed first
            server.stop()
