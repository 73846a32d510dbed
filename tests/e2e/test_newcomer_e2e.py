"""The first ten minutes, end to end with real processes: an origin on 127.0.0.1 serving
``{"data": {"posts": [{"pid": ...}, ...]}}``, a model and an npz of vectors, no Redis.
``rankgate init``, ``rankgate embeddings load``, ``rankgate serve``: re-ranked responses,
still after a restart; a ``kill -9`` of rankgate, then a new start, leaves exactly one
Valkey (the one it left, reused), with one worker and with a supervisor and two."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from aiohttp import web

from tests.support.common import (
    DIM,
    ProxyProcess,
    dot_model,
    dot_order,
    fetch,
    start_app,
    valkey_pids,
)

PIDS = list(range(101, 113))


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Path]:
    """A directory holding the user's model and vectors; an origin serving posts."""

    async def posts(request: web.Request) -> web.Response:
        return web.json_response({"data": {"posts": [{"pid": p, "t": str(p)} for p in PIDS]}})

    app = web.Application()
    app.router.add_get("/api/posts", posts)
    runner, origin = await start_app(app)
    (tmp_path / "origin").write_text(origin)
    dot_model(tmp_path / "my_ranker.onnx")
    rng = np.random.default_rng(13)
    np.savez(
        tmp_path / "vectors.npz",
        user_ids=np.array(["alice", "bob"]),
        user_vectors=rng.standard_normal((2, DIM)).astype(np.float32),
        item_ids=np.array(PIDS),
        item_vectors=rng.standard_normal((len(PIDS), DIM)).astype(np.float32),
    )
    try:
        yield tmp_path
    finally:
        await runner.cleanup()
        for pid in valkey_pids(tmp_path / "conf" / ".rankgate" / "valkey"):
            os.kill(pid, signal.SIGKILL)


async def rankgate(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


def expected_order(site: Path, user: str) -> list[int]:
    with np.load(site / "vectors.npz") as npz:
        users = dict(zip(npz["user_ids"].tolist(), npz["user_vectors"], strict=True))
        items = {
            str(p): v for p, v in zip(npz["item_ids"].tolist(), npz["item_vectors"], strict=True)
        }
    return [int(p) for p in dot_order(users[user], items)]


async def order(proc: ProxyProcess, user: str) -> tuple[str, list[int]]:
    status, headers, body = await fetch(proc.url("/api/posts"), headers={"X-User-Id": user})
    assert status == 200
    return headers["X-Rerank"], [p["pid"] for p in orjson.loads(body)["data"]["posts"]]


async def set_up(site: Path) -> Path:
    conf = site / "conf"
    origin = (site / "origin").read_text()
    out = await rankgate(
        *("init", "--origin", origin, "--feed", "/api/posts", "--dir", str(conf)),
        *("--model", str(site / "my_ranker.onnx"), "--listen", "0", "--admin", "0"),
    )
    assert "ids     pid: 12 of 12 items" in out
    config = conf / "rankgate.yaml"
    out = await rankgate("embeddings", "load", str(site / "vectors.npz"), "--config", str(config))
    assert "loaded 2 user vectors (dim 8)" in out and "loaded 12 item vectors (dim 8)" in out
    assert valkey_pids(conf / ".rankgate" / "valkey") == []  # started for the load, stopped
    return config


async def test_one_worker_restart_and_kill(site: Path) -> None:
    config = await set_up(site)
    data = config.parent / ".rankgate" / "valkey"
    alice = expected_order(site, "alice")
    assert alice != PIDS

    proc = await ProxyProcess.start(config)
    try:
        assert await order(proc, "alice") == ("applied; model=my_ranker; arm=default", alice)
        (valkey,) = valkey_pids(data)
        started = await proc.wait_log(lambda e: e.get("event") == "valkey")
        assert started["url"].startswith("redis://127.0.0.1:") and started["started"] == "True"
        # Loaded while rankgate runs: into the same server, at once.
        np.savez(site / "more.npz", user_ids=np.array(["carol"]), user_vectors=np.ones((1, DIM)))
        out = await rankgate("embeddings", "load", str(site / "more.npz"), "-c", str(config))
        assert f"running, pid {valkey}" in out and "stopped" not in out
        assert (await order(proc, "carol"))[0].startswith("applied")
        assert await proc.stop() == 0
    finally:
        await proc.kill()
    assert valkey_pids(data) == []  # a clean stop stops the Valkey it started

    proc = await ProxyProcess.start(config)  # restarted: the vectors are still there
    try:
        assert await order(proc, "alice") == ("applied; model=my_ranker; arm=default", alice)
        assert (await order(proc, "carol"))[0].startswith("applied")
        (valkey,) = valkey_pids(data)
        proc.proc.kill()  # kill -9: no drain, the Valkey stays behind
        await proc.wait()
    finally:
        await proc.kill()
    assert valkey_pids(data) == [valkey]

    proc = await ProxyProcess.start(config)  # finds it, reuses it: still exactly one
    try:
        assert valkey_pids(data) == [valkey]
        reused = await proc.wait_log(lambda e: e.get("event") == "valkey")
        assert reused["started"] == "False" and reused["url"] == started["url"]
        assert await order(proc, "alice") == ("applied; model=my_ranker; arm=default", alice)
        assert await proc.stop() == 0
    finally:
        await proc.kill()
    assert valkey_pids(data) == []


async def test_a_supervisor_killed_leaves_one_valkey(site: Path) -> None:
    config = await set_up(site)
    data = config.parent / ".rankgate" / "valkey"
    bob = expected_order(site, "bob")
    proc = await ProxyProcess.start(config, "--workers", "2")
    try:
        assert await order(proc, "bob") == ("applied; model=my_ranker; arm=default", bob)
        (valkey,) = valkey_pids(data)  # one for both workers
        proc.proc.kill()  # the supervisor, by SIGKILL; its workers drain and exit
        await proc.wait()
    finally:
        await proc.kill()
    assert valkey_pids(data) == [valkey]
    proc = await ProxyProcess.start(config, "--workers", "2")
    try:
        assert valkey_pids(data) == [valkey]
        assert await order(proc, "bob") == ("applied; model=my_ranker; arm=default", bob)
        assert await proc.stop() == 0
    finally:
        await proc.kill()
    assert valkey_pids(data) == []
