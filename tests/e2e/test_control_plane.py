"""The control plane cannot be turned against the fleet: each hostile routes version,
replayed against a real ``rankgate serve`` process through the file (``POST
/admin/reload``) and through Redis (``routes_source: redis``), is refused with the last
good version serving, the next good version is taken, and SIGTERM ends the process in
time whatever a reload thread is doing."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from proxy.config.settings import RoutesRedis
from proxy.routing import signing, versions
from proxy.serve.server import EXIT_MARGIN_S
from tests.conftest import ROUTES_KEY
from tests.support import attacks
from tests.support.common import (
    ProxyProcess,
    dot_model,
    fetch,
    metric,
    parse_metrics,
    seed_ten_items,
    start_app,
    ten_item_origin,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("routes_key")

UP = [f"i{k}" for k in range(9, -1, -1)]  # dot.onnx
DOWN = [f"i{k}" for k in range(10)]  # neg.onnx
CFG = RoutesRedis()
GRACE_S = 2.0  # shutdown_timeout_s below
SLOW_PLUGIN = """\
import time


class Stuck:
    def __init__(self):
        time.sleep(60)

    def rerank(self, ctx):
        pass
"""


@pytest.fixture
async def origin(tmp_path: Path, redis_db: redis.Redis) -> AsyncIterator[str]:
    seed_ten_items(redis_db, tmp_path)  # and dot.onnx
    dot_model(tmp_path / "neg.onnx", sign=-1.0)
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "stuck_plugin.py").write_text(SLOW_PLUGIN)
    runner, url = await start_app(ten_item_origin())
    try:
        yield url
    finally:
        await runner.cleanup()


def config(tmp: Path, origin: str, redis_url: str, source: str, timeout_s: float = 4) -> Path:
    (tmp / "routes.yaml").write_bytes(attacks.GOOD_UP)
    path = tmp / "rankgate.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            listen: {{host: 127.0.0.1, port: 0}}
            admin: {{host: 127.0.0.1, port: 0}}
            origin: {{url: "{origin}", connect_timeout_s: 1, timeout_s: 5}}
            redis: {{url: "{redis_url}", timeout_ms: 500}}
            embeddings: {{dim: 8, item_cache: {{max_items: 0}}}}
            logging: {{format: json, access_log: false}}
            routes: routes.yaml
            routes_watch: false
            routes_source: {source}
            routes_redis: {{poll_s: 0.3, fleet_ttl_s: 2}}
            routes_limits: {{reload_timeout_s: {timeout_s}}}
            plugins: {{paths: [slow]}}
            shutdown_timeout_s: {GRACE_S}
            """
        )
    )
    return path


async def order(proc: ProxyProcess) -> list[str]:
    status, _, body = await fetch(proc.url("/feed"), headers={"X-User-Id": "u1"})
    assert status == 200
    return [item["id"] for item in orjson.loads(body)["items"]]


async def admin(proc: ProxyProcess, path: str, method: str = "GET") -> Any:
    _, _, body = await fetch(proc.admin_url(path), method=method)
    return body.decode() if path == "/metrics" else orjson.loads(body)


async def refused(proc: ProxyProcess, reason: str) -> float:
    return metric(
        parse_metrics(await admin(proc, "/metrics")), "rankgate_routes_refused_total", reason=reason
    )


async def stop_in_time(proc: ProxyProcess) -> None:
    started = time.monotonic()
    await proc.stop(limit_s=GRACE_S + EXIT_MARGIN_S + 10)
    assert time.monotonic() - started < GRACE_S + EXIT_MARGIN_S + 1, "SIGTERM took too long"


# -- the file ---------------------------------------------------------------------------


