"""Client connections are bounded: header, send and keep-alive timeouts, a cap per
worker, and quiet 400s. Real sockets, raw where the client misbehaves (on asyncio here;
tests/e2e/test_hostile_e2e.py runs the same against `rankgate serve` on uvloop)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from aiohttp import web

from proxy.outcome.record import RequestRecord
from proxy.serve.server import ProxyServer
from tests.support.common import (
    metric,
    parse_metrics,
    running_proxy,
    start_app,
    wait_until,
    write_config,
)
from tests.support.rawhttp import closed_within, connect, exchange, read_response

GET = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"


def limits_config(tmp: Path, origin: str, redis_url: str, listen: str, extra: str = "") -> Path:
    cfg = write_config(tmp, origin, redis_url, "models: {}\nroutes: []\n", extra)
    text = cfg.read_text().replace(
        "listen: {host: 127.0.0.1, port: 0}", f"listen: {{host: 127.0.0.1, port: 0, {listen}}}"
    )
    cfg.write_text(text)
    return cfg


def origin_app(state: dict[str, object]) -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            while True:
                await resp.write(b"x" * 65536)
        except (ConnectionError, asyncio.CancelledError):
            state["endless_closed"] = True
            raise

    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_get("/endless", endless)
    return app


@pytest.fixture
async def origin() -> AsyncIterator[tuple[str, dict[str, object]]]:
    state: dict[str, object] = {}
    runner, url = await start_app(origin_app(state))
    yield url, state
    await runner.cleanup()


Make = Callable[[str], AbstractAsyncContextManager[ProxyServer]]


@pytest.fixture
def make(tmp_path: Path, redis_url: str, origin: tuple[str, dict[str, object]]) -> Make:
    """A running proxy whose ``listen:`` has the given extra keys."""

    def build(listen: str) -> AbstractAsyncContextManager[ProxyServer]:
        return running_proxy(limits_config(tmp_path, origin[0], redis_url, listen))

    return build


def recorded(proxy: ProxyServer) -> list[RequestRecord]:
    records: list[RequestRecord] = []
    proxy.runtime.observers.append(records.append)
    return records


async def test_headers_must_arrive_within_header_timeout(make: Make) -> None:
    async with make("header_timeout_s: 0.3, keepalive_timeout_s: 30") as proxy:
        async with connect(proxy.port) as (reader, writer):
            writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n")  # never finished
            rest = await closed_within(reader, 3)
        assert rest.startswith(b"HTTP/1.1 408 "), rest[:60]
        assert proxy.runtime.connections.header_timeouts == 1


async def test_a_connection_that_sends_nothing_is_closed_quietly(make: Make) -> None:
    async with make("header_timeout_s: 0.3, keepalive_timeout_s: 30") as proxy:
        async with connect(proxy.port) as (reader, _):
            assert await closed_within(reader, 3) == b""  # no 408 to a silent client
        assert proxy.runtime.connections.header_timeouts == 1


async def test_idle_between_requests_is_not_a_header_timeout(make: Make) -> None:
    async with (
        make("header_timeout_s: 0.3, keepalive_timeout_s: 30") as proxy,
        connect(proxy.port) as (reader, writer),
    ):
        for _ in range(3):
            writer.write(GET)
            assert (await read_response(reader)).status == 200
            await asyncio.sleep(0.5)  # idle: the keep-alive wait, not the header one
        assert proxy.runtime.connections.header_timeouts == 0


async def test_idle_keepalive_connection_is_closed(make: Make) -> None:
    async with (
        make("keepalive_timeout_s: 0.3") as proxy,
        connect(proxy.port) as (reader, writer),
    ):
        writer.write(GET)
        assert (await read_response(reader)).status == 200
        assert await closed_within(reader, 3) == b""


async def test_a_client_that_stops_reading_is_cut_and_frees_the_origin(
    make: Make, origin: tuple[str, dict[str, object]]
) -> None:
    _, state = origin
    async with make("send_timeout_s: 0.5") as proxy:
        records = recorded(proxy)
        async with connect(proxy.port, rcvbuf=4096) as (reader, writer):
            writer.write(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
            # Never read: the buffers fill, our writes pause, and 0.5 s later we cut.
            await wait_until(lambda: records, limit_s=10)
            assert (records[0].outcome, records[0].reason) == ("client-abort", "send-timeout")
            samples = parse_metrics(proxy.metrics.render().decode())
            assert metric(samples, "rankgate_connections_closed_total", reason="send-timeout") == 1
            assert metric(samples, "rankgate_requests_total", outcome="client-abort") == 1
            assert records[0].status == 200  # the headers had gone out
            await wait_until(lambda: state.get("endless_closed"), limit_s=5)
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                while await reader.read(1 << 20):  # what was buffered, then a reset
                    pass
                raise asyncio.IncompleteReadError(b"", None)
        assert proxy.runtime.connections.send_timeouts == 1


async def test_connections_over_the_cap_get_503(make: Make) -> None:
    async with make("max_connections: 2, keepalive_timeout_s: 30") as proxy:
        async with connect(proxy.port) as (r1, w1), connect(proxy.port) as (r2, w2):
            for r, w in ((r1, w1), (r2, w2)):
                w.write(GET)
                assert (await read_response(r)).status == 200
            over = await exchange(proxy.port, GET)
            assert over.status == 503 and over.headers["retry-after"] == "1"
            assert over.headers["connection"] == "close"
            samples = parse_metrics(proxy.metrics.render().decode())
            assert metric(samples, "rankgate_connections_open") == 2
        assert proxy.runtime.connections.refused == 1
        closed = "rankgate_connections_closed_total"
        samples = parse_metrics(proxy.metrics.render().decode())
        assert metric(samples, closed, reason="max-connections") == 1
        assert metric(samples, closed, reason="send-timeout") == 0
        # Both left: a new connection is served again.
        await wait_until(lambda: proxy.runtime.connections.open == 0, limit_s=5)
        assert (await exchange(proxy.port, GET)).status == 200


async def test_a_request_line_the_parser_refuses_is_a_quiet_400(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with make("") as proxy:
        for line in (b"G%T / HTTP/1.1", b"GET x HTTP/1.1", b"GET / HTTP/9.9"):
            resp = await exchange(proxy.port, line + b"\r\nHost: x\r\n\r\n")
            assert resp.status == 400, line
        assert proxy.runtime.connections.bad_requests == 3
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not loud, [r.getMessage() for r in loud]
    assert not [r for r in caplog.records if r.exc_info]
