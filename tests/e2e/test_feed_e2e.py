"""End to end: real origin, real Valkey, real ONNX model; the served order is checked
against an order computed independently with onnxruntime."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import onnxruntime as ort
import orjson
import pytest
import redis
from aiohttp import web

from proxy.serve.server import ProxyServer
from tests.support.common import (
    DIM,
    dot_model,
    proxy_get,
    running_proxy,
    start_app,
    start_valkey,
    store_vectors,
    vec,
    write_config,
)

RNG = np.random.default_rng(7)
N_ITEMS = 60
ITEM_VECS = {f"i{k}": RNG.standard_normal(DIM).astype("<f4") for k in range(N_ITEMS)}
USER_VECS = {f"u{k}": RNG.standard_normal(DIM).astype("<f4") for k in range(5)}


def feed_items(n: int = 20, numeric: bool = False) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for k in range(n):
        ident: Any = k if numeric else f"i{k}"
        out.append({"id": ident, "title": f"Item {k}", "price": k * 1.25, "tags": ["a", k]})
    return out


def origin_app(state: dict[str, Any]) -> web.Application:
    async def feed(request: web.Request) -> web.Response:
        state["requests"] = state.get("requests", 0) + 1
        state["last_headers"] = dict(request.headers)
        body = orjson.dumps({"meta": {"page": 1, "v": 1.5e-7}, "items": state["items"]})
        headers = {"ETag": '"origin-etag"', "Cache-Control": "public, max-age=30"}
        if request.query.get("gzip") and "gzip" in request.headers.get("Accept-Encoding", ""):
            return web.Response(
                body=gzip.compress(body),
                headers={**headers, "Content-Encoding": "gzip", "Content-Type": "application/json"},
            )
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def nested(request: web.Request) -> web.Response:
        children = [{"kind": "t3", "data": it} for it in state["items"]]
        return web.json_response({"data": {"children": children, "after": "x"}})

    async def raw(request: web.Request) -> web.Response:
        return web.Response(
            body=state["raw_body"], content_type=state.get("raw_type", "application/json")
        )

    async def error(request: web.Request) -> web.Response:
        return web.json_response({"error": "boom"}, status=500)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return web.json_response({"items": state["items"]})

    app = web.Application()
    app.router.add_get("/api/feed", feed)
    app.router.add_get("/api/nested", nested)
    app.router.add_get("/api/raw", raw)
    app.router.add_get("/api/rawfull", raw)
    app.router.add_get("/api/error", error)
    app.router.add_get("/api/slow", slow)
    app.router.add_get("/api/tight", feed)
    return app


ROUTES = """\
models:
  dot: {path: dot.onnx}
routes:
  # 2 s: these tests check order, not speed (the 5000-item one ran over 200 ms when busy)
  - {name: feed, match: {path: /api/feed}, model: dot, budget_ms: 2000}
  - {name: nested, match: {path: /api/nested}, items: data.children, item_id: data.id,
     model: dot, budget_ms: 200}
  - {name: raw, match: {path: /api/raw}, model: dot, budget_ms: 200}
  # annotate writes into items: the whole document is parsed and re-serialized
  - {name: rawfull, match: {path: /api/rawfull}, model: dot, budget_ms: 200,
     plugins: [{use: annotate}]}
  - {name: error, match: {path: /api/error}, model: dot}
  - {name: slow, match: {path: /api/slow}, model: dot, budget_ms: 30}
  - {name: tight, match: {path: /api/tight}, model: dot, budget_ms: 0.001}
