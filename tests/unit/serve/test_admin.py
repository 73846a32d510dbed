"""/healthz and /readyz on the admin listener: before and after warm-up, with Redis
down, while draining; /metrics is open while /admin/* takes the token."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from proxy.config.settings import load_settings
from proxy.serve.server import ProxyServer
from tests.support.common import dot_model, fetch, running_proxy, start_app, write_config

ROUTES = """\
models:
  dot: {path: dot.onnx}
routes:
  - {name: feed, match: {path: /feed}, model: dot}
"""


def origin_app(gate: asyncio.Event) -> web.Application:
    async def slow(request: web.Request) -> web.Response:
        gate.set()
        await asyncio.sleep(0.5)
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/slow", slow)
    return app


@pytest.fixture
async def origin() -> AsyncIterator[tuple[str, asyncio.Event]]:
    gate = asyncio.Event()
    runner, url = await start_app(origin_app(gate))
    yield url, gate
    await runner.cleanup()


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def get_json(port: int, path: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    status, _, body = await fetch(f"http://127.0.0.1:{port}{path}", **kw)
    return status, orjson.loads(body)


async def test_ready_only_after_warm_up(tmp_path: Path, origin, redis_url: str) -> None:
    url, _ = origin
    dot_model(tmp_path / "dot.onnx")
    server = ProxyServer(load_settings(write_config(tmp_path, url, redis_url, ROUTES)))
    # The admin listener comes up first: alive, not ready while models load.
    await server.start_admin()
    try:
        status, body = await get_json(server.admin_port, "/healthz")
        assert status == 200 and body["status"] == "ok"
        status, body = await get_json(server.admin_port, "/readyz")
        assert status == 503
        assert body["ready"] is False and "snapshot" in body["problems"]
        await server.start_serving()
        status, body = await get_json(server.admin_port, "/readyz")
        assert status == 200, body
        assert body["ready"] is True and body["redis"] == "ok"
        assert body["models"] == ["dot"] and body["snapshot_version"] == 1
    finally:
        await server.stop()


async def test_not_ready_while_draining(tmp_path: Path, origin, redis_url: str) -> None:
    url, gate = origin
    dot_model(tmp_path / "dot.onnx")
    server = ProxyServer(load_settings(write_config(tmp_path, url, redis_url, ROUTES)))
    await server.start()
    admin = server.admin_port
    slow = asyncio.create_task(fetch(f"http://127.0.0.1:{server.port}/slow"))
    await asyncio.wait_for(gate.wait(), 5)
    stopping = asyncio.create_task(server.stop())
    await asyncio.sleep(0.05)
    status, body = await get_json(admin, "/readyz")
    assert status == 503 and body["draining"] is True
    assert body["problems"] == {"draining": "shutting down"}
    status, body = await get_json(admin, "/healthz")
    assert status == 200 and body["draining"] is True  # alive: do not kill a drain
    status, _, text = await slow
    assert status == 200 and text == b"done"
    await stopping


@pytest.mark.parametrize("required", [False, True])
async def test_redis_down(tmp_path: Path, origin, required: bool) -> None:
    url, _ = origin
    dot_model(tmp_path / "dot.onnx")
    extra = f"admin: {{host: 127.0.0.1, port: 0, readyz_requires_redis: {str(required).lower()}}}\n"
    cfg = write_config(tmp_path, url, f"redis://127.0.0.1:{dead_port()}/0", ROUTES)
    text = cfg.read_text().replace("admin: {host: 127.0.0.1, port: 0}\n", "")
    cfg.write_text(text + extra)
    async with running_proxy(cfg) as server:
        status, body = await get_json(server.admin_port, "/readyz")
    assert body["redis"].startswith("redis-unavailable")
    if required:
        assert status == 503 and body["problems"]["redis"].startswith("redis-unavailable")
    else:
        # The proxy serves without Redis (origin order): still ready, reason in the body.
        assert status == 200 and body["problems"] == {}


async def test_metrics_open_admin_token_protected(tmp_path: Path, origin, redis_url) -> None:
    url, _ = origin
    dot_model(tmp_path / "dot.onnx")
    cfg = write_config(tmp_path, url, redis_url, ROUTES)
    text = cfg.read_text().replace(
        "admin: {host: 127.0.0.1, port: 0}", "admin: {host: 127.0.0.1, port: 0, token: s3cret}"
    )
    cfg.write_text(text)
    async with running_proxy(cfg) as server:
        base = f"http://127.0.0.1:{server.admin_port}"
        for path in ("/metrics", "/healthz", "/readyz"):
            assert (await fetch(base + path))[0] == 200
        assert (await fetch(base + "/admin/routes"))[0] == 401
        auth = {"Authorization": "Bearer s3cret"}
        assert (await fetch(base + "/admin/routes", headers=auth))[0] == 200
