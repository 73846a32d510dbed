"""The demo origin: a small movie catalogue that knows nothing about users or models.

  GET  /                    the demo page (static/index.html)
  GET  /static/...          its script and style sheet
  GET  /api/feed            the feed, most popular first: rankgate re-ranks this route
  GET  /api/catalogue       the same body on a path no route names: always origin order
  GET  /api/users           the users the page offers (picked at start, see data.py)
  GET  /api/stats           the admin /metrics of the proxy, summarized for the page
  POST /api/traffic?n=N     sends N feed requests through the proxy (mixed users)

The page reaches all of these through the proxy, like a browser on a real site would.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from demo import stats
from demo.clicks import ClickModel
from demo.data import Catalogue, Persona

STATIC = Path(__file__).parent / "static"
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_TRAFFIC = 2000
# What the origin would say about a shared, anonymous feed; rankgate makes it private.
FEED_CACHE_CONTROL = "public, max-age=10"


@dataclass
class OriginState:
    """What the origin serves. The proxy's URLs are filled in once it listens."""

    catalogue: Catalogue
    personas: list[Persona] = field(default_factory=list)
    proxy_url: str | None = None
    admin_url: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    session: aiohttp.ClientSession | None = None
    clicks: ClickModel = field(init=False)
    _pages: dict[tuple[int, int], bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.clicks = ClickModel(self.catalogue)

    def page_body(self, offset: int, limit: int) -> bytes:
        key = (offset, limit)
        body = self._pages.get(key)
        if body is None:
            cat = self.catalogue
            body = orjson.dumps(
                {
                    "items": cat.page(offset, limit),
                    "offset": offset,
                    "limit": limit,
                    "total": len(cat.items),
                    "order": "popularity",
                }
            )
            if len(self._pages) < 256:  # a page body is the same for everyone
                self._pages[key] = body
        return body


STATE_KEY: web.AppKey[OriginState] = web.AppKey("state", OriginState)


def _int_arg(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: want an integer, got {raw!r}\n") from None
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=f"{name}: want {low}..{high}, got {value}\n")
    return value


async def feed(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    limit = _int_arg(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int_arg(request, "offset", 0, 0, len(state.catalogue.items))
    return web.Response(
        body=state.page_body(offset, limit),
        content_type="application/json",
        headers={"Cache-Control": FEED_CACHE_CONTROL},
    )


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def users(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return web.json_response(
        {"users": [p.as_json() for p in state.personas], **state.info},
        dumps=lambda o: orjson.dumps(o).decode(),
    )


async def fetch_stats(state: OriginState) -> dict[str, Any]:
    if state.admin_url is None or state.session is None:
        return {"error": "the proxy's admin port is not known yet"}
    try:
        async with state.session.get(
            f"{state.admin_url}/metrics", timeout=aiohttp.ClientTimeout(total=2)
        ) as resp:
            if resp.status != 200:
                return {"error": f"admin /metrics answered {resp.status}"}
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return {"error": f"admin /metrics: {exc.__class__.__name__}: {exc}"}
    try:
        summary = stats.summarize(text)
    except ValueError as exc:  # not the Prometheus text format
        return {"error": f"admin /metrics: cannot parse: {exc}"}
    return {"scraped_at": time.time(), **summary}


async def stats_view(request: web.Request) -> web.Response:
    body = await fetch_stats(request.app[STATE_KEY])
    return web.Response(
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def send_traffic(state: OriginState, n: int, concurrency: int = 4) -> dict[str, Any]:
    """N feed requests through the proxy, mixed like real traffic would be; a known
    user may click what they like (demo/clicks.py), posted back with the token."""
    assert state.proxy_url is not None and state.session is not None
    rng = random.Random()
    known = state.catalogue.user_ids
    counts: Counter[str] = Counter()
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    for _ in range(n):
        roll = rng.random()
        headers: dict[str, str] = {}
        if roll < 0.75:
            headers["X-User-Id"] = rng.choice(known)  # about 10% land in the sticky split
        elif roll < 0.85:
            headers |= {"X-User-Id": rng.choice(known), "X-Use-Beta-Model": "true"}
        elif roll < 0.93:
            headers["X-User-Id"] = f"guest-{rng.randrange(10**6)}"  # no embedding
        queue.put_nowait(headers)  # else: no user at all
    clicks = 0

    async def worker() -> None:
        nonlocal clicks
        while not queue.empty():
            headers = queue.get_nowait()
            try:
                label, clicked = await _one_visit(state, headers)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                label, clicked = f"error: {exc.__class__.__name__}", False
            counts[label] += 1
            clicks += clicked

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
    return {
        "sent": n,
        "clicks": clicks,
        "seconds": round(time.perf_counter() - started, 3),
        "x_rerank": dict(counts.most_common()),
    }


async def _one_visit(state: OriginState, headers: dict[str, str]) -> tuple[str, bool]:
    """One feed request, and the click its user makes, if any."""
    session = state.session
    assert session is not None
    async with session.get(f"{state.proxy_url}/api/feed?limit=50", headers=headers) as resp:
        body = await resp.read()
        label = resp.headers.get("X-Rerank", f"status {resp.status}")
        token = resp.headers.get("X-Rankgate-Id")
    user = headers.get("X-User-Id")
    if token is None or user is None or resp.status != 200:
        return label, False
    served = [str(item.get("id")) for item in orjson.loads(body).get("items", [])]
    item = state.clicks.click(user, served)
    if item is None:
        return label, False
    event = orjson.dumps({"id": token, "item": item, "type": "click"})
    async with session.post(
        f"{state.proxy_url}/_rankgate/events",
        data=event,
        headers={"Content-Type": "application/json"},
    ) as posted:
        await posted.read()
        return label, posted.status == 202


async def traffic(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if state.proxy_url is None:
        raise web.HTTPServiceUnavailable(text="the proxy is not listening yet\n")
    n = _int_arg(request, "n", 200, 1, MAX_TRAFFIC)
    return web.json_response(await send_traffic(state, n))


async def _session(app: web.Application) -> Any:
    state = app[STATE_KEY]
    state.session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64), timeout=aiohttp.ClientTimeout(total=10)
    )
    yield
    await state.session.close()
    state.session = None


def build_origin_app(state: OriginState) -> web.Application:
    app = web.Application()
    app[STATE_KEY] = state
    app.cleanup_ctx.append(_session)
    app.router.add_get("/", index)
    app.router.add_static("/static", STATIC, append_version=False)
    app.router.add_get("/api/feed", feed)
    app.router.add_get("/api/catalogue", feed)
    app.router.add_get("/api/users", users)
    app.router.add_get("/api/stats", stats_view)
    app.router.add_post("/api/traffic", traffic)
    return app