async def test_file_attacks_are_refused_and_the_next_good_file_is_taken(
    tmp_path: Path, origin: str, redis_url: str
) -> None:
    attacks.random_model(tmp_path / "random.onnx")
    os.mkfifo(tmp_path / "fifo.onnx")
    cases = {
        **attacks.hostile(tmp_path),
        "200MB-random": (attacks.routes("dot", "random.onnx"), "models.dot"),
        "fifo": (attacks.routes("dot", "fifo.onnx"), "not a regular file"),
    }
    # A bound far above any refusal here: each must be refused for its own reason.
    proc = await ProxyProcess.start(config(tmp_path, origin, redis_url, "file", timeout_s=60))
    try:
        assert await order(proc) == UP
        good = [attacks.GOOD_DOWN, attacks.GOOD_UP]
        for name, (raw, says) in cases.items():
            (tmp_path / "routes.yaml").write_bytes(raw)
            started = time.monotonic()
            answer = await admin(proc, "/admin/reload", "POST")
            assert answer["reloaded"] is False, name
            assert says in answer["error"], (name, answer["error"][:500])
            limit = name in ("30MB-comments", "20000-models")
            assert answer["reason"] == ("limit" if limit else "invalid"), name
            # Promptly: nothing is read forever (200 MB is read and hashed, within limits).
            assert time.monotonic() - started < (30 if name == "200MB-random" else 4), name
            assert says in (await admin(proc, "/admin/routes"))["last_error"], name
            expected = UP if good[0] is attacks.GOOD_DOWN else DOWN
            assert await order(proc) == expected, name  # the last good version serves
            # The next good file is taken.
            (tmp_path / "routes.yaml").write_bytes(good[0])
            assert (await admin(proc, "/admin/reload", "POST"))["reloaded"] is True, name
            assert await order(proc) == (DOWN if good[0] is attacks.GOOD_DOWN else UP), name
            good.reverse()
        assert not any(attacks.ZEN in line for line in proc.stdout + proc.stderr)
        assert await refused(proc, "limit") == 2  # 30 MB, 20,000 models
        assert await refused(proc, "invalid") == len(cases) - 2
    finally:
        await stop_in_time(proc)


async def test_a_reload_past_its_bound_is_abandoned_and_sigterm_still_exits(
    tmp_path: Path, origin: str, redis_url: str
) -> None:
    """A plugin that never finishes loading (standing in for any stuck step) holds one
    reload thread: that reload is refused at reload_timeout_s, the next one proceeds,
    and SIGTERM exits within the grace while the thread is still stuck."""
    proc = await ProxyProcess.start(config(tmp_path, origin, redis_url, "file"))
    try:
        stuck = attacks.GOOD_DOWN + (
            b"  - name: stuck\n    match: {path: /stuck}\n    model: neg\n"
            b"    plugins: [{use: 'stuck_plugin:Stuck'}]\n"
        )
        (tmp_path / "routes.yaml").write_bytes(stuck)
        started = time.monotonic()
        answer = await admin(proc, "/admin/reload", "POST")
        assert 3.5 < time.monotonic() - started < 8, answer
        assert answer["reloaded"] is False and "abandoned after 4s" in answer["error"]
        assert await order(proc) == UP
        assert await refused(proc, "timeout") == 1
        (tmp_path / "routes.yaml").write_bytes(attacks.GOOD_DOWN)
        assert (await admin(proc, "/admin/reload", "POST"))["reloaded"] is True
        assert await order(proc) == DOWN
        # Another stuck reload in flight when SIGTERM arrives.
        (tmp_path / "routes.yaml").write_bytes(stuck)
        pending = asyncio.ensure_future(admin(proc, "/admin/reload", "POST"))
        await asyncio.sleep(0.5)
    finally:
        await stop_in_time(proc)
    pending.cancel()


# -- Redis ------------------------------------------------------------------------------


def hand_written(client: redis.Redis, raw: bytes, version: int, sig: str | None = None) -> None:
    """What someone with write access to Redis (and no fleet key) can store."""
    fields: dict[str, Any] = {
        "yaml": raw,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "version": version,
        "pushed_at": repr(time.time()),
        "pushed_by": "ops@trusted\x1b[2J",
    }
    if sig is not None:
        fields["sig"] = sig
    client.delete(CFG.key)
    client.hset(CFG.key, mapping=fields)
    client.publish(CFG.channel, f"{version} {fields['sha256']}")


