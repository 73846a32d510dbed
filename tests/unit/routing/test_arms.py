"""Choosing the arm over real sockets: header, cookie, query and sticky-percent
conditions, combined conditions, the control arm, Vary, and stickiness across passes and
across processes. Real origin, real Valkey, real ONNX models (a: +dot, b: -dot, so the
served order shows which model ran)."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import orjson
import pytest
import pytest_asyncio
import redis

from proxy.routing.arms import bucket
from proxy.serve.server import ProxyServer
from tests.support.common import (
    ProxyProcess,
    dot_model,
    dot_order,
    feed_body,
    feed_origin,
    running_proxy,
    seed_vectors,
    start_app,
    write_config,
)

N_ITEMS = 12
USERS = [f"user-{k}" for k in range(1000)]
SIGN = {"a": 1.0, "b": -1.0}

ROUTES = """\
models:
  a: {path: a.onnx}
  b: {path: b.onnx}
routes:
  - name: conds
    match: {path: /conds}
    model: a
    budget_ms: 30000
    experiments:
      - {name: hdr, when: {header: {X-Beta: "true"}}, model: b}
      - {name: ck, when: {cookie: {beta: "1"}}, model: b}
      - {name: qs, when: {query: {variant: b}}, model: b}
      - name: combo
        when: {header: {X-Combo: "on"}, cookie: {combo: "on"}, query: {combo: "on"}}
        model: b
      - name: combo-pct
        when: {header: {X-Combo: "pct"}, percent: 50, salt: s1}
        model: b
  - name: split
    match: {path: /split}
    model: a
    budget_ms: 30000
    experiments:
      - {name: half, when: {percent: 50, salt: s1}, model: b}
  - name: nosalt
    match: {path: /nosalt}
    model: a
    budget_ms: 30000
    experiments:
      - {name: p30, when: {percent: 30}, model: b}
  - name: control
    match: {path: /control}
    model: none
    budget_ms: 30000
    experiments:
      - {name: treated, when: {header: {X-Treat: "yes"}}, model: a}
  - name: holdout
    match: {path: /holdout}
    user: [header:X-User-Id]
    model: a
    budget_ms: 30000
    experiments:
      - {name: hold, when: {percent: 20.5, salt: h}, model: none}
