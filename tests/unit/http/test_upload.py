"""Request bodies: ``Expect: 100-continue`` answered at once, a stalled body ends in 408,
and a client that leaves mid-upload is a client abort, not an origin failure."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from proxy.outcome.record import RequestRecord
from proxy.serve.server import ProxyServer
from tests.support.common import running_proxy, start_app, wait_until, write_config
from tests.support.rawhttp import closed_within, connect, read_head, read_response

BODY = os.urandom(300_000)


def origin_app(state: dict[str, object]) -> web.Application:
    async def upload(request: web.Request) -> web.Response:
        state["expect"] = request.headers.get("Expect")
        digest = hashlib.sha256()
        try:
            async for chunk in request.content.iter_any():
                digest.update(chunk)
        except Exception as exc:
            state["upload_failed"] = type(exc).__name__
            return web.Response(status=400)
        return web.json_response({"sha": digest.hexdigest()})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/upload", upload)
    return app


@pytest.fixture
async def env(
    tmp_path: Path, redis_url: str
) -> AsyncIterator[tuple[ProxyServer, dict[str, object], list[RequestRecord]]]:
    state: dict[str, object] = {}
    runner, origin = await start_app(origin_app(state))
    cfg = write_config(tmp_path, origin, redis_url, "models: {}\nroutes: []\n")
    cfg.write_text(
        cfg.read_text().replace(
            "listen: {host: 127.0.0.1, port: 0}",
            "listen: {host: 127.0.0.1, port: 0, body_timeout_s: 0.4}",
        )
    )
    async with running_proxy(cfg) as proxy:
        records: list[RequestRecord] = []
        proxy.runtime.observers.append(records.append)
        yield proxy, state, records
    await runner.cleanup()


def head(length: int, expect: bool = True, version: str = "HTTP/1.1") -> bytes:
    lines = [f"POST /upload {version}", "Host: x", f"Content-Length: {length}"]
    if expect:
        lines.append("Expect: 100-continue")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_100_continue_is_sent_before_the_body(env) -> None:
    proxy, state, records = env
    async with connect(proxy.port) as (reader, writer):
        writer.write(head(len(BODY)))
        # The client waits for this before it sends a byte of the body.
        status, _, _ = await asyncio.wait_for(read_head(reader), 1.0)
        assert status == 100
        writer.write(BODY)
        resp = await asyncio.wait_for(read_response(reader), 5)
    assert resp.status == 200
    assert resp.body == f'{{"sha": "{hashlib.sha256(BODY).hexdigest()}"}}'.encode()
    assert state["expect"] is None  # answered by rankgate, not sent on
    assert records[0].outcome == "passthrough"


async def test_http10_gets_no_100(env) -> None:
    proxy, *_ = env
    async with connect(proxy.port) as (reader, writer):
        writer.write(head(5, version="HTTP/1.0"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)  # nothing before the body
        writer.write(b"hello")
        resp = await asyncio.wait_for(read_response(reader), 5)
    assert resp.status == 200 and not resp.informational


async def test_a_stalled_body_ends_in_408(env) -> None:
    proxy, state, records = env
    async with connect(proxy.port) as (reader, writer):
        writer.write(head(1000, expect=False) + b"x" * 10)  # then nothing
        rest = await closed_within(reader, 5)
    assert rest.startswith(b"HTTP/1.1 408 "), rest[:80]
    assert (records[0].outcome, records[0].reason, records[0].status) == (
        "client-abort",
        "body-timeout",
        408,
    )
    await wait_until(lambda: "upload_failed" in state, limit_s=5)  # the origin let go


async def test_client_leaving_mid_upload_is_not_an_origin_failure(
    env, caplog: pytest.LogCaptureFixture
) -> None:
    proxy, _, records = env
    caplog.set_level(logging.DEBUG, logger="rankgate")
    async with connect(proxy.port) as (_, writer):
        writer.write(head(len(BODY), expect=False) + BODY[:50_000])
        await writer.drain()
        await asyncio.sleep(0.1)
    await wait_until(lambda: records, limit_s=5)
    assert (records[0].outcome, records[0].reason, records[0].status) == (
        "client-abort",
        "client-closed",
        499,
    )
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not loud, [r.getMessage() for r in loud]
