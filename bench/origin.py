"""The benchmark's origin: a 100-item JSON feed (~12 KB) and a small static body."""

from __future__ import annotations

import argparse

import orjson
from aiohttp import web


def feed_body(n: int = 100, first: int = 0) -> bytes:
    items = [
        {
            "id": f"i{first + k}",
            "title": f"Item number {k} with a title of some length",
            "price": round(k * 1.37, 2),
            "tags": ["alpha", "beta"],
            "ts": 1_700_000_000 + k,
        }
        for k in range(n)
    ]
    return orjson.dumps({"meta": {"page": 1, "count": n}, "items": items})


def build(n: int) -> web.Application:
    feed = feed_body(n)
    static = b"x" * 2048

    async def feed_handler(request: web.Request) -> web.Response:
        return web.Response(body=feed, content_type="application/json")

    async def static_handler(request: web.Request) -> web.Response:
        return web.Response(body=static, content_type="text/plain")

    sized: dict[int, bytes] = {}

    async def sized_handler(request: web.Request) -> web.Response:
        # /api/feed/N: an N-item feed (the size targets), made once.
        n = min(int(request.match_info["n"]), 100_000)
        body = sized.get(n)
        if body is None:
            body = sized[n] = feed_body(n)
        return web.Response(body=body, content_type="application/json")

    async def page_handler(request: web.Request) -> web.Response:
        # /api/page/K: 1,000 items i{1000K}.. (every page other ids: fills a cache).
        k = int(request.match_info["k"])
        return web.Response(body=feed_body(1000, 1000 * k), content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/feed", feed_handler)
    app.router.add_get("/static", static_handler)
    app.router.add_get("/api/feed/{n:\\d+}", sized_handler)
    app.router.add_get("/api/page/{k:\\d+}", page_handler)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--items", type=int, default=100)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(build(args.items), host="127.0.0.1", port=args.port, access_log=None, print=None)