"""


@dataclass(frozen=True)
class Env:
    proxy: ProxyServer
    config: Path
    users: dict[str, np.ndarray]
    items: dict[str, np.ndarray]


# One proxy for the module: the tests only read (no reloads), and seeding 1000 users and
# starting a server per test would be most of the time spent.
on_module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> AsyncIterator[Env]:
    tmp_path = tmp_path_factory.mktemp("experiments")
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    users, items = seed_vectors(client, USERS, N_ITEMS)
    dot_model(tmp_path / "a.onnx", sign=SIGN["a"])
    dot_model(tmp_path / "b.onnx", sign=SIGN["b"])
    runner, origin = await start_app(feed_origin(N_ITEMS))
    # Generous Redis timeout and budgets: these tests are about arms, and a skip (fail-open
    # on a busy CI box) would hide the arm.
    extra = f"redis: {{url: {redis_url!r}, timeout_ms: 10000}}\nlogging: {{access_log: false}}\n"
    cfg = write_config(tmp_path, origin, None, ROUTES, extra=extra)
    try:
        async with running_proxy(cfg) as proxy:
            yield Env(proxy, cfg, users, items)
    finally:
        await runner.cleanup()
        client.flushdb()
        client.close()


@dataclass(frozen=True)
class Reply:
    status: int
    rerank: str
    vary: list[str]
    body: bytes

    @property
    def ids(self) -> list[str]:
        return [it["id"] for it in orjson.loads(self.body)["items"]]


async def get(
    port: int,
    path: str,
    user: str | None = "user-1",
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
    session: aiohttp.ClientSession | None = None,
) -> Reply:
    hdrs = dict(headers or {})
    if user is not None:
        hdrs["X-User-Id"] = user
    if cookies:
        hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    own = session is None
    s = session or aiohttp.ClientSession()
    try:
        async with s.get(f"http://127.0.0.1:{port}{path}", headers=hdrs) as resp:
            vary = [t.strip() for v in resp.headers.getall("Vary", []) for t in v.split(",")]
            return Reply(resp.status, resp.headers.get("X-Rerank", ""), vary, await resp.read())
    finally:
        if own:
            await s.close()


async def get_many(port: int, path: str, users: list[str]) -> list[Reply]:
    """One request per user, 32 at a time, in the order of ``users``."""
    limit = asyncio.Semaphore(32)
    async with aiohttp.ClientSession() as s:

        async def one(user: str) -> Reply:
            async with limit:
                return await get(port, path, user, session=s)

        return await asyncio.gather(*(one(u) for u in users))


def applied(model: str, arm: str) -> str:
    return f"applied; model={model}; arm={arm}"


# -- the hash ---------------------------------------------------------------------------


def test_bucket_is_the_documented_hash() -> None:
    # sha256("salt:user"), first 8 bytes big-endian, scaled to [0, 100). Pinned values:
    # a change here reshuffles every running experiment.
    digest = hashlib.sha256(b"spring-test:user-42").digest()
    assert bucket("spring-test", "user-42") == int.from_bytes(digest[:8], "big") / 2**64 * 100
    assert digest[:8].hex() == "835536d9c3b033bc"
    assert bucket("spring-test", "user-42") == 51.30190164233574
    assert bucket("s", "") == 2.283843072565936


def test_fifty_percent_over_10000_ids() -> None:
    inside = sum(bucket("s1", f"id-{k}") < 50 for k in range(10_000))
    assert 4700 <= inside <= 5300, inside


def test_fractional_percent_and_growing_p_only_adds_users() -> None:
    ids = [f"id-{k}" for k in range(10_000)]
    at = {p: {i for i in ids if bucket("grow", i) < p} for p in (0, 0.5, 12.5, 100)}
    assert at[0] == set() and at[100] == set(ids)
    assert 30 <= len(at[0.5]) <= 70
    assert 1100 <= len(at[12.5]) <= 1400
    assert at[0.5] <= at[12.5]  # raising P keeps everyone already in


def test_same_assignments_in_another_process() -> None:
    # Nothing per process (no PYTHONHASHSEED, no state): a fresh interpreter agrees.
    code = (
        "from proxy.routing.arms import bucket\n"
        "print(''.join('1' if bucket('s1', f'user-{k}') < 50 else '0' for k in range(1000)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    ).stdout.strip()
    assert out == "".join("1" if bucket("s1", u) < 50 else "0" for u in USERS)


# -- conditions over sockets -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "cookies", "arm"),
    [
        ("/conds", {}, {}, "default"),
        ("/conds", {"X-Beta": "true"}, {}, "hdr"),
        ("/conds", {"x-beta": "true"}, {}, "hdr"),  # header names are case-insensitive
        ("/conds", {"X-Beta": "TRUE"}, {}, "default"),  # values are exact
        ("/conds", {}, {"beta": "1"}, "ck"),
        ("/conds", {}, {"beta": "0"}, "default"),
        ("/conds?variant=b", {}, {}, "qs"),
        ("/conds?variant=c", {}, {}, "default"),
        # First match wins: the header experiment comes before the cookie one.
        ("/conds?variant=b", {"X-Beta": "true"}, {"beta": "1"}, "hdr"),
    ],
)
@on_module_loop
async def test_each_condition_kind(
    env: Env, path: str, headers: dict[str, str], cookies: dict[str, str], arm: str
) -> None:
    reply = await get(env.proxy.port, path, headers=headers, cookies=cookies)
    model = "a" if arm == "default" else "b"
    assert reply.status == 200
    assert reply.rerank == applied(model, arm)
    assert reply.ids == dot_order(env.users["user-1"], env.items, SIGN[model])


@pytest.mark.parametrize(
    ("query", "header", "cookie", "arm"),
    [
        ("?combo=on", "on", "on", "combo"),
        ("", "on", "on", "default"),
        ("?combo=on", None, "on", "default"),
        ("?combo=on", "on", None, "default"),
        ("?combo=off", "on", "on", "default"),
    ],
)
@on_module_loop
async def test_combined_conditions_all_must_hold(
    env: Env, query: str, header: str | None, cookie: str | None, arm: str
) -> None:
    reply = await get(
        env.proxy.port,
        f"/conds{query}",
        headers={"X-Combo": header} if header else {},
        cookies={"combo": cookie} if cookie else {},
    )
    assert reply.rerank == applied("a" if arm == "default" else "b", arm)


@on_module_loop
async def test_header_and_percent_combined(env: Env) -> None:
    inside = next(u for u in USERS if bucket("s1", u) < 50)
    outside = next(u for u in USERS if bucket("s1", u) >= 50)
    port, pct = env.proxy.port, {"X-Combo": "pct"}
    assert (await get(port, "/conds", inside, pct)).rerank == applied("b", "combo-pct")
    assert (await get(port, "/conds", outside, pct)).rerank == applied("a", "default")
    assert (await get(port, "/conds", inside)).rerank == applied("a", "default")


@on_module_loop
async def test_percent_without_user_stays_on_default(env: Env) -> None:
    reply = await get(env.proxy.port, "/split", user=None)
    assert reply.rerank == "skipped; reason=no-user"


@on_module_loop
async def test_default_salt_is_route_and_arm(env: Env) -> None:
    replies = await get_many(env.proxy.port, "/nosalt", USERS[:200])
    for user, reply in zip(USERS[:200], replies, strict=True):
        inside = bucket("nosalt:p30", user) < 30
        assert reply.rerank == (applied("b", "p30") if inside else applied("a", "default"))


@on_module_loop
async def test_control_arm_serves_origin_bytes(env: Env) -> None:
    port = env.proxy.port
    reply = await get(port, "/control")
    assert reply.rerank == "skipped; reason=control; model=none; arm=default"
    assert reply.body == feed_body(N_ITEMS)
    treated = await get(port, "/control", headers={"X-Treat": "yes"})
    assert treated.rerank == applied("a", "treated")
    assert treated.ids == dot_order(env.users["user-1"], env.items, 1.0)


@on_module_loop
async def test_control_arm_as_percent_holdout(env: Env) -> None:
    users = USERS[:400]
    replies = await get_many(env.proxy.port, "/holdout", users)
    held = 0
    for user, reply in zip(users, replies, strict=True):
        if bucket("h", user) < 20.5:
            held += 1
            assert reply.rerank == "skipped; reason=control; model=none; arm=hold"
            assert reply.body == feed_body(N_ITEMS)
        else:
            assert reply.rerank == applied("a", "default")
    assert 60 <= held <= 105  # 20.5% of 400 is 82


@on_module_loop
async def test_vary_lists_every_input_of_the_choice(env: Env) -> None:
    port = env.proxy.port
    conds = await get(port, "/conds")
    # User sources (cookie:uid, header:X-User-Id), then every condition's header.
    assert conds.vary == ["Cookie", "X-User-Id", "X-Beta", "X-Combo"]
    # Query conditions are in the URL, which caches key on already.
    assert (await get(port, "/conds?variant=b")).vary == conds.vary
    # Same list on skipped and control answers: they are cached under the same URL.
    assert (await get(port, "/conds", user=None)).vary == conds.vary
    assert (await get(port, "/control")).vary == ["Cookie", "X-User-Id", "X-Treat"]
    # A route that reads no cookie does not vary on Cookie.
    assert (await get(port, "/holdout")).vary == ["X-User-Id"]


# -- stickiness ----------------------------------------------------------------------------


async def arms_of(port: int, users: list[str]) -> list[str]:
    replies = await get_many(port, "/split", users)
    assert all(r.status == 200 for r in replies)
    return [r.rerank for r in replies]


@on_module_loop
async def test_sticky_split_same_twice_and_in_a_second_server_process(env: Env) -> None:
    first = await arms_of(env.proxy.port, USERS)
    expected = [
        applied("b", "half") if bucket("s1", u) < 50 else applied("a", "default") for u in USERS
    ]
    assert first == expected  # what offline analysis recomputes
    assert 450 <= first.count(applied("b", "half")) <= 550
    assert await arms_of(env.proxy.port, USERS) == first
    other = await ProxyProcess.start(env.config)
    try:
        assert await arms_of(other.port, USERS) == first
    finally:
        await other.stop()
