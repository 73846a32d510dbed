"""``rankgate serve --workers 2``: real worker processes sharing the port, one admin
port whose /metrics adds them up, a worker restarted after ``kill -9``, and a drain."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from proxy.serve.supervisor import resolve_workers
from tests.support.common import (
    TEN_ITEMS_ROUTES,
    ProxyProcess,
    fetch,
    metric,
    parse_metrics,
    seed_ten_items,
    start_app,
    ten_item_origin,
    write_config,
)


@pytest.fixture
async def workers(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> AsyncIterator[ProxyProcess]:
    seed_ten_items(redis_db, tmp_path)
    runner, origin = await start_app(ten_item_origin())
    cfg = write_config(tmp_path, origin, redis_url, TEN_ITEMS_ROUTES, "shutdown_timeout_s: 5\n")
    proc = await ProxyProcess.start(cfg, "--workers", "2")
    try:
        yield proc
    finally:
        await proc.kill()
        await runner.cleanup()


async def readyz(proc: ProxyProcess) -> tuple[int, dict[str, Any]]:
    status, _, body = await fetch(proc.admin_url("/readyz"))
    return status, orjson.loads(body)


async def scrape(proc: ProxyProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, _, body = await fetch(proc.admin_url("/metrics"))
    assert status == 200
    return parse_metrics(body.decode())


async def scrape_until(proc: ProxyProcess, done: Any, within_s: float = 10) -> Any:
    async with asyncio.timeout(within_s):
        while True:
            samples = await scrape(proc)
            if done(samples):
                return samples
            await asyncio.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_two_workers_serve_restart_and_drain(workers: ProxyProcess) -> None:
    proc = workers
    status, ready = await readyz(proc)
    assert status == 200 and ready["workers_ready"] == 2
    pids = {w["pid"] for w in ready["workers"]}
    assert len(pids) == 2 and proc.proc.pid not in pids

    # Both workers take connections (each request on a fresh connection).
    for k in range(40):
        path, user = ("/feed", {"X-User-Id": "u1"}) if k % 2 else ("/other", {})
        status, headers, _ = await fetch(proc.url(path), headers=user)
        assert status == 200
        if path == "/feed":
            assert headers["X-Rerank"].startswith("applied")
    await wait_for(lambda: len(proc.access()) >= 40)
    served_by = {line["pid"] for line in proc.access()}
    assert served_by == pids

    # One admin port: /metrics adds both workers up (the supervisor scrapes them).
    samples = await scrape_until(proc, lambda s: metric(s, "rankgate_requests_total") == 40)
    assert metric(samples, "rankgate_requests_total", route="feed", outcome="applied") == 20
    assert metric(samples, "rankgate_requests_total", route="passthrough") == 20
    assert metric(samples, "rankgate_stage_seconds_count", stage="total") == 40
    assert metric(samples, "rankgate_model_info", model="dot") == 1
    assert metric(samples, "rankgate_workers", state="ready") == 2
    assert metric(samples, "rankgate_cold_start_seconds") > 0
    # The live experiment view asks every worker and adds them up.
    status, _, body = await fetch(proc.admin_url("/admin/experiments"))
    assert status == 200, body
    live = orjson.loads(body)
    assert live["workers"] == 2
    assert sum(a["requests"] for a in live["routes"][0]["arms"]) == 20

    # kill -9 one worker: it is replaced, and its counts stay in the sums.
    victim = next(iter(pids))
    os.kill(victim, signal.SIGKILL)
    await wait_for_ready(proc, lambda w: victim not in w and len(w) == 2)
    status, ready = await readyz(proc)
    new_pids = {w["pid"] for w in ready["workers"]}
    assert victim not in new_pids and len(new_pids & pids) == 1
    for _ in range(10):
        status, _, _ = await fetch(proc.url("/other"))
        assert status == 200
    samples = await scrape_until(proc, lambda s: metric(s, "rankgate_requests_total") >= 50)
    assert metric(samples, "rankgate_requests_total") == 50
    assert metric(samples, "rankgate_worker_restarts_total") == 1
    assert metric(samples, "rankgate_model_info", model="dot") == 1
    assert any(e.get("event") == "worker-exit" for e in proc.events())

    # A reload through the one admin port reaches every worker, and so does SIGHUP.
    before = metric(samples, "rankgate_reloads_total")
    status, _, body = await fetch(proc.admin_url("/admin/reload"), method="POST")
    assert status == 200
    assert [w["status"] for w in orjson.loads(body)["workers"]] == [200, 200]
    proc.proc.send_signal(signal.SIGHUP)
    samples = await scrape_until(proc, lambda s: metric(s, "rankgate_reloads_total") >= before + 4)
    assert metric(samples, "rankgate_reloads_total") == before + 4

    # SIGTERM drains everything: the supervisor and both workers exit, status 0.
    assert await proc.stop(signal.SIGTERM) == 0
    await wait_for(lambda: not any(alive(p) for p in new_pids))


async def wait_for(condition: Any, within_s: float = 10) -> None:
    async with asyncio.timeout(within_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.05)


async def wait_for_ready(proc: ProxyProcess, pids_ok: Any, within_s: float = 20) -> None:
    async with asyncio.timeout(within_s):
        while True:
            status, ready = await readyz(proc)
            ready_pids = {w["pid"] for w in ready["workers"] if w["ready"]}
            if status == 200 and pids_ok(ready_pids):
                return
            await asyncio.sleep(0.1)


async def test_workers_drain_when_the_supervisor_is_killed(workers: ProxyProcess) -> None:
    proc = workers
    _, ready = await readyz(proc)
    pids = {w["pid"] for w in ready["workers"]}
    proc.proc.kill()  # SIGKILL: no chance to stop the workers itself
    await proc.wait()
    await wait_for(lambda: not any(running(p) for p in pids))
    assert any("supervisor is gone" in str(e.get("msg")) for e in proc.events())


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan is reaped by init, or lingers as Z here)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_zero_workers_means_one_per_cpu() -> None:
    assert resolve_workers(0) == len(os.sched_getaffinity(0))
    assert resolve_workers(3) == 3
