"""docs/guides/fleet.md runs as written: its key and push blocks in a shell, against a
real Valkey and a real ``rankgate serve`` process that follows Redis."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import textwrap
from pathlib import Path

import redis

from proxy.config.settings import RoutesRedis
from proxy.routing import versions
from tests.support.common import ProxyProcess, seed_ten_items, start_app, ten_item_origin

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "guides" / "fleet.md").read_text()


def block(marker: str) -> str:
    found = re.search(rf"<!-- {marker} -->\n```sh[^\n]*\n(.*?)```", GUIDE, re.S)
    assert found, f"fleet.md lost its {marker} block"
    return found.group(1)


async def shell(script: str, cwd: Path) -> str:
    """``script`` in one bash, as a user would type it; without a routes key of its own."""
    env = {k: v for k, v in os.environ.items() if k != "RANKGATE_ROUTES_KEY"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-e",
        "-c",
        script,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_key_and_push_blocks_as_written(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    seed_ten_items(redis_db, tmp_path)  # dot.onnx and the vectors
    runner, origin = await start_app(ten_item_origin())
    (tmp_path / "routes.yaml").write_text(
        "models:\n  dot: {path: dot.onnx}\n"
        "routes:\n  - {name: feed, match: {path: /feed}, model: dot}\n"
    )
    (tmp_path / "rankgate.yaml").write_text(
        textwrap.dedent(
            f"""\
            listen: {{host: 127.0.0.1, port: 0}}
            admin: {{host: 127.0.0.1, port: 0}}
            origin: {{url: "{origin}"}}
            redis: {{url: "{redis_url}"}}
            embeddings: {{dim: 8}}
            routes: routes.yaml
            routes_source: redis
            routes_redis: {{poll_s: 0.3, fleet_ttl_s: 2}}
            """
        )
    )
    await shell(block("fleet-key"), tmp_path)
    key = (tmp_path / "routes.key").read_text().strip()
    assert len(key) == 64
    proc = await ProxyProcess.start(tmp_path / "rankgate.yaml", env={"RANKGATE_ROUTES_KEY": key})
    try:
        out = await shell(block("fleet-push"), tmp_path)
    finally:
        await proc.stop()
        await runner.cleanup()
    assert "pushed version 1" in out and "signature ok" in out
    assert out.rstrip().endswith("1 process(es), 1 on the stored version")
    stored = versions.fetch(redis_db, RoutesRedis())
    assert stored is not None and stored.signature_problem(key.encode(), "rankgate:routes") is None
