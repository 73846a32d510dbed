"""Who ended a request: a client that leaves is a client abort (debug level, 499 when
no status went out), never an origin failure; an origin that breaks off mid-body is
one (a warning, the client's connection cut)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from aiohttp import web

from proxy.outcome.record import RequestRecord
from proxy.serve.server import ProxyServer
from tests.support.common import (
    feed_origin,
    running_proxy,
    seed_ten_items,
    start_app,
    wait_until,
    write_config,
)
from tests.support.rawhttp import connect, raw_server, read_head, read_request

BIG = os.urandom(8 * 1024 * 1024)
ROUTES = """\
models:
  dot: {path: dot.onnx}
routes:
  - {name: feed, match: {path: /slow}, model: dot, budget_ms: 500}
"""


def origin_app() -> web.Application:
    async def big(request: web.Request) -> web.Response:
        return web.Response(body=BIG, content_type="application/octet-stream")

    async def slow_big(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(body=BIG, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/slow-big", slow_big)
    app.add_subapp("/feeds", feed_origin(10))  # /feeds/slow?ms=N: a feed, late
    return app


@pytest.fixture
async def env(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> AsyncIterator[tuple[ProxyServer, list[RequestRecord]]]:
    seed_ten_items(redis_db, tmp_path)
    runner, origin = await start_app(origin_app())
    cfg = write_config(tmp_path, origin, redis_url, ROUTES.replace("/slow", "/feeds/slow"))
    async with running_proxy(cfg) as proxy:
        records: list[RequestRecord] = []
        proxy.runtime.observers.append(records.append)
        yield proxy, records
    await runner.cleanup()


def quiet(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("rankgate") and (r.levelno >= logging.WARNING or r.exc_info)
    ]


async def test_aborted_downloads_are_client_aborts(env, caplog) -> None:
    proxy, records = env
    caplog.set_level(logging.DEBUG)
    for _ in range(30):
        async with connect(proxy.port) as (reader, writer):
            writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_head(reader))[0] == 200
            await reader.readexactly(100_000)  # some of it, then away
    await wait_until(lambda: len(records) == 30, limit_s=10)
    assert {(r.outcome, r.reason, r.status) for r in records} == {
        ("client-abort", "client-closed", 200)
    }
    assert quiet(caplog) == []
    aiohttp_errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert aiohttp_errors == []


@pytest.mark.parametrize("path", ["/slow-big", "/feeds/slow?ms=300"])
async def test_a_client_gone_before_the_answer_is_a_499(env, caplog, path: str) -> None:
    proxy, records = env
    caplog.set_level(logging.DEBUG)
    async with connect(proxy.port) as (_, writer):
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-User-Id: u1\r\n\r\n".encode())
        await writer.drain()
        await asyncio.sleep(0.05)  # then away while the origin thinks
    await wait_until(lambda: records, limit_s=5)
    record = records[0]
    assert (record.outcome, record.reason, record.status) == ("client-abort", "client-closed", 499)
    assert quiet(caplog) == []


async def test_an_origin_that_breaks_off_is_an_origin_error(
    tmp_path: Path, redis_url: str, caplog
) -> None:
    async def short_origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        await writer.drain()
        await asyncio.sleep(0.05)  # then the origin dies

    caplog.set_level(logging.DEBUG)
    async with raw_server(short_origin) as port:
        cfg = write_config(tmp_path, f"http://127.0.0.1:{port}", redis_url, "routes: []\n")
        async with running_proxy(cfg) as proxy:
            records: list[RequestRecord] = []
            proxy.runtime.observers.append(records.append)
            async with connect(proxy.port) as (reader, writer):
                writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
                status, _, headers = await read_head(reader)
                assert status == 200 and headers["content-length"] == "100000"
                with pytest.raises(asyncio.IncompleteReadError):
                    await asyncio.wait_for(reader.readexactly(100_000), 5)
            await wait_until(lambda: records, limit_s=5)
    assert (records[0].outcome, records[0].reason) == ("origin-error", "origin-broke-off")
    assert any("origin failed mid-body" in m for m in quiet(caplog))
