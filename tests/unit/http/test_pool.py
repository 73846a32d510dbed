"""The origin pool: a wait for a free connection is bounded by origin.pool_timeout_s,
then 503 with Retry-After, counted; a slow connect stays the origin's 504/502."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from proxy.http.pool import PoolConnector, PoolTimeout
from proxy.outcome.record import RequestRecord
from proxy.serve.server import ProxyServer
from tests.support.common import fetch, running_proxy, start_app, write_config


def slow_app() -> web.Application:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.Response(text="late")

    async def fast(request: web.Request) -> web.Response:
        return web.Response(text="fast")

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/fast", fast)
    return app


@pytest.fixture
async def origin() -> AsyncIterator[str]:
    runner, url = await start_app(slow_app())
    yield url
    await runner.cleanup()


@pytest.fixture
async def proxy(
    tmp_path: Path, redis_url: str, origin: str
) -> AsyncIterator[tuple[ProxyServer, list[RequestRecord]]]:
    cfg = write_config(tmp_path, origin, redis_url, "routes: []\n")
    cfg.write_text(
        cfg.read_text().replace(
            "connect_timeout_s: 1, timeout_s: 2}",
            "connect_timeout_s: 1, timeout_s: 2, max_connections: 1, pool_timeout_s: 0.3}",
        )
    )
    async with running_proxy(cfg) as server:
        records: list[RequestRecord] = []
        server.runtime.observers.append(records.append)
        yield server, records


async def test_pool_wait_is_bounded_then_503(proxy) -> None:
    server, records = proxy
    base = f"http://127.0.0.1:{server.port}"
    holder = asyncio.create_task(fetch(f"{base}/slow"))
    await asyncio.sleep(0.2)  # the only origin connection is now busy
    started = time.perf_counter()
    status, headers, body = await fetch(f"{base}/fast")
    waited = time.perf_counter() - started
    assert status == 503 and headers["Retry-After"] == "1"
    assert b"origin-busy" in body
    assert waited < 0.9, waited  # the pool timeout (0.3 s), not the holder's 1 s
    assert (await holder)[0] == 200
    assert (await fetch(f"{base}/fast"))[0] == 200  # free again
    busy = [r for r in records if r.reason == "origin-busy"]
    assert len(busy) == 1 and busy[0].outcome == "origin-error" and busy[0].status == 503
    assert server.runtime.forwarder.pool_timeouts == 1


async def test_pool_connector_alone(origin: str) -> None:
    connector = PoolConnector(pool_timeout_s=0.2, limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        holder = asyncio.create_task(session.get(f"{origin}/slow"))  # the only connection
        await asyncio.sleep(0.1)
        with pytest.raises(PoolTimeout):
            await session.get(f"{origin}/fast")
        async with await holder as resp:
            assert await resp.text() == "late"
        async with session.get(f"{origin}/fast") as resp:  # released: no wait
            assert resp.status == 200
    assert connector.pool_timeouts == 1