"""


def seed(client: redis.Redis) -> None:
    store_vectors(client, USER_VECS, ITEM_VECS)


def expected_order(model_path: Path, user: str, ids: list[str]) -> list[str]:
    """Independent: onnxruntime directly, then a stable sort; unscored keep slots."""
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    scored = [i for i, ident in enumerate(ids) if ident in ITEM_VECS]
    items = np.stack([ITEM_VECS[ids[i]] for i in scored])
    users = np.tile(USER_VECS[user], (len(scored), 1))
    scores = sess.run(None, {"user_embedding": users, "item_embedding": items})[0].reshape(-1)
    ranked = [scored[j] for j in sorted(range(len(scored)), key=lambda j: -scores[j])]
    out = list(ids)
    for slot, src in zip(scored, ranked, strict=True):
        out[slot] = ids[src]
    return out


@pytest.fixture
async def env(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> AsyncIterator[tuple[ProxyServer, dict[str, Any], Path]]:
    seed(redis_db)
    model = dot_model(tmp_path / "dot.onnx")
    state: dict[str, Any] = {"items": feed_items()}
    runner, origin = await start_app(origin_app(state))
    cfg = write_config(tmp_path, origin, redis_url, ROUTES)
    async with running_proxy(cfg) as proxy:
        yield proxy, state, model
    await runner.cleanup()


async def get(
    proxy: ProxyServer, path: str, user: str | None = "u1", **kw: Any
) -> tuple[aiohttp.ClientResponse, bytes]:
    return await proxy_get(proxy, path, user, decompress=False, **kw)


async def test_reranks_top_level(env) -> None:
    proxy, state, model = env
    resp, body = await get(proxy, "/api/feed")
    assert resp.headers["X-Rerank"] == "applied; model=dot; arm=default"
    doc = orjson.loads(body)
    ids = [it["id"] for it in doc["items"]]
    assert ids == expected_order(model, "u1", [it["id"] for it in state["items"]])
    assert ids != [it["id"] for it in state["items"]]
    # Everything else is preserved exactly.
    assert doc["meta"] == {"page": 1, "v": 1.5e-7}
    by_id = {it["id"]: it for it in state["items"]}
    assert all(it == by_id[it["id"]] for it in doc["items"])
    # Cache safety.
    assert "ETag" not in resp.headers
    assert resp.headers["Cache-Control"] == "private, max-age=30"
    assert "Cookie" in resp.headers["Vary"] and "X-User-Id" in resp.headers["Vary"]
    assert int(resp.headers["Content-Length"]) == len(body)
    timing = resp.headers["Server-Timing"]
    for stage in ("origin", "redis", "infer", "total"):
        assert f"{stage};dur=" in timing


async def test_different_users_different_orders(env) -> None:
    proxy, state, model = env
    orders = set()
    for user in USER_VECS:
        _, body = await get(proxy, "/api/feed", user=user)
        ids = [it["id"] for it in orjson.loads(body)["items"]]
        assert ids == expected_order(model, user, [it["id"] for it in state["items"]])
        orders.add(tuple(ids))
    assert len(orders) > 1


async def test_nested_paths_and_numeric_ids(env, redis_db) -> None:
    proxy, state, model = env
    for k in range(20):
        redis_db.set(f"emb:item:{k}", ITEM_VECS[f"i{k}"].tobytes())
        ITEM_VECS.setdefault(str(k), ITEM_VECS[f"i{k}"])
    state["items"] = feed_items(numeric=True)
    resp, body = await get(proxy, "/api/nested")
    assert resp.headers["X-Rerank"].startswith("applied")
    ids = [str(c["data"]["id"]) for c in orjson.loads(body)["data"]["children"]]
    assert ids == expected_order(model, "u1", [str(k) for k in range(20)])
    assert orjson.loads(body)["data"]["after"] == "x"


async def test_gzip_feed(env) -> None:
    proxy, state, model = env
    resp, body = await get(proxy, "/api/feed?gzip=1", headers={"Accept-Encoding": "gzip"})
    assert resp.headers["X-Rerank"].startswith("applied")
    assert resp.headers["Content-Encoding"] == "gzip"
    assert int(resp.headers["Content-Length"]) == len(body)
    ids = [it["id"] for it in orjson.loads(gzip.decompress(body))["items"]]
    assert ids == expected_order(model, "u1", [it["id"] for it in state["items"]])


async def test_missing_item_embeddings_keep_slots(env) -> None:
    proxy, state, model = env
    items = feed_items()
    items[3]["id"] = "nope-3"
    items[7]["id"] = "nope-7"
    items[10] = {"title": "no id at all"}
    state["items"] = items
    _, body = await get(proxy, "/api/feed")
    got = orjson.loads(body)["items"]
    assert got[3]["id"] == "nope-3" and got[7]["id"] == "nope-7"
    assert got[10] == {"title": "no id at all"}
    ids = [it.get("id", "") for it in items]
    assert [it.get("id", "") for it in got] == expected_order(model, "u1", ids)


@pytest.mark.parametrize(
    ("user", "reason"),
    [
        (None, "no-user"),
        ("stranger", "unknown-user"),
        ("short", "bad-vector"),
        ("nan", "bad-vector"),
    ],
)
async def test_no_or_unknown_user_serves_origin_bytes(env, redis_db, user, reason) -> None:
    proxy, state, _ = env
    redis_db.set("emb:user:short", vec([1.0] * (DIM - 1)))  # embeddings.dim says otherwise
    redis_db.set("emb:user:nan", vec([np.nan] * DIM))
    resp, body = await get(proxy, "/api/feed", user=user)
    assert resp.headers["X-Rerank"] == f"skipped; reason={reason}"
    assert body == orjson.dumps({"meta": {"page": 1, "v": 1.5e-7}, "items": state["items"]})
    assert resp.headers["ETag"] == '"origin-etag"'


async def test_conditional_without_user_passes_through(env) -> None:
    proxy, state, _ = env
    await get(proxy, "/api/feed", user=None, headers={"If-None-Match": '"origin-etag"'})
    assert state["last_headers"]["If-None-Match"] == '"origin-etag"'
    await get(proxy, "/api/feed", headers={"If-None-Match": '"origin-etag"'})
    assert "If-None-Match" not in state["last_headers"]


@pytest.mark.parametrize(
    ("raw", "ctype", "reason"),
    [
        (b"{not json", "application/json", "bad-json"),
        (b"<html>hi</html>", "text/html", "not-json"),
        (b'{"other": []}', "application/json", "items-not-found"),
        (b'{"items": {"a": 1}}', "application/json", "items-not-found"),
        (b'{"items": []}', "application/json", "no-items"),
        (b'{"items": [{"id": "zz"}]}', "application/json", "no-item-vectors"),
        (b'{"items": [1, 2]}', "application/json", "no-item-ids"),
        (b'{"items": [{"pid": "i1"}, {"pid": "i2"}]}', "application/json", "no-item-ids"),
        (b"[1, 2, 3]", "application/json", "items-not-found"),
    ],
)
async def test_bad_bodies_fail_open(env, raw, ctype, reason) -> None:
    proxy, state, _ = env
    state["raw_body"], state["raw_type"] = raw, ctype
    resp, body = await get(proxy, "/api/raw")
    assert resp.status == 200
    assert body == raw
    assert resp.headers["X-Rerank"] == f"skipped; reason={reason}"


BIG = b'{"items": [{"id": "i2", "n": 123456789012345678901234567890}, {"id": "i1"}], "big": 1e2}'


async def test_big_integers_kept_where_the_items_are_spliced(env) -> None:
    proxy, state, _ = env
    state["raw_body"], state["raw_type"] = BIG, "application/json"
    # A route whose rules read no item fields: the items' bytes are spliced, numbers and all.
    resp, body = await get(proxy, "/api/raw")
    assert resp.headers["X-Rerank"].startswith("applied")
    assert b'{"id": "i2", "n": 123456789012345678901234567890}' in body
    assert sorted(orjson.loads(body)["items"], key=str) == sorted(
        orjson.loads(BIG)["items"], key=str
    )
    # Parsed whole (annotate writes into items): such an integer would be rounded.
    resp, body = await get(proxy, "/api/rawfull")
    assert resp.headers["X-Rerank"] == "skipped; reason=unsafe-number"
    assert body == BIG


async def test_origin_error_passes_through(env) -> None:
    proxy, _, _ = env
    resp, body = await get(proxy, "/api/error")
    assert resp.status == 500
    assert orjson.loads(body) == {"error": "boom"}
    assert resp.headers["X-Rerank"] == "skipped; reason=status"


async def test_5000_item_feed(env, redis_db) -> None:
    proxy, state, model = env
    rng = np.random.default_rng(1)
    pipe = redis_db.pipeline()
    for k in range(5000):
        v = rng.standard_normal(DIM).astype("<f4")
        ITEM_VECS[f"b{k}"] = v
        pipe.set(f"emb:item:b{k}", v.tobytes())
    pipe.execute()
    state["items"] = [{"id": f"b{k}"} for k in range(5000)]
    resp, body = await get(proxy, "/api/feed")
    assert resp.headers["X-Rerank"].startswith("applied")
    ids = [it["id"] for it in orjson.loads(body)["items"]]
    assert ids == expected_order(model, "u1", [f"b{k}" for k in range(5000)])


async def test_bad_vectors_treated_as_missing(env, redis_db) -> None:
    proxy, state, model = env
    redis_db.set("emb:item:i1", b"short")
    redis_db.set("emb:item:i2", vec([np.nan] * DIM))
    redis_db.set("emb:item:i4", vec([np.inf] + [0] * (DIM - 1)))
    for k in (1, 2, 4):
        ITEM_VECS.pop(f"i{k}", None)
    try:
        _, body = await get(proxy, "/api/feed")
        ids = [it["id"] for it in orjson.loads(body)["items"]]
        assert ids[1] == "i1" and ids[2] == "i2" and ids[4] == "i4"
        assert ids == expected_order(model, "u1", [it["id"] for it in state["items"]])
    finally:
        RNG2 = np.random.default_rng(7)  # restore the module's vectors for other tests
        for k in range(N_ITEMS):
            ITEM_VECS[f"i{k}"] = RNG2.standard_normal(DIM).astype("<f4")


async def test_redis_stopped_and_restarted(tmp_path: Path) -> None:
    server = start_valkey()
    port = server.port
    try:
        seed(redis.Redis(port=port))
        dot_model(tmp_path / "dot.onnx")
        state: dict[str, Any] = {"items": feed_items()}
        runner, origin = await start_app(origin_app(state))
        cfg = write_config(tmp_path, origin, server.connection_url, ROUTES)
        async with running_proxy(cfg) as proxy:
            resp, _ = await get(proxy, "/api/feed")
            assert resp.headers["X-Rerank"].startswith("applied")
            server.stop()
            resp, body = await get(proxy, "/api/feed")
            assert resp.status == 200
            assert resp.headers["X-Rerank"] == "skipped; reason=redis-unavailable"
            assert orjson.loads(body)["items"] == state["items"]
            server = start_valkey(port)
            seed(redis.Redis(port=port))
            resp, _ = await get(proxy, "/api/feed")
            assert resp.headers["X-Rerank"].startswith("applied")
        await runner.cleanup()
    finally:
        server.stop()


async def test_redis_stalled_beyond_budget(env, redis_url) -> None:
    proxy, state, _ = env
    # A fresh user (nothing cached) while Redis sleeps: the origin's order comes back
    # within the origin's time plus the budget, not after the stall.
    # CLIENT PAUSE stalls every other client like a stuck server (DEBUG SLEEP would
    # need enable-debug-command, which a REDIS_URL server may not allow).
    redis.Redis.from_url(redis_url).execute_command("CLIENT", "PAUSE", "1000", "ALL")
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp, body = await get(proxy, "/api/feed", user="u2")
    elapsed = loop.time() - started
    redis.Redis.from_url(redis_url).execute_command("CLIENT", "UNPAUSE")
    assert resp.headers["X-Rerank"] in ("skipped; reason=redis-timeout", "skipped; reason=budget")
    assert orjson.loads(body)["items"] == state["items"]
    assert elapsed < 0.6


async def test_budget_counts_only_own_work(env) -> None:
    proxy, _, _ = env
    resp, _ = await get(proxy, "/api/slow")
    # The origin takes 200 ms; the budget (30 ms) counts only our own work after it.
    assert resp.headers["X-Rerank"].startswith("applied")


async def test_budget_exceeded_serves_origin_order(env) -> None:
    proxy, state, _ = env
    resp, body = await get(proxy, "/api/tight")
    assert resp.headers["X-Rerank"] == "skipped; reason=budget"
    assert orjson.loads(body)["items"] == state["items"]
