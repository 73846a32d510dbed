"""``rankgate check`` probes each feed route against the real origin and Redis: a route
that would never re-rank is a FAIL that names the reason and what to do."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web

from proxy.cli.main import main
from proxy.store.valkey import EmbeddedValkey
from tests.support.common import DIM, dot_model, start_app, valkey_pids, vec, write_config

BODIES: dict[str, Any] = {
    "/feed": {"data": {"posts": [{"pid": p} for p in range(1, 7)]}},
    "/graphql": {"data": {"viewer": {"feed": {"edges": [{"node": {"id": "1"}}, {"node": {}}]}}}},
    "/empty": {"data": {"posts": []}},
}


@pytest.fixture
async def origin() -> AsyncIterator[str]:
    async def body(request: web.Request) -> web.Response:
        return web.json_response(BODIES[request.path])

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    for path in BODIES:
        app.router.add_get(path, body)
    app.router.add_get("/text", text)
    runner, url = await start_app(app)
    yield url
    await runner.cleanup()


def seed(db: redis.Redis, items: range = range(1, 7), user: bool = True) -> None:
    if user:
        db.set("emb:user:u1", vec([1.0] * DIM))
    for pid in items:
        db.set(f"emb:item:{pid}", vec([float(pid)] * DIM))


def routes(route: str) -> str:
    return f"""\
models:
  dot: {{path: dot.onnx}}
routes:
  - {route}
"""


GOOD = "{name: posts, match: {path: /feed}, items: data.posts, item_id: pid, model: dot}"


async def probe(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    origin: str,
    redis_url: str | None,
    route: str,
) -> tuple[int, list[str]]:
    dot_model(tmp_path / "dot.onnx")
    cfg = write_config(tmp_path, origin, redis_url, routes(route))
    code = await asyncio.to_thread(main, ["check", "--config", str(cfg)])
    out = capsys.readouterr().out
    return code, [line for line in out.splitlines() if line.split()[1:2] == ["feed"]]


async def test_a_good_route(tmp_path: Path, capsys, origin: str, redis_url: str, redis_db) -> None:
    seed(redis_db)
    code, lines = await probe(tmp_path, capsys, origin, redis_url, GOOD)
    assert code == 0, lines
    assert [line.split()[0] for line in lines] == ["ok"] * 4
    assert "posts: GET /feed -> 200 application/json" in lines[0]
    assert "posts: 6 items at data.posts, 6 with an id at pid" in lines[1]
    assert "posts: 6 of 6 item vectors in Redis (100%)" in lines[2]
    assert "posts: dry run of dot for user u1: 6 scores in" in lines[3]


@pytest.mark.parametrize(
    ("route", "seeded", "expect"),
    [
        (
            GOOD.replace("items: data.posts, ", ""),  # the default, `items`
            {},
            "no array at items: items in the sample (reason=items-not-found); arrays of "
            "objects in it: data.posts (6)",
        ),
        (
            GOOD.replace("item_id: pid", "item_id: id"),
            {},
            "6 items at data.posts, but none has an id at item_id: id (reason=no-item-ids); "
            "fields that could be: pid",
        ),
        (
            GOOD,
            {"items": range(0)},
            "0 of 6 item vectors in Redis under emb:item:{id} "
            "(reason=no-item-vectors): load them with `rankgate embeddings load`",
        ),
        (
            GOOD,
            {"user": False},
            "no user vector in Redis under emb:user:{id}: every request "
            "would be reason=unknown-user",
        ),
        (
            GOOD.replace("path: /feed}", "path: /text}"),
            {},
            "answered Content-Type text/plain; charset=utf-8; rankgate re-ranks JSON only",
        ),
        (
            GOOD.replace("path: /feed}", "path: /nope}"),
            {},
            "answered 404 Not Found; rankgate re-ranks 200 answers only (reason=status): it "
            "would never re-rank",
        ),
    ],
    ids=["items", "item-id", "no-item-vectors", "no-user-vectors", "not-json", "status"],
)
async def test_a_route_that_never_reranks_fails(
    tmp_path: Path,
    capsys,
    origin: str,
    redis_url: str,
    redis_db: redis.Redis,
    route: str,
    seeded: dict[str, Any],
    expect: str,
) -> None:
    seed(redis_db, **seeded)
    code, lines = await probe(tmp_path, capsys, origin, redis_url, route)
    assert code == 1
    assert lines[-1].startswith("FAIL  feed     posts: "), lines
    assert expect in lines[-1], lines


async def test_warnings(tmp_path: Path, capsys, origin: str, redis_url: str, redis_db) -> None:
    seed(redis_db, items=range(1, 3))  # 2 of 6
    code, lines = await probe(tmp_path, capsys, origin, redis_url, GOOD)
    assert code == 0
    assert "warn  feed     posts: only 2 of 6 item vectors in Redis (33%)" in lines[2]
    assert lines[3].startswith("ok") and "2 scores" in lines[3]  # the others keep their slots
    prefix = GOOD.replace("{path: /feed}", "{prefix: /fe}")
    code, lines = await probe(tmp_path, capsys, origin, redis_url, prefix)
    assert code == 0 and len(lines) == 1
    assert "not probed: its match is not one exact path; add `sample: /a/path`" in lines[0]
    code, lines = await probe(tmp_path, capsys, origin, redis_url, prefix[:-1] + ", sample: /feed}")
    assert [line.split()[0] for line in lines] == ["ok", "ok", "warn", "ok"]
    control = GOOD.replace("model: dot", "model: none")
    code, lines = await probe(tmp_path, capsys, origin, redis_url, control)
    assert code == 0 and "every arm is model: none" in lines[0]
    empty = GOOD.replace("path: /feed}", "path: /empty}")
    code, lines = await probe(tmp_path, capsys, origin, redis_url, empty)
    assert (
        code == 0 and "the array at data.posts is empty in the sample (reason=no-items)" in lines[1]
    )


async def test_an_items_plugin_finds_the_items(
    tmp_path: Path, capsys, origin: str, redis_url: str, redis_db: redis.Redis
) -> None:
    seed(redis_db)
    route = (
        "{name: posts, match: {path: /graphql}, model: dot, plugins: "
        "[{use: 'plugins.examples:GraphQLEdges', connection: data.viewer.feed}]}"
    )
    code, lines = await probe(tmp_path, capsys, origin, redis_url, route)
    assert code == 0, lines
    assert "items plugin plugins.examples:GraphQLEdges: 2 items, 1 with an id" in lines[1]
    assert "1 of 1 item vectors" in lines[2]


async def test_the_embedded_valkey_is_started_for_the_check_or_used(
    tmp_path: Path, capsys, origin: str
) -> None:
    data_dir = tmp_path / ".rankgate" / "valkey"
    try:
        with EmbeddedValkey(data_dir) as server:  # as `rankgate embeddings load` leaves it
            seed(redis.Redis.from_url(server.url))
        code, lines = await probe(tmp_path, capsys, origin, None, GOOD)
        assert code == 0, lines
        assert valkey_pids(data_dir) == []  # started for the check, stopped after
        with EmbeddedValkey(data_dir) as server:  # as `rankgate serve` holds it
            dot_model(tmp_path / "dot.onnx")
            code = await asyncio.to_thread(
                main, ["check", "--config", str(tmp_path / "rankgate.yaml")]
            )
            out = capsys.readouterr().out
            assert code == 0, out
            assert f"ok    redis    embedded Valkey {server.url} (pid {server.pid}" in out
            assert valkey_pids(data_dir) == [server.pid]  # left running for its user
    finally:
        for pid in valkey_pids(data_dir):
            os.kill(pid, signal.SIGKILL)
