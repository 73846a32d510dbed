"""docs/guides/fleet.md runs as written: its config block and its shell commands (load
embeddings into a cluster, push routes, fleet status) against a real three-node cluster
and a serving rankgate that follows Redis."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import orjson
import yaml

from tests.support.clusters import ValkeyCluster
from tests.support.common import feed_origin, proxy_get, running_proxy, start_app

ROOT = Path(__file__).resolve().parents[2]
PAGE = "docs/guides/fleet.md"
README = (ROOT / PAGE).read_text()


def block(marker: str, lang: str) -> str:
    found = re.search(rf"<!-- {marker} -->\n```{lang}\n(.*?)```", README, re.S)
    assert found, f"{PAGE} lost its {marker} block"
    return found.group(1)


def test_the_config_block_is_what_the_commands_need() -> None:
    config = yaml.safe_load(block("fleet-config", "yaml"))
    assert config["redis"]["cluster"] is True and config["routes_source"] == "redis"
    commands = block("fleet-commands", "sh run-by: tests/docs/test_fleet.py").splitlines()
    assert all(c.startswith("rankgate ") and "--config rankgate.yaml" in c for c in commands)


async def test_fleet_commands_as_written(
    tmp_path: Path, cluster: ValkeyCluster, routes_key: bytes
) -> None:
    # The fleet key in the environment of the shell and of the serving process (the
    # README's setup step: the same Secret in every pod and for `routes push`).
    runner, origin = await start_app(feed_origin(20))
    config = block("fleet-config", "yaml").replace(
        "redis://redis-cluster-0.redis-cluster:6379", cluster.url
    )
    (tmp_path / "rankgate.yaml").write_text(
        config
        + textwrap.dedent(
            f"""\
            listen: {{host: 127.0.0.1, port: 0}}
            admin: {{host: 127.0.0.1, port: 0}}
            origin: {{url: "{origin}"}}
            routes: routes.yaml
            """
        )
    )
    shutil.copy(ROOT / "models" / "ranker_v1.onnx", tmp_path)
    (tmp_path / "routes.yaml").write_text(
        "models:\n  ranker_v1: {path: ranker_v1.onnx}\n"
        "routes:\n  - {name: feed, match: {path: /api/feed}, model: ranker_v1}\n"
    )
    rng = np.random.default_rng(3)
    np.savez(
        tmp_path / "users.npz",
        user_ids=[f"u{k}" for k in range(5)],
        user_vectors=rng.standard_normal((5, 32)).astype(np.float32),
    )
    np.savez(
        tmp_path / "items.npz",
        item_ids=[f"i{k}" for k in range(20)],
        item_vectors=rng.standard_normal((20, 32)).astype(np.float32),
    )
    env = {
        **os.environ,
        "RANKGATE_ROUTES_KEY": routes_key.decode(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    outputs = []
    try:
        async with running_proxy(tmp_path / "rankgate.yaml") as proxy:
            for line in block("fleet-commands", "sh run-by: tests/docs/test_fleet.py").splitlines():
                proc = await asyncio.create_subprocess_shell(
                    line,
                    cwd=tmp_path,
                    env=env,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                out, err = await asyncio.wait_for(proc.communicate(), 60)
                assert proc.returncode == 0, f"{line}\n{out.decode()}{err.decode()}"
                outputs.append(out.decode())
            resp, body = await proxy_get(proxy, "/api/feed", user="u3")
            assert resp.headers["X-Rerank"].startswith("applied; model=ranker_v1")
            assert sorted(i["id"] for i in orjson.loads(body)["items"]) == sorted(
                f"i{k}" for k in range(20)
            )
    finally:
        await runner.cleanup()
    users, items, push, status = outputs
    assert "loaded 5 user vectors" in users and "on a Redis Cluster" in users
    assert "loaded 20 item vectors" in items and "(16 buckets) on a Redis Cluster" in items
    assert "pushed version 1" in push and "1 process(es), 1 on the stored version" in push
    assert "stored   version 1" in status and status.rstrip().endswith(
        "1 process(es), 1 on the stored version"
    )
