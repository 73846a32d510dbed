"""GET /admin/routes and POST /admin/reload on the admin port, over real sockets."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from models.contract import sha256_file
from proxy.serve.server import ProxyServer
from tests.support.common import (
    dot_model,
    feed_origin,
    proxy_get,
    replace_file,
    running_proxy,
    start_app,
    wait_until,
    write_config,
)

ROUTES = """\
models:
  v1: {path: v1.onnx}
  v2: {path: v2.onnx}
routes:
  - name: home
    match: {path: /feed}
    model: v1
    experiments:
      - {name: beta, when: {header: {X-Beta: "true"}}, model: v2}
      - {when: {percent: 12.5}, model: v2}
      - {name: spring, when: {percent: 50, salt: spring-test}, model: none}
"""


@dataclass(frozen=True)
class Env:
    proxy: ProxyServer
    dir: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.proxy.admin_port}{path}"


async def start_env(tmp_path: Path, redis_url: str, extra: str = "") -> AsyncIterator[Env]:
    dot_model(tmp_path / "v1.onnx", sign=1.0)
    dot_model(tmp_path / "v2.onnx", sign=-1.0)
    runner, origin = await start_app(feed_origin())
    cfg = write_config(
        tmp_path, origin, redis_url, ROUTES, "logging: {access_log: false}\n" + extra
    )
    try:
        async with running_proxy(cfg) as proxy:
            yield Env(proxy, tmp_path)
    finally:
        await runner.cleanup()


@pytest.fixture
async def env(tmp_path: Path, redis_url: str) -> AsyncIterator[Env]:
    async for e in start_env(tmp_path, redis_url):
        yield e


async def call(
    env: Env, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, env.url(path), headers=headers or {}) as resp,
    ):
        return resp.status, await resp.json()


async def test_routes_shows_the_active_snapshot(env: Env) -> None:
    status, info = await call(env, "GET", "/admin/routes")
    assert status == 200
    assert info["version"] == info["active"]["version"] == 1
    assert (info["last_error"], info["watch"]) == (None, "events")
    assert info["reloads"] == {"ok": 0, "unchanged": 0, "error": 0}
    models = info["active"]["models"]
    assert set(models) == {"v1", "v2"}
    for name in ("v1", "v2"):
        assert models[name]["sha256"] == sha256_file(env.dir / f"{name}.onnx")
        assert models[name]["path"] == str((env.dir / f"{name}.onnx").resolve())
        assert models[name]["loaded_at"] > 0
    assert info["active"]["source_sha256"] == sha256_file(env.dir / "routes.yaml")
    [route] = info["active"]["routes"]
    assert route["name"] == "home" and route["model"] == "v1"
    # The arms in the order they are tried, with the salt each percent really uses.
    assert route["arms"] == [
        {"arm": "beta", "model": "v2", "when": {"header": {"X-Beta": "true"}}},
        {"arm": "exp1", "model": "v2", "when": {"percent": 12.5, "salt": "home:exp1"}},
        {"arm": "spring", "model": "none", "when": {"percent": 50.0, "salt": "spring-test"}},
        {"arm": "default", "model": "v1"},
    ]
    assert route["vary"] == ["Cookie", "X-User-Id", "X-Beta"]


async def test_reload_results_and_versions(env: Env) -> None:
    _, before = await call(env, "GET", "/admin/routes")
    status, body = await call(env, "POST", "/admin/reload")
    assert status == 200
    # Explicit reloads always swap (plugins may read files no hash covers).
    assert (body["reloaded"], body["result"], body["version"]) == (True, "ok", 2)

    # A routes-only change: a new version, the models' warm sessions kept (same loaded_at).
    env.proxy.runtime.store.path.write_text(ROUTES.replace("percent: 12.5", "percent: 20"))
    status, body = await call(env, "POST", "/admin/reload")
    assert (status, body["result"], body["version"], body["error"]) == (200, "ok", 3, None)
    _, after = await call(env, "GET", "/admin/routes")
    for name in ("v1", "v2"):
        assert (
            after["active"]["models"][name]["loaded_at"]
            == (before["active"]["models"][name]["loaded_at"])
        )
    assert after["last_attempt"]["trigger"] == "admin"

    env.proxy.runtime.store.path.write_text(ROUTES.replace("model: v1", "model: v3"))
    status, body = await call(env, "POST", "/admin/reload")
    assert (status, body["reloaded"], body["result"], body["version"]) == (422, False, "error", 3)
    assert "routes[0].model: unknown model 'v3'" in body["error"]
    _, info = await call(env, "GET", "/admin/routes")
    assert info["version"] == 3 and "unknown model 'v3'" in info["last_error"]
    assert info["last_error_at"] >= info["last_reload_at"]
    assert info["reloads"] == {"ok": 2, "unchanged": 0, "error": 1}


async def test_watcher_reload_shows_in_admin(env: Env) -> None:
    replace_file(env.proxy.runtime.store.path, ROUTES.replace("percent: 50", "percent: 60"))

    async def version_2() -> bool:
        return (await call(env, "GET", "/admin/routes"))[1]["version"] == 2

    await wait_until(version_2)
    _, info = await call(env, "GET", "/admin/routes")
    assert info["last_attempt"]["trigger"] in ("watch", "poll")
    assert info["active"]["routes"][0]["arms"][2]["when"]["percent"] == 60.0


async def test_admin_token_guards_routes_and_reload(tmp_path: Path, redis_url: str) -> None:
    async for env in start_env(
        tmp_path, redis_url, "admin: {host: 127.0.0.1, port: 0, token: s3cret}\n"
    ):
        for method, path in (("GET", "/admin/routes"), ("POST", "/admin/reload")):
            status, body = await call(env, method, path)
            assert (status, body) == (401, {"error": "unauthorized"})
            status, _ = await call(env, method, path, {"Authorization": "Bearer s3cret"})
            assert status == 200


# -- a reload is probed against each route's sample page --------------------------------


async def probed(env: Env, version: int) -> dict[str, Any]:
    """/admin/routes once the probe of ``version`` is in."""
    info: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal info
        info = (await call(env, "GET", "/admin/routes"))[1]
        return info["version"] == version and "sample_probe" in info["active"]["routes"][0]

    await wait_until(done)
    return info


async def test_a_reload_that_breaks_a_route_is_taken_and_warned(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rankgate.reload")
    path = env.proxy.runtime.store.path
    path.write_text(ROUTES.replace("    model: v1\n", "    model: v1\n    items: data.items\n"))
    status, body = await call(env, "POST", "/admin/reload")
    # Taken all the same (as version 2, or 3 when the file watcher saw the write first).
    assert (status, body["result"]) == (200, "ok")
    version = body["version"]
    info = await probed(env, version)
    probe = info["active"]["routes"][0]["sample_probe"]
    assert (probe["version"], probe["never"], probe["reason"]) == (version, True, "items-not-found")
    assert probe["detail"] == "GET /feed: no array at items: data.items in the sample page"
    assert info["warnings"] == [
        "home: would never re-rank: GET /feed: no array at items: data.items in the sample "
        "page (reason=items-not-found)"
    ]
    # One warning per probed version (the watcher's own reload of the write may warn too).
    lines = [r.getMessage() for r in caplog.records if getattr(r, "event", None) == "route-probe"]
    assert f"route home would never re-rank after reload (version {version})" in {
        m.split(":")[0] for m in lines
    }, lines
    # Requests say what the probe said.
    resp, _ = await proxy_get(env.proxy, "/feed", user="u5")  # u5: the default arm
    assert resp.headers["X-Rerank"] == "skipped; reason=items-not-found"

    path.write_text(ROUTES)  # fixed: the warning goes
    _, body = await call(env, "POST", "/admin/reload")
    info = await probed(env, body["version"])
    assert info["warnings"] == []
    probe = info["active"]["routes"][0]["sample_probe"]
    assert (probe["never"], probe["reason"], probe["detail"]) == (
        False,
        None,
        "GET /feed: 12 items at items: items, 12 with an id",
    )


async def test_the_probe_never_holds_a_reload_up(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # A sample page the origin answers in 5 s, past the probe's own limit (1 s here).
    monkeypatch.setattr(env.proxy.runtime.probes, "timeout_s", 1.0)
    path = env.proxy.runtime.store.path
    path.write_text(ROUTES.replace("    model: v1\n", "    model: v1\n    sample: /slow?ms=5000\n"))
    started = time.monotonic()
    status, body = await call(env, "POST", "/admin/reload")
    assert (status, body["result"]) == (200, "ok")
    _, info = await call(env, "GET", "/admin/routes")  # the loop is free meanwhile
    # Both answered long before the sample page could have (a shared machine: margins).
    assert time.monotonic() - started < 3.0
    info = await probed(env, body["version"])
    assert time.monotonic() - started < 4.5  # bounded by the probe's limit, not the origin
    probe = info["active"]["routes"][0]["sample_probe"]
    assert (probe["probed"], probe["never"]) == (False, False)  # unknown, not a warning
    assert "no answer within 1 s" in probe["detail"] and info["warnings"] == []
