"""Guardrails against real traffic: ``rankgate serve --workers 2`` on one Valkey, a real
origin, real clicks through ``POST /_rankgate/events``.

- A beta arm whose model fails on every request (its scores are NaN) is moved to the
  default arm on both workers within 2 s of the trip, stays moved after a restart, and
  comes back with ``rankgate experiments resume``.
- A beta whose users click half as much trips the CTR guardrail once the test is sure,
  while an A/A pair on another route, run over the same traffic for as long, does not.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest
import redis

from proxy.routing.arms import bucket
from tests.support.common import (
    DIM,
    ProxyProcess,
    dot_model,
    feed_origin,
    fetch,
    metric,
    parse_metrics,
    start_app,
    store_vectors,
    wait_until,
    write_config,
)

SCHEMA = orjson.loads(
    (Path(__file__).resolve().parents[2] / "docs/exposures.schema.json").read_bytes()
)
TOKEN_KEY = "g" * 32
USERS = [f"u{k}" for k in range(300)]
# A drain bounded well inside ProxyProcess.stop's 20 s (the default 15 s + the 5 s
# watchdog met it exactly once in a loaded CI run, at the end of a two-worker test).
EXPOSURES = """\
exposures: {enabled: true, sink: redis, flush_interval_ms: 20, max_items: 10}
events: {enabled: true, max_per_id: 3}
shutdown_timeout_s: 5
"""


def seed(client: redis.Redis, tmp: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(5)
    users = {u: rng.standard_normal(DIM).astype("<f4") for u in USERS}
    items = {f"i{k}": rng.standard_normal(DIM).astype("<f4") for k in range(10)}
    store_vectors(client, users, items)
    dot_model(tmp / "dot.onnx")
    dot_model(tmp / "nan.onnx", sign=float("nan"))  # loads and runs; scores are NaN


def in_arm(salt: str, user: str) -> bool:
    return bucket(salt, user) < 50


@pytest.fixture
async def origin() -> AsyncIterator[str]:
    runner, url = await start_app(feed_origin(10))
    try:
        yield url
    finally:
        await runner.cleanup()


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", "experiments", *args, "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def get(s: aiohttp.ClientSession, url: str, user: str) -> tuple[str, str | None, bytes]:
    async with s.get(url, headers={"X-User-Id": user}) as resp:
        return resp.headers["X-Rerank"], resp.headers.get("X-Rankgate-Id"), await resp.read()


async def arms_seen(proc: ProxyProcess, users: list[str], n: int) -> list[str]:
    """X-Rerank of ``n`` requests of ``users``, each on a fresh connection (so both
    workers answer some)."""
    out = []
    for k in range(n):
        _, headers, _ = await fetch(proc.url("/feed"), headers={"X-User-Id": users[k % len(users)]})
        out.append(headers["X-Rerank"])
    return out


FAILING = """\
models: {dot: {path: dot.onnx}, nan: {path: nan.onnx}}
routes:
  - name: feed
    match: {path: /feed}
    model: dot
    budget_ms: 2000
    experiments:
      - name: beta
        when: {percent: 50, salt: fb}
        model: nan
        guardrails: {not_applied: +5pp, min_requests: 40}
