"""routes_source: redis in a serving process (proxy/routing/sources.py): real Valkey, real
origin, real models. Pushes are swapped in as a reload would; a refused version leaves
the process where it was, and says so; a cut subscription or a lost message is caught
up by the re-read on reconnect and by the poll."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from proxy.config.settings import RoutesRedis
from proxy.routing import versions
from proxy.serve.server import ProxyServer
from tests.support.clusters import free_port
from tests.support.common import (
    dot_model,
    fetch,
    proxy_get,
    running_proxy,
    seed_ten_items,
    start_app,
    ten_item_origin,
    wait_until,
)

ROUTES = """\
models:
  {model}: {{path: {model}.onnx}}
routes:
  - {{name: feed, match: {{path: /feed}}, model: {model}, budget_ms: 500}}
"""
DOT = ROUTES.format(model="dot").encode()  # i9 first
NEG = ROUTES.format(model="neg").encode()  # i0 first
MISSING = ROUTES.format(model="ghost").encode()  # no ghost.onnx next to the config
UP = [f"i{k}" for k in range(9, -1, -1)]
DOWN = [f"i{k}" for k in range(10)]
CFG = RoutesRedis()

Factory = Callable[..., Any]


def config(tmp: Path, origin: str, redis_url: str, file: bytes | None, extra: str = "") -> Path:
    dot_model(tmp / "neg.onnx", sign=-1.0)  # dot.onnx: seed_ten_items writes it
    if file is not None:
        (tmp / "routes.yaml").write_bytes(file)
    path = tmp / "rankgate.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            listen: {{host: 127.0.0.1, port: 0}}
            admin: {{host: 127.0.0.1, port: 0}}
            origin: {{url: "{origin}", connect_timeout_s: 1, timeout_s: 2}}
            redis: {{url: "{redis_url}", timeout_ms: 200}}
            embeddings: {{dim: 8, item_cache: {{max_items: 0}}}}
            routes: routes.yaml
            routes_source: redis
            routes_redis: {{poll_s: 0.3, fleet_ttl_s: 2}}
            """
        )
        + textwrap.dedent(extra)
    )
    return path


@pytest.fixture
async def origin(tmp_path: Path, redis_db: redis.Redis) -> AsyncIterator[str]:
    seed_ten_items(redis_db, tmp_path)
    runner, url = await start_app(ten_item_origin())
    try:
        yield url
    finally:
        await runner.cleanup()


async def order(proxy: ProxyServer) -> list[str]:
    _, body = await proxy_get(proxy, "/feed")
    return [item["id"] for item in orjson.loads(body)["items"]]


async def admin_routes(proxy: ProxyServer) -> dict[str, Any]:
    status, _, body = await fetch(f"http://127.0.0.1:{proxy.admin_port}/admin/routes")
    assert status == 200
    return orjson.loads(body)


def serves(proxy: ProxyServer, ids: list[str]) -> Callable[[], Any]:
    async def check() -> bool:
        return await order(proxy) == ids

    return check


async def test_file_until_a_push_then_each_push(
    tmp_path: Path, origin: str, redis_url: str, redis_db: redis.Redis
) -> None:
    async with running_proxy(config(tmp_path, origin, redis_url, DOT)) as proxy:
        assert await order(proxy) == UP  # the routes file, nothing pushed yet
        info = (await admin_routes(proxy))["redis"]
        assert (info["source"], info["version"], info["stored"]) == ("file", None, None)
        assert [e["process"] for e in info["fleet"]] == [info["process"]]

        head, _ = versions.push(redis_db, CFG, NEG)
        await wait_until(serves(proxy, DOWN), limit_s=5)
        info = (await admin_routes(proxy))["redis"]
        assert (info["source"], info["version"], info["sha256"]) == ("redis", 1, head.sha256)
        assert info["stored"] == {"version": 1, "sha256": head.sha256}
        assert info["fleet"][0]["version"] == 1 and info["subscribed"]

        versions.push(redis_db, CFG, DOT)
        await wait_until(serves(proxy, UP), limit_s=5)
        assert (await admin_routes(proxy))["redis"]["version"] == 2
    # A process that stops leaves the fleet at once.
    assert versions.fleet(redis_db, CFG) == []


async def test_starts_on_the_stored_version(
    tmp_path: Path, origin: str, redis_url: str, redis_db: redis.Redis
) -> None:
    versions.push(redis_db, CFG, NEG)
    async with running_proxy(config(tmp_path, origin, redis_url, None)) as proxy:
        assert await order(proxy) == DOWN  # the first request already: no file needed
        assert proxy.runtime.store.current.version == 1


async def test_no_routes_anywhere_passes_through(
    tmp_path: Path, origin: str, redis_url: str, redis_db: redis.Redis
) -> None:
    async with running_proxy(config(tmp_path, origin, redis_url, None)) as proxy:
        resp, _ = await proxy_get(proxy, "/feed")
        assert "X-Rerank" not in resp.headers  # no route: the origin's answer as it is
        assert await order(proxy) == DOWN
        versions.push(redis_db, CFG, DOT)
        await wait_until(serves(proxy, UP), limit_s=5)


