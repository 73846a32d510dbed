"""A hostile world against `rankgate serve` (uvloop, one worker): clients that never read,
a connection cap, stalled headers, 100-continue, absolute-form, CONNECT; meanwhile a
normal client is served, and the logs say client-abort, never error."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.support.common import ProxyProcess, start_app, wait_until, write_config
from tests.support.rawhttp import closed_within, connect, exchange, read_head, read_response

HOGS = 20
CAP = 30


def origin_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.raw_path}")

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        with contextlib.suppress(ConnectionError):
            while True:
                await resp.write(b"x" * 65536)
        return resp

    async def upload(request: web.Request) -> web.Response:
        return web.Response(text=str(len(await request.read())))

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_get("/endless", endless)
    app.router.add_post("/upload", upload)
    app.router.add_get("/{tail:.*}", hello)
    return app


@pytest.fixture
async def proc(tmp_path: Path, redis_url: str) -> AsyncIterator[ProxyProcess]:
    runner, origin = await start_app(origin_app())
    cfg = write_config(tmp_path, origin, redis_url, "routes: []\n", "logging: {level: debug}\n")
    cfg.write_text(
        cfg.read_text().replace(
            "listen: {host: 127.0.0.1, port: 0}",
            f"listen: {{host: 127.0.0.1, port: 0, max_connections: {CAP},"
            " header_timeout_s: 0.5, send_timeout_s: 1, keepalive_timeout_s: 10}",
        )
    )
    p = await ProxyProcess.start(cfg)
    try:
        yield p
    finally:
        await p.stop()
        await runner.cleanup()


async def test_hostile_clients_against_rankgate_serve(proc: ProxyProcess) -> None:
    get = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
    async with contextlib.AsyncExitStack() as stack:
        # Clients that ask for an endless download and never read a byte.
        for _ in range(HOGS):
            _, writer = await stack.enter_async_context(connect(proc.port, rcvbuf=4096))
            writer.write(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.3)
        # A normal client is served meanwhile, at once.
        started = time.perf_counter()
        assert (await exchange(proc.port, get)).status == 200
        # Before the hogs' send timeout (1 s) frees anything: a loaded CI machine takes
        # ~0.8 s at worst, a process blocked by the hogs would take over 1 s.
        assert time.perf_counter() - started < 0.95
        # Fill the cap with idle connections: the next one gets 503.
        for _ in range(CAP - HOGS - 1):
            await stack.enter_async_context(connect(proc.port))
        await asyncio.sleep(0.2)
        reader, _ = await stack.enter_async_context(connect(proc.port))  # the cap-th
        over = await exchange(proc.port, get)
        assert over.status == 503 and over.headers["retry-after"] == "1"
        # The non-readers are cut after send_timeout_s; their access lines say why.
        await wait_until(
            lambda: sum(1 for a in proc.access() if a["reason"] == "send-timeout") == HOGS,
            limit_s=10,
        )
    assert all(a["outcome"] == "client-abort" for a in proc.access() if a["path"] == "/endless")

    # Headers that never finish: 408 and closed after header_timeout_s.
    async with connect(proc.port) as (reader, writer):
        writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        assert (await closed_within(reader, 5)).startswith(b"HTTP/1.1 408 ")

    # 100-continue: answered before the body is sent.
    async with connect(proc.port) as (reader, writer):
        body = b"y" * 3_000_000
        writer.write(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        assert (await asyncio.wait_for(read_head(reader), 1.0))[0] == 100
        writer.write(body)
        resp = await asyncio.wait_for(read_response(reader), 10)
        assert resp.status == 200 and resp.body == b"3000000"

    # Absolute-form from its path; CONNECT refused.
    resp = await exchange(proc.port, b"GET http://elsewhere.test/a?b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp.status == 200 and resp.body == b"hello /a?b"
    resp = await exchange(proc.port, b"CONNECT elsewhere.test:443 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp.status == 405

    await asyncio.sleep(0.2)
    events = proc.events()
    assert not [e for e in events if e.get("level") in ("error", "critical")], events
    assert not [e for e in events if "exc" in e]
    assert not [e for e in events if "mid-body" in str(e.get("msg"))]