"""


async def test_a_failing_model_is_moved_on_both_workers_until_resumed(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis, origin: str
) -> None:
    seed(redis_db, tmp_path)
    cfg = write_config(tmp_path, origin, redis_url, FAILING, EXPOSURES)
    env = {"RANKGATE_TOKEN_KEY": TOKEN_KEY}
    beta = [u for u in USERS if in_arm("fb", u)]
    proc = await ProxyProcess.start(cfg, "--workers", "2", env=env)
    try:
        seen = await arms_seen(proc, USERS, 40)
        assert any(h == "skipped; reason=model-error" for h in seen), seen
        async with asyncio.timeout(30):
            while not redis_db.hexists("rankgate:guardrails", "feed beta"):
                await arms_seen(proc, USERS, 20)
        trip = orjson.loads(redis_db.hget("rankgate:guardrails", "feed beta"))
        assert trip["guardrail"] == "not_applied" and trip["figures"]["arm_pct"] == 100.0
        # Within 2 s of the trip, every process serves beta's users from the default arm.
        async with asyncio.timeout(5):
            while set(await arms_seen(proc, beta, 10)) != {"applied; model=dot; arm=default"}:
                pass
        print(f"moved {time.time() - trip['at']:.2f} s after the trip")
        await asyncio.sleep(max(0.0, trip["at"] + 2.0 - time.time()))
        after = await arms_seen(proc, beta, 60)
        assert set(after) == {"applied; model=dot; arm=default"}, after
        await proc.wait_log(lambda e: "guardrail tripped" in str(e.get("msg", "")))
        _, _, text = await fetch(proc.admin_url("/metrics"))
        samples = parse_metrics(text.decode())
        labels = {"route": "feed", "arm": "beta", "guardrail": "not_applied"}
        assert metric(samples, "rankgate_guardrail_trips_total", **labels) == 1
        _, _, body = await fetch(proc.admin_url("/admin/experiments"))
        (entry,) = orjson.loads(body)["guardrails"]
        assert entry["state"] == "tripped" and entry["trip"]["guardrail"] == "not_applied"
    finally:
        await proc.stop()
    records = [orjson.loads(f[b"r"]) for _, f in redis_db.xrange("rankgate:exposures")]
    moved = [r for r in records if r.get("guardrail") == "beta"]
    assert moved and all(r["arm"] == "default" and r["outcome"] == "applied" for r in moved)
    report = cli(cfg, "report")
    assert "guardrail: feed beta tripped" in report.stdout, report
    status = cli(cfg, "status")
    assert "feed beta: tripped" in status.stdout, status
    assert "rankgate experiments resume feed beta" in status.stdout

    proc = await ProxyProcess.start(cfg, "--workers", "2", env=env)
    try:  # a restart: moved from its first request on
        assert set(await arms_seen(proc, beta, 20)) == {"applied; model=dot; arm=default"}
        # A reload of routes.yaml (another budget): still moved.
        (tmp_path / "routes.yaml").write_text(FAILING.replace("budget_ms: 2000", "budget_ms: 1999"))
        _, _, body = await fetch(proc.admin_url("/admin/reload"), method="POST")
        assert orjson.loads(body)["result"] == "ok", body
        assert set(await arms_seen(proc, beta, 20)) == {"applied; model=dot; arm=default"}
        resumed = cli(cfg, "resume", "feed", "beta")
        assert resumed.returncode == 0 and "resumed (test 1)" in resumed.stdout, resumed
        await asyncio.sleep(1.5)
        back = await arms_seen(proc, beta, 20)
        assert back.count("skipped; reason=model-error") >= 18, back  # then it trips again
    finally:
        await proc.stop()


CTR = """\
models: {dot: {path: dot.onnx}}
routes:
  - name: feed
    match: {path: /feed}
    model: dot
    budget_ms: 2000
    guardrails: {ctr: -10%, min_units: 50}
    experiments:
      - {name: beta, when: {percent: 50, salt: ctr}, model: dot}
  - name: twin
    match: {path: /twin}
    model: dot
    budget_ms: 2000
    guardrails: {ctr: -10%, min_units: 50}
    experiments:
      - {name: twin, when: {percent: 50, salt: ctr}, model: dot}
