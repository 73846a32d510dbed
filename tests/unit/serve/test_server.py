"""Graceful shutdown of a real ``python -m proxy serve`` process: SIGTERM/SIGINT stop
the listener, report not ready, and still deliver the requests in flight."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis
from aiohttp import web

from proxy.config.settings import load_settings
from proxy.config.yamlload import ConfigError
from proxy.serve.server import ProxyServer
from tests.support.common import (
    ProxyProcess,
    fetch,
    seed_ten_items,
    start_app,
    write_config,
)

ROUTES = """\
models:
  dot: {path: dot.onnx}
routes:
  - {name: slow-feed, match: {path: /slow-feed}, model: dot, budget_ms: 500}
"""
ITEMS = [{"id": f"i{k}"} for k in range(10)]


def origin_app(state: dict[str, Any]) -> web.Application:
    async def slow(request: web.Request) -> web.Response:
        state["arrived"].set()
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.Response(body=b"x" * 100_000, content_type="application/octet-stream")

    async def slow_feed(request: web.Request) -> web.Response:
        state["arrived"].set()
        await asyncio.sleep(1)
        return web.json_response({"items": ITEMS})

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/slow-feed", slow_feed)
    return app


@pytest.fixture
async def setup(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> AsyncIterator[tuple[Path, dict[str, Any]]]:
    seed_ten_items(redis_db, tmp_path, value=lambda k: (k % 3) - 1.0)
    state: dict[str, Any] = {"arrived": asyncio.Event()}
    runner, origin = await start_app(origin_app(state))
    cfg = write_config(tmp_path, origin, redis_url, ROUTES, "shutdown_timeout_s: 5\n")
    yield cfg, state
    await runner.cleanup()


async def refused(port: int, within_s: float = 5) -> bool:
    """True once a new connection is refused (polled: the drain begins on the next turn
    of the proxy's loop, and the machine may be busy)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return True
        writer.close()
        await asyncio.sleep(0.02)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_during_slow_requests_delivers_them(setup, sig) -> None:
    cfg, state = setup
    proc = await ProxyProcess.start(cfg)
    try:
        passthrough = asyncio.create_task(fetch(proc.url("/slow")))
        feed = asyncio.create_task(fetch(proc.url("/slow-feed"), headers={"X-User-Id": "u1"}))
        await asyncio.wait_for(state["arrived"].wait(), 5)
        await asyncio.sleep(0.05)  # both requests are at the origin now
        proc.proc.send_signal(sig)
        await proc.wait_log(lambda e: e.get("event") == "draining")
        # Not ready any more, and the public port no longer accepts ...
        status, _, body = await fetch(proc.admin_url("/readyz"))
        assert status == 503
        assert orjson.loads(body)["problems"]["draining"]
        assert await refused(proc.port)
        # ... but what was in flight is delivered whole.
        status, _, body = await passthrough
        assert status == 200 and body == b"x" * 100_000
        status, headers, body = await feed
        assert status == 200 and headers["X-Rerank"].startswith("applied")
        assert sorted(orjson.loads(body)["items"], key=lambda i: i["id"]) == ITEMS
        assert await proc.wait() == 0
        assert any(e.get("event") == "stopped" for e in proc.events())
        assert not any("Traceback" in line for line in proc.stderr)
    finally:
        await proc.kill()


async def test_shutdown_timeout_bounds_the_drain(setup, tmp_path) -> None:
    cfg, state = setup
    cfg.write_text(cfg.read_text().replace("shutdown_timeout_s: 5", "shutdown_timeout_s: 0.5"))
    proc = await ProxyProcess.start(cfg)
    try:
        slow = asyncio.create_task(fetch(proc.url("/slow?s=30")))
        await asyncio.wait_for(state["arrived"].wait(), 5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await proc.stop(signal.SIGTERM) == 0
        assert loop.time() - started < 5
        with pytest.raises(aiohttp.ClientError):
            await slow
    finally:
        await proc.kill()


async def test_second_signal_exits_at_once(setup) -> None:
    cfg, state = setup
    proc = await ProxyProcess.start(cfg)
    try:
        slow = asyncio.create_task(fetch(proc.url("/slow?s=30")))
        await asyncio.wait_for(state["arrived"].wait(), 5)
        proc.proc.send_signal(signal.SIGINT)
        await proc.wait_log(lambda e: e.get("event") == "draining")
        proc.proc.send_signal(signal.SIGINT)
        assert await proc.wait(5) == 1
        with pytest.raises(aiohttp.ClientError):
            await slow
    finally:
        await proc.kill()


async def test_stop_is_idempotent_and_port_errors_are_clean(setup) -> None:
    cfg, _ = setup
    server = ProxyServer(load_settings(cfg))
    await server.start()
    busy = load_settings(cfg).model_copy(
        update={"listen": load_settings(cfg).listen.model_copy(update={"port": server.port})}
    )
    other = ProxyServer(busy)
    with pytest.raises(ConfigError) as info:
        await other.start()
    assert f"listen: cannot listen on 127.0.0.1:{server.port}" in info.value.render()
    await server.stop()
    await server.stop()


def test_gc_tuning_freezes_the_startup_heap() -> None:
    code = (
        "import gc; from proxy.serve.server import tune_gc, GC_GEN0_THRESHOLD as T; tune_gc(); "
        "print(gc.get_freeze_count() > 1000, gc.get_threshold()[0] == T)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_exit_by_deadline_ends_a_process_a_thread_would_hold() -> None:
    """After SIGTERM's grace the process exits even when a non-daemon thread (one an
    interpreter exit would join forever) is stuck."""
    script = (
        "import threading, time\n"
        "from proxy.serve.server import exit_by_deadline\n"
        "threading.Thread(target=time.sleep, args=(600,)).start()\n"
        "exit_by_deadline(0.5)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30)
    assert done.returncode == 1 and time.monotonic() - started < 10
    assert b"after SIGTERM: exiting now" in done.stderr


async def test_a_stop_that_hangs_is_bounded_and_names_what_waited(
    setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """In-process (the demo, tests) no watchdog ends the process: the drain's own bound
    abandons a part that never finishes closing, closes the rest, and logs where each
    task waited."""
    import proxy.serve.server as server_module

    cfg, _ = setup
    monkeypatch.setattr(server_module, "EXIT_MARGIN_S", 0.5)
    server = ProxyServer(load_settings(cfg))
    await server.start()
    port = server.port

    async def never() -> None:
        await asyncio.Event().wait()

    server._stack.push_async_callback(never)  # closed first: the listener closes after it
    await server.stop()  # pytest-timeout fails the test if it never returns
    assert await refused(port)
    (line,) = [r.getMessage() for r in caplog.records if "stopping took over" in r.getMessage()]
    assert "stopping took over 6 s: abandoned; tasks waiting:" in line
    assert f"test_server.py:{never.__code__.co_firstlineno + 1}" in line  # where it hung
