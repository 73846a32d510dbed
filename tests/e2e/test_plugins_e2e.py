"""Plugins end to end: real origin, real Valkey, real ONNX model, the proxy over sockets.

The plugin classes below are loaded by the proxy as ``tests.e2e.test_plugins_e2e:NAME``
(``module:Class``), exactly as a third-party plugin would be.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import numpy as np
import orjson
import pytest
import redis
from aiohttp import web

from plugins import FeedContext, ItemArray
from proxy.outcome.record import RequestRecord
from proxy.serve.server import ProxyServer
from tests.support.common import (
    DIM,
    dot_model,
    proxy_get,
    running_proxy,
    start_app,
    store_vectors,
    write_config,
)

RNG = np.random.default_rng(11)
N = 12
ITEM_VECS = {f"i{k}": RNG.standard_normal(DIM).astype("<f4") for k in range(N)}
USER_VECS = {f"u{k}": RNG.standard_normal(DIM).astype("<f4") for k in range(3)}
SECRET = "e2e-secret-" * 4
HERE = "tests.e2e.test_plugins_e2e"


class Raiser:
    def rerank(self, ctx: FeedContext) -> None:
        raise RuntimeError("boom")


class UserRaiser:
    def resolve_user(self, ctx: FeedContext) -> str | None:
        raise KeyError("no such session")


class Sleeper:
    def rerank(self, ctx: FeedContext) -> None:
        time.sleep(0.15)  # blocks the loop on purpose: a plugin over its route's budget


class TwoArrays:
    """Items in two arrays (``top`` and ``more``), each re-ordered on its own."""

    def find_items(self, ctx: FeedContext) -> list[ItemArray]:
        return [
            ItemArray(arr, [it["id"] for it in arr]) for arr in (ctx.doc["top"], ctx.doc["more"])
        ]


def feed_items() -> list[dict[str, Any]]:
    return [
        {
            "id": f"i{k}",
            "sponsored": k == 2,
            "fresh": round(k / N, 3),
            "status": "hidden" if k == 9 else "ok",
        }
        for k in range(N)
    ]


ROUTES = f"""\
models:
  dot: {{path: dot.onnx}}
routes:
  - name: plain
    match: {{path: /api/feed}}
    model: dot
    budget_ms: 200
  - name: rules
    match: {{path: /api/rules}}
    model: dot
    budget_ms: 200
    user: [header:X-User-Id]
    plugins:
      - {{use: pin, field: sponsored}}
      - {{use: filter, redis_set: "seen:{{user}}"}}
      - {{use: filter, cookie: seen}}
      - {{use: filter, field: status, equals: hidden}}
      - {{use: boost, field: fresh, weight: 3.0}}
  - name: diverse
    match: {{path: /api/diverse}}
    model: dot
    budget_ms: 200
    plugins: [{{use: diversify, lambda: 0.5}}]
  - name: raise
    match: {{path: /api/raise}}
    model: dot
    plugins: [{{use: pin, field: sponsored}}, {{use: "{HERE}:Raiser"}}]
  - name: user-raise
    match: {{path: /api/user-raise}}
    model: dot
    plugins: [{{use: "{HERE}:UserRaiser"}}]
  - name: slow-plugin
    match: {{path: /api/slow-plugin}}
    model: dot
    budget_ms: 50
    plugins: [{{use: "{HERE}:Sleeper"}}]
  - name: jwt
    match: {{path: /api/jwt}}
    model: dot
    budget_ms: 200
    plugins: [{{use: jwt, algorithm: HS256, secret: "{SECRET}"}}]
  - name: gql
    match: {{path: /api/gql}}
    model: dot
    budget_ms: 200
    plugins: [{{use: "plugins.examples:GraphQLEdges", connection: data.viewer.feed}}]
  - name: gql-missing
    match: {{path: /api/gql-missing}}
    model: dot
    plugins: [{{use: "plugins.examples:GraphQLEdges", connection: data.viewer.feed}}]
  - name: two
    match: {{path: /api/two}}
    model: dot
    budget_ms: 200
    plugins: [{{use: "{HERE}:TwoArrays"}}]
  - name: annotated
    match: {{path: /api/annotated}}
    model: dot
    budget_ms: 200
    plugins: [{{use: boost, field: fresh, weight: 3.0}}, {{use: annotate}}]
