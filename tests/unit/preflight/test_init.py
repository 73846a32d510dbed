"""``rankgate init`` against a real origin: the files it writes pass ``rankgate check``;
a body that leaves a choice open lists the candidates and names the flag; each way the
origin can fail is one line; nothing is overwritten without --force."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from proxy.cli.main import main
from proxy.config.routes import RoutesFile
from proxy.config.yamlload import load
from tests.support.common import dot_model, start_app

ROOT = Path(__file__).resolve().parents[3]
POSTS = [{"pid": 100 + k, "title": f"post {k}", "author_id": 7} for k in range(12)]
CARDS = [{"id": f"c{k}", "title": f"card {k}"} for k in range(50)]

BODIES: dict[str, Any] = {
    "/api/posts": {"data": {"posts": POSTS}, "meta": {"next": None}},
    "/two-arrays": {"data": {"posts": POSTS, "ads": [{"id": k} for k in range(3)]}},
    "/cards": {"result": {"cards": CARDS, "sections": [{"id": "s1", "title": "Top"}]}},
    "/two-ids": {"posts": [{**p, "post_id": f"p{p['pid']}"} for p in POSTS]},
    "/nested": {"edges": [{"node": {"id": f"n{k}"}, "cursor": "c"} for k in range(3)]},
    "/no-array": {"a": [1, 2], "b": {"c": 3}},
    "/empty": {"items": []},
}


@pytest.fixture
async def origin() -> AsyncIterator[str]:
    async def json_body(request: web.Request) -> web.Response:
        return web.json_response(BODIES[request.path])

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<p>hi</p>", content_type="text/html")

    async def bad(request: web.Request) -> web.Response:
        return web.Response(body=b"{nope", content_type="application/json")

    app = web.Application()
    for path in BODIES:
        app.router.add_get(path, json_body)
    app.router.add_get("/html", html)
    app.router.add_get("/bad", bad)
    runner, url = await start_app(app)
    yield url
    await runner.cleanup()


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    # init blocks on HTTP; the origin is served by this test's loop.
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_writes_files_that_check_passes(origin: str, tmp_path: Path, capsys) -> None:
    code, out, err = await run(
        capsys, "init", "--origin", origin, "--feed", "/api/posts", "--dir", str(tmp_path)
    )
    assert code == 0, err
    assert "items   data.posts: 12 objects" in out
    assert "ids     pid: 12 of 12 items" in out
    routes = load(RoutesFile, tmp_path / "routes.yaml")
    (route,) = routes.routes
    assert (route.items, route.item_id, route.match.path) == ("data.posts", "pid", "/api/posts")
    assert route.user == ("cookie:uid", "header:X-User-Id")
    # The reference model, copied beside the config, pinned, with its dimension.
    shipped = ROOT / "models" / "ranker_v1.onnx"
    copy = tmp_path / "ranker_v1.onnx"
    assert copy.read_bytes() == shipped.read_bytes()
    assert routes.models["ranker_v1"].sha256 == hashlib.sha256(copy.read_bytes()).hexdigest()
    assert "  dim: 32" in (tmp_path / "rankgate.yaml").read_text()
    code, out, _ = await run(
        capsys, "check", "--config", str(tmp_path / "rankgate.yaml"), "--offline"
    )
    assert code == 0, out
    assert "sha256 pinned" in out


async def test_never_overwrites_without_force(origin: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "routes.yaml").write_text("# mine\n")
    argv = ("init", "--origin", origin, "--feed", "/api/posts", "--dir", str(tmp_path))
    code, _, err = await run(capsys, *argv)
    assert code == 1
    assert err == f"rankgate init: {tmp_path}/routes.yaml: already there (--force overwrites)\n"
    assert (tmp_path / "routes.yaml").read_text() == "# mine\n"
    assert not (tmp_path / "rankgate.yaml").exists()  # nothing written at all
    code, _, err = await run(capsys, *argv, "--force")
    assert code == 0, err
    assert "# mine" not in (tmp_path / "routes.yaml").read_text()


async def test_two_arrays_list_the_candidates(origin: str, tmp_path: Path, capsys) -> None:
    argv = ("init", "--origin", origin, "--feed", "/two-arrays", "--dir", str(tmp_path))
    code, _, err = await run(capsys, *argv)
    assert code == 1
    assert err.splitlines() == [
        "rankgate init: 2 arrays of objects in the body; pick one with --items PATH:",
        "  --items data.posts   12 objects",
        "  --items data.ads     3 objects",
    ]
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240
    code, _, err = await run(capsys, *argv, "--items", "data.ads")
    assert code == 0, err
    assert load(RoutesFile, tmp_path / "routes.yaml").routes[0].item_id == "id"


async def test_the_one_feed_like_array_is_picked(origin: str, tmp_path: Path, capsys) -> None:
    argv = ("init", "--origin", origin, "--feed", "/cards", "--dir", str(tmp_path))
    code, out, err = await run(capsys, *argv)
    assert code == 0, err
    lines = out.splitlines()
    at = lines.index("items   result.cards: 50 objects")
    assert lines[at + 1] == (
        "        picked: the one array of 3+ objects with an id-like field; also in the "
        "body: result.sections (1 objects) (--items PATH takes another)"
    )
    assert load(RoutesFile, tmp_path / "routes.yaml").routes[0].items == "result.cards"
    code, out, err = await run(capsys, *argv, "--items", "result.sections", "--force")
    assert code == 0, err
    assert "items   result.sections: 1 objects" in out and "picked" not in out
    assert load(RoutesFile, tmp_path / "routes.yaml").routes[0].items == "result.sections"


async def test_two_id_fields_list_the_candidates(origin: str, tmp_path: Path, capsys) -> None:
    argv = ("init", "--origin", origin, "--feed", "/two-ids", "--dir", str(tmp_path))
    code, _, err = await run(capsys, *argv)
    assert code == 1
    assert err.splitlines() == [
        "rankgate init: 2 id-like fields in the 12 items at posts; pick one with --item-id PATH:",
        "  --item-id pid       12 of 12 items, 12 distinct",
        "  --item-id post_id   12 of 12 items, 12 distinct",
    ]
    code, _, err = await run(capsys, *argv, "--item-id", "post_id")
    assert code == 0, err
    assert load(RoutesFile, tmp_path / "routes.yaml").routes[0].item_id == "post_id"
    code, _, err = await run(capsys, *argv, "--item-id", "nope", "--force")
    assert code == 1
    assert "--item-id nope: none of the 12 items has a string or integer there" in err


async def test_nested_ids_and_own_model(origin: str, tmp_path: Path, capsys) -> None:
    model = dot_model(tmp_path / "mine.onnx", dim=8)
    code, _, err = await run(
        capsys,
        *("init", "--origin", origin, "--feed", "/nested", "--dir", str(tmp_path)),
        *("--model", str(model), "--user", "query:u", "--listen", "0", "--admin", "0"),
    )
    assert code == 0, err
    route = load(RoutesFile, tmp_path / "routes.yaml").routes[0]
    assert (route.items, route.item_id, route.user) == ("edges", "node.id", ("query:u",))
    assert 'path: "mine.onnx"' in (tmp_path / "routes.yaml").read_text()  # relative: beside it
    config = (tmp_path / "rankgate.yaml").read_text()
    assert "  dim: 8" in config and "port: 0}" in config
    assert not (tmp_path / "ranker_v1.onnx").exists()


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        ("/html", "answered Content-Type text/html; charset=utf-8; rankgate re-ranks JSON only"),
        ("/missing", "answered 404 Not Found; rankgate re-ranks 200 answers only (reason=status)"),
        ("/bad", "the body is not JSON: unexpected character"),
        ("/no-array", "no array of objects in the body: rankgate re-orders an array of objects"),
        ("/empty", "no array of objects in the body"),
    ],
)
async def test_each_origin_problem_is_one_line(
    origin: str, tmp_path: Path, capsys, feed: str, message: str
) -> None:
    code, _, err = await run(
        capsys, "init", "--origin", origin, "--feed", feed, "--dir", str(tmp_path)
    )
    assert code == 1
    assert len(err.splitlines()) == 1 and err.startswith("rankgate init: ")
    assert message in err
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240


async def test_unreachable_origin(tmp_path: Path, capsys) -> None:
    from tests.unit.preflight.test_check import dead_port

    origin = f"http://127.0.0.1:{dead_port()}"
    code, _, err = await run(
        capsys, "init", "--origin", origin, "--feed", "/x", "--dir", str(tmp_path)
    )
    assert code == 1
    assert err == f"rankgate init: {origin}: unreachable: connection refused (is it running?)\n"


async def test_a_feed_with_a_query(origin: str, tmp_path: Path, capsys) -> None:
    code, _, err = await run(
        capsys, "init", "--origin", origin, "--feed", "/api/posts?limit=5", "--dir", str(tmp_path)
    )
    assert code == 0, err
    route = load(RoutesFile, tmp_path / "routes.yaml").routes[0]
    # Routes match the path (queries are ignored); the probe fetches what init fetched.
    assert (route.match.path, route.sample, route.name) == (
        "/api/posts",
        "/api/posts?limit=5",
        "posts",
    )
