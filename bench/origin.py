"""The benchmark's origin: a 100-item JSON feed (~12 KB) and a small static body."""

from __future__ import annotations

import argparse

import orjson
from aiohttp import web


def feed_body(n: int = 100) -> bytes:
    items = [
        {
            "id": f"i{k}",
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

    app = web.Application()
    app.router.add_get("/api/feed", feed_handler)
    app.router.add_get("/static", static_handler)
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