"""


def origin_app(state: dict[str, Any]) -> web.Application:
    async def feed(request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps({"items": state["items"], "page": 1}),
            content_type="application/json",
        )

    async def gql(request: web.Request) -> web.Response:
        edges = [{"cursor": f"c{k}", "node": it} for k, it in enumerate(state["items"])]
        return web.json_response({"data": {"viewer": {"feed": {"edges": edges}}}})

    async def two(request: web.Request) -> web.Response:
        items = state["items"]
        return web.json_response({"top": items[:4], "more": items[4:]})

    app = web.Application()
    for path in (
        *("feed", "rules", "diverse", "raise", "user-raise", "slow-plugin", "jwt"),
        *("gql-missing", "annotated"),
    ):
        app.router.add_get(f"/api/{path}", feed)
    app.router.add_get("/api/gql", gql)
    app.router.add_get("/api/two", two)
    return app


Env = tuple[ProxyServer, dict[str, Any], list[RequestRecord], Path]


@pytest.fixture
async def env(tmp_path: Path, redis_url: str, redis_db: redis.Redis) -> AsyncIterator[Env]:
    store_vectors(redis_db, USER_VECS, ITEM_VECS)
    dot_model(tmp_path / "dot.onnx")
    state: dict[str, Any] = {"items": feed_items()}
    runner, origin = await start_app(origin_app(state))
    cfg = write_config(tmp_path, origin, redis_url, ROUTES)
    # These tests are about plugins, not Redis latency: a shared CI box may stall a
    # first connection past support's 50 ms, which would read as a plugin bug.
    cfg.write_text(cfg.read_text().replace("timeout_ms: 50", "timeout_ms: 1000"))
    records: list[RequestRecord] = []
    async with running_proxy(cfg) as proxy:
        proxy.runtime.observers.append(records.append)
        yield proxy, state, records, tmp_path
    await runner.cleanup()


def scores_for(user: str, ids: list[str]) -> np.ndarray:
    """Independent of the proxy: the dot model is <user, item>."""
    return np.array([float(USER_VECS[user] @ ITEM_VECS[i]) for i in ids])


def by_score(user: str, ids: list[str], extra: dict[str, float] | None = None) -> list[str]:
    s = scores_for(user, ids) + np.array([(extra or {}).get(i, 0.0) for i in ids])
    return [ids[j] for j in sorted(range(len(ids)), key=lambda j: -s[j])]


def ids_in(body: bytes) -> list[str]:
    return [it["id"] for it in orjson.loads(body)["items"]]


async def test_route_without_plugins_is_unchanged(env: Env) -> None:
    proxy, state, records, _ = env
    resp, body = await proxy_get(proxy, "/api/feed")
    assert resp.headers["X-Rerank"] == "applied; model=dot; arm=default"
    ids = [it["id"] for it in state["items"]]
    assert ids_in(body) == by_score("u1", ids)
    assert "plugin" not in resp.headers["Server-Timing"]
    assert not any(k.startswith("plugin:") for k in records[-1].timings)


async def test_pin_filter_boost_end_to_end(env: Env, redis_db: redis.Redis) -> None:
    proxy, state, records, _ = env
    redis_db.sadd("seen:u1", "i3", "i7", "not-in-feed")
    resp, body = await proxy_get(proxy, "/api/rules", cookies={"seen": "i5"})
    assert resp.headers["X-Rerank"] == "applied; model=dot; arm=default"
    got = ids_in(body)

    # Independently: drop i3, i7 (Redis set), i5 (cookie), i9 (status); i2 keeps index 2;
    # the rest by <user, item> + 3 * fresh.
    gone = {"i3", "i7", "i5", "i9"}
    ranked = [i for i in (f"i{k}" for k in range(N)) if i not in gone and i != "i2"]
    fresh = {it["id"]: 3.0 * it["fresh"] for it in state["items"]}
    expected = by_score("u1", ranked, fresh)
    expected.insert(2, "i2")
    assert got == expected

    timing = resp.headers["Server-Timing"]
    for name in ("pin", "filter", "boost"):
        assert f"plugin-{name};dur=" in timing
    assert {"plugin:pin", "plugin:filter", "plugin:boost"} <= set(records[-1].timings)
    assert "Cookie" in resp.headers["Vary"]  # the cookie filter reads it
    doc = orjson.loads(body)
    assert doc["page"] == 1 and doc["items"][2] == state["items"][2]


async def test_redis_set_of_another_user_is_not_used(env: Env, redis_db: redis.Redis) -> None:
    proxy, _, _, _ = env
    redis_db.sadd("seen:u2", "i0", "i1")
    _, body = await proxy_get(proxy, "/api/rules", user="u1")
    assert {"i0", "i1"} <= set(ids_in(body))
    _, body = await proxy_get(proxy, "/api/rules", user="u2")
    assert not {"i0", "i1"} & set(ids_in(body))


async def test_plugin_redis_error_fails_open_naming_the_plugin(
    env: Env, redis_db: redis.Redis
) -> None:
    proxy, state, records, _ = env
    redis_db.set("seen:u1", "not a set")  # SMISMEMBER answers WRONGTYPE
    resp, body = await proxy_get(proxy, "/api/rules")
    assert body == orjson.dumps({"items": state["items"], "page": 1})
    assert resp.headers["X-Rerank"] == "skipped; reason=redis-error; plugin=filter"
    assert (records[-1].reason, records[-1].plugin) == ("redis-error", "filter")


async def test_diversify_end_to_end(env: Env, redis_db: redis.Redis) -> None:
    proxy, _, _, _ = env
    # i0..i2 become near-copies of the user's best direction; MMR must split them up.
    u = USER_VECS["u1"] / np.linalg.norm(USER_VECS["u1"])
    other = np.linalg.svd(u[None, :])[2][1]  # a unit vector orthogonal to u
    copies = {f"i{k}": (u * (10 - k) + 0.01 * k * other).astype("<f4") for k in range(3)}
    for ident, v in copies.items():
        redis_db.set(f"emb:item:{ident}", v.tobytes())
    resp, body = await proxy_get(proxy, "/api/diverse", user="u1")
    assert resp.headers["X-Rerank"].startswith("applied")
    got = ids_in(body)
    assert got[0] == "i0"
    assert got[1] not in ("i1", "i2")  # plain score order would put i1 second
    assert "plugin-diversify;dur=" in resp.headers["Server-Timing"]


async def test_raising_plugin_fails_open(env: Env) -> None:
    proxy, state, records, _ = env
    resp, body = await proxy_get(proxy, "/api/raise")
    assert resp.status == 200
    assert body == orjson.dumps({"items": state["items"], "page": 1})  # origin bytes
    assert resp.headers["X-Rerank"] == f"skipped; reason=plugin-error; plugin={HERE}:Raiser"
    record = records[-1]
    assert (record.outcome, record.reason, record.plugin) == (
        "skipped",
        "plugin-error",
        f"{HERE}:Raiser",
    )
    assert f"plugin-{HERE}-Raiser;dur=" in resp.headers["Server-Timing"]
    # The proxy goes on serving.
    resp, _ = await proxy_get(proxy, "/api/feed")
    assert resp.headers["X-Rerank"].startswith("applied")


async def test_raising_user_plugin_fails_open(env: Env) -> None:
    proxy, state, records, _ = env
    resp, body = await proxy_get(proxy, "/api/user-raise")
    assert body == orjson.dumps({"items": state["items"], "page": 1})
    assert resp.headers["X-Rerank"] == f"skipped; reason=plugin-error; plugin={HERE}:UserRaiser"
    assert records[-1].plugin == f"{HERE}:UserRaiser"


async def test_plugin_over_budget_fails_open(env: Env) -> None:
    proxy, state, records, _ = env
    resp, body = await proxy_get(proxy, "/api/slow-plugin")
    assert body == orjson.dumps({"items": state["items"], "page": 1})
    assert resp.headers["X-Rerank"] == f"skipped; reason=budget; plugin={HERE}:Sleeper"
    assert records[-1].timings[f"plugin:{HERE}:Sleeper"] >= 0.15


async def test_jwt_route(env: Env) -> None:
    proxy, state, records, _ = env
    ids = [it["id"] for it in state["items"]]

    def auth(claims: dict[str, Any], key: str = SECRET) -> dict[str, str]:
        return {"Authorization": "Bearer " + jwt.encode(claims, key, algorithm="HS256")}

    good = auth({"sub": "u2", "exp": int(time.time()) + 60})
    # X-User-Id is not a source on this route: only the verified claim picks the user.
    resp, body = await proxy_get(proxy, "/api/jwt", user="u1", headers=good)
    assert resp.headers["X-Rerank"].startswith("applied")
    assert ids_in(body) == by_score("u2", ids)
    assert records[-1].user_id == "u2"
    assert "Authorization" in resp.headers["Vary"]
    assert "plugin-jwt;dur=" in resp.headers["Server-Timing"]

    for headers in (
        auth({"sub": "u2", "exp": int(time.time()) - 60}),  # expired
        auth({"sub": "u2", "exp": int(time.time()) + 60}, key="x" * 40),  # another key
        {},  # missing
    ):
        resp, body = await proxy_get(proxy, "/api/jwt", user="u1", headers=headers)
        assert resp.headers["X-Rerank"] == "skipped; reason=no-user"
        assert ids_in(body) == ids


async def test_graphql_items_plugin(env: Env) -> None:
    proxy, state, _, _ = env
    resp, body = await proxy_get(proxy, "/api/gql")
    assert resp.headers["X-Rerank"].startswith("applied")
    edges = orjson.loads(body)["data"]["viewer"]["feed"]["edges"]
    ids = [it["id"] for it in state["items"]]
    assert [e["node"]["id"] for e in edges] == by_score("u1", ids)
    assert all(e["cursor"] == f"c{ids.index(e['node']['id'])}" for e in edges)  # moved whole


async def test_items_plugin_not_finding_items(env: Env) -> None:
    proxy, state, records, _ = env
    resp, body = await proxy_get(proxy, "/api/gql-missing")
    assert resp.headers["X-Rerank"] == "skipped; reason=items-not-found"  # not a plugin error
    assert body == orjson.dumps({"items": state["items"], "page": 1})
    assert records[-1].plugin is None


async def test_several_arrays_each_reordered(env: Env) -> None:
    proxy, state, _, _ = env
    resp, body = await proxy_get(proxy, "/api/two")
    assert resp.headers["X-Rerank"].startswith("applied")
    doc = orjson.loads(body)
    ids = [it["id"] for it in state["items"]]
    assert [it["id"] for it in doc["top"]] == by_score("u1", ids[:4])
    assert [it["id"] for it in doc["more"]] == by_score("u1", ids[4:])


async def test_annotate_writes_the_final_scores_into_the_body(env: Env) -> None:
    proxy, state, _, _ = env
    state["items"] = [
        *feed_items()[:6],
        {"id": "no-vector", "fresh": 1.0},  # no embedding: unscored, keeps its slot
        "a bare string",  # not an object, no id: untouched
        *feed_items()[6:],
    ]
    resp, body = await proxy_get(proxy, "/api/annotated")
    assert resp.headers["X-Rerank"] == "applied; model=dot; arm=default"
    assert "plugin-annotate;dur=" in resp.headers["Server-Timing"]
    served = orjson.loads(body)["items"]
    assert served[6] == {"id": "no-vector", "fresh": 1.0} and served[7] == "a bare string"
    scored = [it for it in served if isinstance(it, dict) and it["id"] != "no-vector"]
    ids = [it["id"] for it in scored]
    # Independently: <user, item> + 3 * fresh, the numbers that ordered the feed.
    fresh = {it["id"]: 3.0 * it["fresh"] for it in feed_items()}
    assert ids == by_score("u1", [f"i{k}" for k in range(N)], fresh)
    want = scores_for("u1", ids) + np.array([fresh[i] for i in ids])
    written = [it["_score"] for it in scored]
    assert all(type(s) is float for s in written)
    np.testing.assert_allclose(written, want, atol=1e-4)  # rounded to 4 places
    assert written == sorted(written, reverse=True)
    # Only the key was added: every other value is the origin's.
    origin = {it["id"]: it for it in feed_items()}
    assert all({k: v for k, v in it.items() if k != "_score"} == origin[it["id"]] for it in scored)


async def test_bad_plugins_refused_at_reload_old_snapshot_serves(env: Env) -> None:
    proxy, _, _, tmp = env
    store = proxy.runtime.store
    before = store.current
    routes = tmp / "routes.yaml"
    good = routes.read_text()
    cases = [
        (
            good.replace("{use: diversify, lambda: 0.5}", "{use: diversify, lambda: 1.5}"),
            "routes[2].plugins[0].lambda: must be 0..1",
        ),
        (
            good.replace("{use: pin, field: sponsored}", "{use: pin, feild: sponsored}", 1),
            "routes[1].plugins[0].feild: unknown option",
        ),
        (
            good.replace(f"{HERE}:Raiser", "plugins.examples:FavoriteCategories").replace(
                "{use: pin, field: sponsored}, ", "{use: boost, field: f, weight: 1}, "
            )
            + "\n",
            None,  # a good change: must apply
        ),
    ]
    bad_hook = tmp / "bad_hook_plugin.py"
    bad_hook.write_text("class Typo:\n    def re_rank(self, ctx):\n        pass\n")
    cases.insert(
        2,
        (
            good.replace(f"{HERE}:Raiser", "bad_hook_plugin:Typo"),
            "routes[3].plugins[1]: bad_hook_plugin:Typo: unknown hook 're_rank'",
        ),
    )
    sys.path.insert(0, str(tmp))
    try:
        for text, error in cases:
            routes.write_text(text)
            outcome = await store.reload_outcome("test")
            if error is None:
                # "unchanged" when the file watcher reloaded it first.
                assert outcome.result in ("ok", "unchanged"), outcome.error
                assert store.current.version > before.version
                continue
            assert outcome.result == "error"
            assert outcome.error is not None and error in outcome.error
            assert store.current is before  # the old snapshot keeps serving
            resp, _ = await proxy_get(proxy, "/api/raise")
            assert resp.headers["X-Rerank"].endswith(f"plugin={HERE}:Raiser")
        resp, _ = await proxy_get(proxy, "/api/raise")  # now FavoriteCategories: no cookie, no-op
        assert resp.headers["X-Rerank"].startswith("applied")
    finally:
        sys.path.remove(str(tmp))
        sys.modules.pop("bad_hook_plugin", None)


async def test_concurrent_requests_keep_their_own_context(env: Env) -> None:
    proxy, _, _, _ = env
    results = await asyncio.gather(
        *(
            proxy_get(proxy, "/api/rules", user=u, cookies={"seen": f"i{k}"})
            for k, u in enumerate(USER_VECS)
        )
    )
    for k, (_, body) in enumerate(results):
        got = ids_in(body)
        assert f"i{k}" not in got  # each its own cookie (dropping wins over pinning)
        assert "i9" not in got