async def test_refused_versions_leave_the_process_where_it_was(
    tmp_path: Path, origin: str, redis_url: str, redis_db: redis.Redis
) -> None:
    versions.push(redis_db, CFG, DOT)
    async with running_proxy(config(tmp_path, origin, redis_url, None)) as proxy:
        store = proxy.runtime.store
        # A model file this process lacks (the push skipped the CLI's validation).
        versions.push(redis_db, CFG, MISSING)
        await wait_until(lambda: store.last_error is not None, limit_s=5)
        assert await order(proxy) == UP
        info = (await admin_routes(proxy))["redis"]
        assert info["version"] == 1 and info["refused"]["version"] == 2
        assert "models.ghost.path: file not found" in info["refused"]["error"]
        assert "redis key rankgate:routes version 2" in info["refused"]["error"]
        await wait_until(
            lambda: versions.fleet(redis_db, CFG)[0]["refused"] is not None, limit_s=5
        )

        # Bytes that do not hash to the stored sha256.
        good, _ = versions.push(redis_db, CFG, NEG)
        await wait_until(serves(proxy, DOWN), limit_s=5)
        assert (await admin_routes(proxy))["redis"]["refused"] is None
        redis_db.hset(CFG.key, mapping={"yaml": DOT, "version": 9})  # sha256 left as NEG's
        redis_db.publish(CFG.channel, "9")
        await wait_until(
            lambda: (
                proxy.runtime.store.last_error is not None
                and "sha256" in proxy.runtime.store.last_error
            ),
            limit_s=5,
        )
        assert await order(proxy) == DOWN
        info = (await admin_routes(proxy))["redis"]
        assert (info["version"], info["refused"]["version"]) == (good.version, 9)


async def test_cut_subscription_is_re_read_on_reconnect(
    tmp_path: Path, origin: str, redis_url: str, redis_db: redis.Redis
) -> None:
    path = config(tmp_path, origin, redis_url, DOT)  # a poll too slow to be what finds it
    path.write_text(
        path.read_text().replace("poll_s: 0.3, fleet_ttl_s: 2", "poll_s: 60, fleet_ttl_s: 120")
    )
    async with running_proxy(path) as proxy:
        source = proxy.runtime.follower
        assert source is not None and getattr(source, "subscribed", False)
        assert redis_db.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
        versions.push(redis_db, CFG, NEG)  # while the subscription is down
        await wait_until(serves(proxy, DOWN), limit_s=5)
        await wait_until(lambda: source.subscribed, limit_s=5)  # type: ignore[attr-defined]


async def test_a_lost_message_is_caught_by_the_poll(
    tmp_path: Path, origin: str, redis_url: str, redis_db: redis.Redis
) -> None:
    """subscribe: false (a Redis proxy without pub/sub): only the poll finds pushes."""
    path = config(tmp_path, origin, redis_url, DOT)
    path.write_text(
        path.read_text().replace("fleet_ttl_s: 2}", "fleet_ttl_s: 2, subscribe: false}")
    )
    async with running_proxy(path) as proxy:
        assert redis_db.pubsub_numsub(CFG.channel) == [(CFG.channel.encode(), 0)]
        versions.push(redis_db, CFG, NEG)
        await wait_until(serves(proxy, DOWN), limit_s=5)
        info = (await admin_routes(proxy))["redis"]
        assert info["version"] == 1 and info["subscribed"] is False


@pytest.mark.parametrize("cluster", ["null", "true"])
async def test_redis_down_at_start_serves_the_file(
    tmp_path: Path, origin: str, cluster: str
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}"
    path = config(tmp_path, origin, dead, DOT)
    path.write_text(
        path.read_text().replace("timeout_ms: 200}", f"timeout_ms: 200, cluster: {cluster}}}")
    )
    async with running_proxy(path) as proxy:
        resp, _ = await proxy_get(proxy, "/feed")
        # The routes file serves (the user's vector is unreachable too: fail open).
        assert resp.headers["X-Rerank"] == "skipped; reason=redis-unavailable"
        info = (await admin_routes(proxy))["redis"]
        assert info["source"] == "file" and "Redis unreachable" in info["fleet_error"]


async def test_each_worker_follows_and_reports(
    tmp_path: Path, origin: str, redis_url: str, redis_db: redis.Redis
) -> None:
    """`serve --workers 2`: every worker process follows Redis and reports itself; the
    supervisor's /admin/routes (asked of one worker) lists both."""
    from tests.support.common import ProxyProcess

    proc = await ProxyProcess.start(config(tmp_path, origin, redis_url, DOT), "--workers", "2")
    try:
        await wait_until(lambda: len(versions.fleet(redis_db, CFG)) == 2, limit_s=20)
        head, _ = versions.push(redis_db, CFG, NEG)
        await wait_until(
            lambda: [e["version"] for e in versions.fleet(redis_db, CFG)] == [1, 1],
            limit_s=10,
        )
        status, _, body = await fetch(proc.admin_url("/admin/routes"))
        info = orjson.loads(body)["redis"]
        assert status == 200 and info["stored"]["version"] == head.version
        assert len(info["fleet"]) == 2 and {e["pid"] for e in info["fleet"]} != {proc.proc.pid}

        async def down() -> bool:
            _, _, body = await fetch(proc.url("/feed"), headers={"X-User-Id": "u1"})
            return [i["id"] for i in orjson.loads(body)["items"]] == DOWN

        await wait_until(down, limit_s=5)
    finally:
        assert await proc.stop() == 0
    assert versions.fleet(redis_db, CFG) == []  # each worker left on its way out
