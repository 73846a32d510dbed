"""The start-up warm-up: the first request finds an origin connection and a Redis
connection open, the models run and a route's sample page's item vectors cached; an
origin or Redis that is down or silent neither stops the start nor delays it past the
warm-up's limit, and a route without a sample sends the origin nothing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from aiohttp import web

from proxy.config.settings import Embeddings, Origin
from proxy.http.forward import Forwarder
from proxy.routing.sessions import load_model
from proxy.serve.warmup import WARM_LIMIT_S, warm_up
from proxy.store.embeddings import EmbeddingStore, connect
from tests.support.common import (
    DIM,
    TEN_ITEMS_ROUTES,
    dot_model,
    feed_body,
    feed_origin,
    proxy_get,
    running_proxy,
    seed_ten_items,
    start_app,
    wait_until,
    write_config,
)


@pytest.fixture
async def origin() -> AsyncIterator[web.AppRunner]:
    runner, _ = await start_app(feed_origin(10))
    yield runner
    await runner.cleanup()


def url_of(runner: web.AppRunner) -> str:
    return f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A server that accepts connections and never answers (a hung Redis)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_first_request_finds_the_connections_open(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis, origin: web.AppRunner
) -> None:
    seed_ten_items(redis_db, tmp_path)
    cfg = write_config(tmp_path, url_of(origin), redis_url, TEN_ITEMS_ROUTES)
    clients_before = len(redis_db.client_list())
    async with running_proxy(cfg) as proxy:
        server = origin.server
        assert server is not None
        # Opened at start, before any request: one idle keep-alive connection each.
        await wait_until(lambda: len(server.connections) == 1, limit_s=5)
        await wait_until(lambda: len(redis_db.client_list()) == clients_before + 1, limit_s=5)
        resp, _ = await proxy_get(proxy, "/feed")
        assert resp.headers["X-Rerank"].startswith("applied")
        assert len(server.connections) == 1  # the first request took the warm one


async def test_warm_up_runs_the_models_and_reports_what_it_did(
    tmp_path: Path, redis_url: str, origin: web.AppRunner
) -> None:
    model = load_model("dot", dot_model(tmp_path / "dot.onnx"), DIM)
    forwarder = Forwarder(Origin(url=url_of(origin)))
    await forwarder.start()
    store = EmbeddingStore(connect(redis_url, 500, 4), Embeddings(dim=DIM))
    try:
        done = await warm_up(forwarder, store, [model, model])
        assert (done.origin, done.redis, done.models) == (True, True, 2)
    finally:
        await store.close()
        await forwarder.close()


async def test_a_silent_redis_and_a_closed_origin_cost_at_most_the_limit(
    silent_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    forwarder = Forwarder(Origin(url=f"http://127.0.0.1:{closed_port()}"))
    await forwarder.start()
    # A 5 s Redis timeout: only the warm-up's own limit can end the wait sooner.
    store = EmbeddingStore(
        connect(f"redis://127.0.0.1:{silent_port}/0", 5000, 4), Embeddings(dim=DIM)
    )
    started = time.perf_counter()
    try:
        with caplog.at_level(logging.WARNING, logger="rankgate.warmup"):
            done = await warm_up(forwarder, store, [], limit_s=0.2)
    finally:
        await store.close()
        await forwarder.close()
    assert time.perf_counter() - started < 1.5
    assert (done.origin, done.redis) == (False, False)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "origin not reached" in messages and "redis did not answer" in messages


async def test_a_proxy_starts_and_fails_open_with_neither_reachable(
    tmp_path: Path, silent_port: int
) -> None:
    dot_model(tmp_path / "dot.onnx")
    origin_url = f"http://127.0.0.1:{closed_port()}"
    cfg = write_config(tmp_path, origin_url, f"redis://127.0.0.1:{silent_port}/0", TEN_ITEMS_ROUTES)
    # cluster: false, or the cluster probe at start would wait the 5 s itself.
    cfg.write_text(cfg.read_text().replace("timeout_ms: 50}", "timeout_ms: 5000, cluster: false}"))
    started = time.perf_counter()
    async with running_proxy(cfg) as proxy:
        assert time.perf_counter() - started < WARM_LIMIT_S + 2.5  # not the 5 s timeout
        resp, _ = await proxy_get(proxy, "/feed")
        assert resp.status == 502  # the origin is down: our 502, as without a warm-up


def counting_origin(seen: list[str]) -> web.Application:
    """Every GET: the ten-item feed; the paths asked, in ``seen``."""
    body = feed_body(10)

    async def feed(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        if request.path == "/text":
            return web.Response(text="not a feed")
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", feed)
    return app


@pytest.mark.parametrize(
    ("sample", "asked", "lists"),
    [
        ("", [], 0),  # no sample: the origin sees nothing before the first request
        ("sample: /feed?page=1", ["/feed?page=1"], 1),
        ("sample: /text", ["/text"], 0),  # not a feed: nothing cached, the start goes on
    ],
)
async def test_a_sample_page_is_cached_before_the_first_request(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis, sample: str, asked: list[str], lists: int
) -> None:
    seed_ten_items(redis_db, tmp_path)
    seen: list[str] = []
    runner, _ = await start_app(counting_origin(seen))
    routes = TEN_ITEMS_ROUTES.replace("budget_ms: 500}", f"budget_ms: 500, {sample}}}")
    cfg = write_config(tmp_path, url_of(runner), redis_url, routes if sample else TEN_ITEMS_ROUTES)
    try:
        async with running_proxy(cfg) as proxy:
            cache = proxy.runtime.embeddings.cache
            assert seen == asked  # once, before ready
            assert (cache.lists, len(cache)) == (lists, 10 * lists)
            misses = cache.misses
            resp, _ = await proxy_get(proxy, "/feed")
            assert resp.headers["X-Rerank"].startswith("applied")
            # The first request found the whole page's vectors: no item went to Redis.
            assert (cache.misses == misses) == bool(lists)
    finally:
        await runner.cleanup()
