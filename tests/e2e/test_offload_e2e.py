"""Big feeds in re-rank processes: for a client, the same responses with the pool on and off
(only the timing differs). Two real proxies side by side, one origin, one Valkey."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis
from aiohttp import web

from tests.support.common import (
    DIM,
    dot_model,
    proxy_get,
    running_proxy,
    start_app,
    store_vectors,
    write_config,
)

RNG = np.random.default_rng(3)
ITEMS = {f"i{k}": RNG.standard_normal(DIM).astype("<f4") for k in range(300)}
USERS = {f"u{k}": RNG.standard_normal(DIM).astype("<f4") for k in range(3)}


def body(n: int) -> bytes:
    items: list[Any] = [{"id": f"i{k}", "t": f"item {k}", "n": k * 1.5} for k in range(n)]
    items[min(7, n - 1)]["big"] = 1
    items.append({"id": "unknown"})
    raw = orjson.dumps({"meta": {"n": n}, "items": items}).replace(b'"t":', b'"t" :')
    # Kept as written where the items are spliced (a full parse would have to skip).
    return raw.replace(b'"big":1', b'"big":123456789012345678901234567890')


PAGES = {
    "/feed": body(300),
    "/small": body(3),
    "/mixed": orjson.dumps({"items": [{"id": f"i{k}"} for k in range(200)] + ["text"]}),
    "/bad": b'{"items": [' + b'{"id": "i1"},' * 200 + b"]",
}

ROUTES = """\
models:
  dot: {path: dot.onnx}
routes:
  - {name: feed, match: {prefix: /}, model: dot, budget_ms: 5000}
"""


def origin_app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        raw = PAGES[request.path]
        if request.query.get("gzip"):
            headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
            return web.Response(body=gzip.compress(raw), headers=headers)
        return web.Response(body=raw, content_type="application/json")

    app = web.Application()
    for path in PAGES:
        app.router.add_get(path, page)
    return app


SAME = ("Content-Type", "Content-Encoding", "Cache-Control", "Vary", "X-Rerank")


async def test_a_feed_is_served_alike_with_the_pool_on_and_off(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    store_vectors(redis_db, USERS, ITEMS)
    runner, origin = await start_app(origin_app())
    configs = []
    for name, workers in (("on", 1), ("off", 0)):
        (tmp_path / name).mkdir()
        dot_model(tmp_path / name / "dot.onnx")
        extra = f"feed: {{offload_min_bytes: 2048, offload_workers: {workers}}}\n"
        configs.append(write_config(tmp_path / name, origin, redis_url, ROUTES, extra))
    try:
        async with running_proxy(configs[0]) as on, running_proxy(configs[1]) as off:
            # The pool starts at the first big feed; until it answers, feeds stay on the loop.
            for _ in range(300):
                resp, _ = await proxy_get(on, "/feed")
                if "offload;" in resp.headers["Server-Timing"]:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("no feed went to the re-rank processes")
            for path in ("/feed", "/feed?gzip=1", "/small", "/mixed", "/bad"):
                for user in ("u0", "u1", "nobody"):
                    a, body_on = await proxy_get(on, path, user, decompress=False)
                    b, body_off = await proxy_get(off, path, user, decompress=False)
                    assert (a.status, body_on) == (b.status, body_off), (path, user)
                    assert {h: a.headers.get(h) for h in SAME} == {
                        h: b.headers.get(h) for h in SAME
                    }
                    offloaded = "offload;" in a.headers["Server-Timing"]
                    # /mixed and /bad go there and back (not bodies to splice): parsed here
                    assert offloaded == (path != "/small")
            resp, served = await proxy_get(on, "/feed", "u2")
            assert resp.headers["X-Rerank"].startswith("applied")
            assert b'"big":123456789012345678901234567890' in served
            assert served != PAGES["/feed"]
    finally:
        await runner.cleanup()