async def refusal_of(proc: ProxyProcess, version: int) -> str:
    async def seen() -> bool:
        info = (await admin(proc, "/admin/routes"))["redis"]
        return (info.get("refused") or {}).get("version") == version

    await wait_until(seen, limit_s=10)
    return str((await admin(proc, "/admin/routes"))["redis"]["refused"]["error"])


async def routes_status(cfg: Path, env: dict[str, str]) -> str:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "routes",
        "status",
        "--config",
        str(cfg),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(child.communicate(), 30)
    return out.decode() + err.decode()


async def test_redis_attacks_change_nothing_and_say_so(
    tmp_path: Path, origin: str, redis_url: str, redis_db: redis.Redis
) -> None:
    cfg = config(tmp_path, origin, redis_url, "redis", timeout_s=60)
    versions.push(redis_db, CFG, attacks.GOOD_UP, ROUTES_KEY)
    procs = [await ProxyProcess.start(cfg) for _ in range(2)]
    try:
        for proc in procs:
            await wait_until(lambda p=proc: _serves(p, UP), limit_s=10)
        version = versions.head(redis_db, CFG).version  # type: ignore[union-attr]
        # Unsigned, with its own sha256 and any pushed_by: switch the default arm off.
        version += 1
        hand_written(redis_db, attacks.routes("none", "dot.onnx"), version)
        for proc in procs:
            assert "sig: unsigned: refused" in await refusal_of(proc, version)
            assert await order(proc) == UP
            assert await refused(proc, "signature") == 1
            assert any(f"routes version {version} refused" in line for line in proc.stderr)
        text = await routes_status(cfg, {**os.environ})
        assert f"refused {version}: redis key {CFG.key} version {version}: sig: unsigned" in text
        assert "\x1b" not in text  # a stored pushed_by cannot write to the terminal
        unkeyed = {k: v for k, v in os.environ.items() if k != "RANKGATE_ROUTES_KEY"}
        assert "UNSIGNED: every process refuses it" in await routes_status(cfg, unkeyed)

        # Signed with another key.
        version += 1
        raw = attacks.GOOD_DOWN
        forged = signing.sign(
            b"not-the-fleet-key-at-all-0000000",
            signing.message(CFG.key, version, hashlib.sha256(raw).hexdigest(), "1", "x"),
        )
        hand_written(redis_db, raw, version, forged)
        for proc in procs:
            assert "sig: signature does not verify" in await refusal_of(proc, version)
            assert await order(proc) == UP

        # Every hostile file, signed by a key holder (pushed past the CLI's checks).
        for name, (raw, says) in attacks.hostile(tmp_path).items():
            head, _ = versions.push(redis_db, CFG, raw, ROUTES_KEY)
            for proc in procs:
                assert says in await refusal_of(proc, head.version), name
                assert await order(proc) == UP, name
        assert not any(attacks.ZEN in line for p in procs for line in p.stdout + p.stderr)

        # The next good push is taken by every process.
        versions.push(redis_db, CFG, attacks.GOOD_DOWN, ROUTES_KEY)
        for proc in procs:
            await wait_until(lambda p=proc: _serves(p, DOWN), limit_s=10)
    finally:
        for proc in procs:
            await stop_in_time(proc)


async def _serves(proc: ProxyProcess, ids: list[str]) -> bool:
    return await order(proc) == ids


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_redis_source_without_a_key_refuses_to_start(
    tmp_path: Path, origin: str, redis_url: str, workers: str
) -> None:
    """One process or a supervisor: a clear error, never a start that would accept
    unsigned versions."""
    cfg = config(tmp_path, origin, redis_url, "redis")
    env = {k: v for k, v in os.environ.items() if k != "RANKGATE_ROUTES_KEY"}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "serve",
        "--config",
        str(cfg),
        "--workers",
        workers,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _, err = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode != 0
    assert "RANKGATE_ROUTES_KEY is not set" in err.decode(), err.decode()[-2000:]