"""


async def user_session(
    base: str, users: list[str], propensity: dict[str, float], stop: asyncio.Event, seen: list[int]
) -> None:
    """One client connection: users ask for /feed and /twin in turn, and click on one
    served item with their propensity (halved on /feed's beta arm)."""
    rng = random.Random(hash(users[0]))
    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            user = rng.choice(users)
            for path in ("/feed", "/twin"):
                rerank, token, body = await get(s, base + path, user)
                p = propensity[user]
                if path == "/feed" and rerank.endswith("arm=beta"):
                    p /= 2
                if token and rng.random() < p:
                    item = orjson.loads(body)["items"][rng.randrange(10)]["id"]
                    event = {"id": token, "item": item, "type": "click"}
                    async with s.post(base + "/_rankgate/events", json=event) as resp:
                        assert resp.status == 202
            seen[0] += 1


async def test_half_the_clicks_trips_and_an_aa_pair_does_not(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis, origin: str
) -> None:
    seed(redis_db, tmp_path)
    cfg = write_config(tmp_path, origin, redis_url, CTR, EXPOSURES)
    rng = random.Random(11)
    propensity = {u: rng.betavariate(2, 5) for u in USERS}
    proc = await ProxyProcess.start(cfg, "--workers", "2", env={"RANKGATE_TOKEN_KEY": TOKEN_KEY})
    stop, seen = asyncio.Event(), [0]
    clients = [
        asyncio.create_task(user_session(proc.url(""), USERS[k::8], propensity, stop, seen))
        for k in range(8)
    ]
    try:
        started = time.monotonic()
        await wait_until(lambda: redis_db.hexists("rankgate:guardrails", "feed beta"), 120, 0.2)
        tripped_after, tripped_s = seen[0], time.monotonic() - started
        trip = orjson.loads(redis_db.hget("rankgate:guardrails", "feed beta"))
        assert trip["guardrail"] == "ctr" and trip["figures"]["upper_pct"] < -10
        # The A/A pair: three times as long (and 3,000 rounds at least), on the same users.
        aa_rounds = max(3 * tripped_after, 3000)
        await wait_until(lambda: seen[0] >= aa_rounds, 180, 0.2)
        await asyncio.sleep(1.5)  # its last counts flushed and checked
        assert not redis_db.hexists("rankgate:guardrails", "twin twin")
        _, _, body = await fetch(proc.admin_url("/admin/experiments"))
        twin = [g for g in orjson.loads(body)["guardrails"] if g["route"] == "twin"]
        assert twin[0]["state"] == "watching" and twin[0]["checks"][0]["units"] >= 50
        print(f"tripped after {tripped_after} rounds ({tripped_s:.1f} s): {trip['figures']}")
        print(f"A/A after {seen[0]} rounds: {twin[0]['checks'][0]}")
    finally:
        stop.set()
        await asyncio.gather(*clients, return_exceptions=True)
        await proc.stop()


BANDIT = """\
models: {v1: {path: dot.onnx}, v2: {path: dot.onnx}, v3: {path: dot.onnx}}
routes:
  - name: feed
    match: {path: /feed}
    model: v1
    budget_ms: 2000
    experiments:
      - name: versions
        when: {percent: 100}
        bandit: {models: [v1, v2, v3], update_s: 1, min_share: 0.05, burn_in: 150}
"""
RATES = {"v1": 0.05, "v2": 0.10, "v3": 0.20}


async def bandit_session(
    base: str, users: list[str], stop: asyncio.Event, served: list[tuple[float, str]]
) -> None:
    """Users whose click rate depends only on the model that served them."""
    rng = random.Random(hash(users[0]))
    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            rerank, token, body = await get(s, base + "/feed", rng.choice(users))
            model = rerank.split("model=")[1].split(";")[0]
            served.append((time.monotonic(), model))
            if token and rng.random() < RATES[model]:
                item = orjson.loads(body)["items"][0]["id"]
                event = {"id": token, "item": item, "type": "click"}
                async with s.post(base + "/_rankgate/events", json=event) as resp:
                    assert resp.status == 202


async def test_a_bandit_moves_two_workers_to_the_best_model(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis, origin: str
) -> None:
    seed(redis_db, tmp_path)
    cfg = write_config(tmp_path, origin, redis_url, BANDIT, EXPOSURES)
    proc = await ProxyProcess.start(cfg, "--workers", "2", env={"RANKGATE_TOKEN_KEY": TOKEN_KEY})
    stop, served = asyncio.Event(), []
    clients = [
        asyncio.create_task(bandit_session(proc.url(""), USERS[k::6], stop, served))
        for k in range(6)
    ]
    try:
        # Burn-in: 150 exposures per model; then the weights follow the clicks.
        async def bandit() -> dict[str, Any]:
            _, _, body = await fetch(proc.admin_url("/admin/experiments"))
            found: list[dict[str, Any]] = orjson.loads(body)["bandits"]
            return found[0] if found else {}

        async def moved() -> bool:
            return (await bandit()).get("weights", [0, 0, 0])[2] >= 0.70

        await wait_until(moved, 120, 0.2)
        moved_at = len(served)
        await asyncio.sleep(1.0)  # every worker's poll has the new weights
        start = len(served)
        await wait_until(lambda: len(served) >= start + 1000, 120, 0.2)
        last = served[start : start + 1000]
        share = sum(m == "v3" for _, m in last) / len(last)
        state = await bandit()
        weights = state["weights"]
        assert share >= 0.70, (share, state["history"])
        assert weights[2] >= 0.70 and min(weights) >= 0.05 - 1e-9
        assert {p["model"] for p in state["posteriors"]} == set(RATES)
        for model in RATES:  # every model keeps its floor
            assert any(m == model for _, m in last), model
        print(f"weights moved after {moved_at} exposures; then v3 served {share:.2f}")
    finally:
        stop.set()
        await asyncio.gather(*clients, return_exceptions=True)
        await proc.stop()
    # Each model's record names the period it was picked in and that period's weights.
    records = [orjson.loads(f[b"r"]) for _, f in redis_db.xrange("rankgate:exposures")]
    exposures = [r for r in records if r["type"] == "exposure"]
    valid = jsonschema.validators.validator_for(SCHEMA)(SCHEMA)
    for record in exposures:
        valid.validate(record)
        tag = record["bandit"]
        assert record["arm"] == f"versions.{record['model']}" and tag["arm"] == "versions"
        assert tag["models"] == list(RATES) and abs(sum(tag["weights"]) - 1) < 1e-3
    assert len({r["bandit"]["period"] for r in exposures}) >= 3
    report = cli(cfg, "report", "--json")  # one run of the CLI (the text: tests/unit/cli)
    (route,) = orjson.loads(report.stdout)["routes"]
    (bandit,) = route["bandits"]
    assert "versions" not in {a["arm"] for a in route["arms"]}  # every user got a model
    assert bandit["arm"] == "versions" and len(bandit["periods"]) >= 3
    # Per period, each model's users against that period's weights: a fair assignment.
    assert bandit["srm"]["p_value"] is not None and not bandit["srm"]["alarm"], bandit["srm"]
    print(len(bandit["periods"]), "periods; sample ratio by period p =", bandit["srm"]["p_value"])
    v1, v3 = bandit["results"][0], bandit["results"][2]
    assert v3["weighted_ctr"] > v1["weighted_ctr"] and v1["decision"] is None
