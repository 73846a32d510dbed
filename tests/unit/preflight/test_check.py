"""``rankgate check``: a good config passes; each kind of problem is one FAIL line and a
non-zero exit, like ``nginx -t``."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from aiohttp import web

from proxy.cli.main import main
from tests.conftest import ROUTES_KEY
from tests.support.clusters import ValkeyCluster
from tests.support.common import DIM, dot_model, start_app, vec, write_config

pytestmark = pytest.mark.usefixtures("routes_key")


def routes_for(model: Path, pin: bool = True) -> str:
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    pinned = f", sha256: {sha}" if pin else ""
    return f"""\
models:
  dot: {{path: {model.name}{pinned}}}
routes:
  - {{name: feed, match: {{path: /feed}}, model: dot}}
"""


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


FEED = {"items": [{"id": "a"}, {"id": "b"}, {"id": "c"}]}


async def feed(request: web.Request) -> web.Response:
    return web.json_response(FEED)


@pytest.fixture
async def good(tmp_path: Path, redis_url: str, redis_db: redis.Redis) -> AsyncIterator[Path]:
    redis_db.set("emb:user:u1", vec([1.0] * DIM))
    for k, ident in enumerate("abc"):
        redis_db.set(f"emb:item:{ident}", vec([float(k)] * DIM))
    model = dot_model(tmp_path / "dot.onnx")
    app = web.Application()
    app.router.add_get("/feed", feed)  # the route's feed, which the probe fetches
    runner, origin = await start_app(app)  # answers 404 to HEAD /: reachable all the same
    yield write_config(tmp_path, origin, redis_url, routes_for(model))
    await runner.cleanup()


async def check(cfg: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    # The checks block (Redis, HTTP); run them off this loop, which serves the origin.
    code = await asyncio.to_thread(main, ["check", "--config", str(cfg), *args])
    return code, capsys.readouterr().out


def status_of(out: str, what: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines() if line.split()[1:2] == [what]]


async def test_good_config(good: Path, capsys) -> None:
    code, out = await check(good, capsys)
    assert code == 0, out
    for what in ("config", "routes", "model", "redis", "origin"):
        assert status_of(out, what) == ["ok"], (what, out)
    assert status_of(out, "vectors") == ["ok", "ok"], out  # users, items
    assert status_of(out, "feed") == ["ok"] * 4, out
    assert "-> 404" in out and "sha256 pinned" in out
    assert "feed: 3 items at items, 3 with an id at id" in out
    assert "feed: 3 of 3 item vectors in Redis (100%)" in out
    assert "feed: dry run of dot for user u1: 3 scores in" in out
    assert "2 of 3 items move" in out  # c, b, a: the dot model's order
    assert out.rstrip().endswith("0 failed: test successful")


async def test_offline_skips_the_network(good: Path, capsys) -> None:
    set_url(good, 'origin: {url: "', '"', f"http://127.0.0.1:{dead_port()}")
    set_url(good, "redis: {url: '", "'", f"redis://127.0.0.1:{dead_port()}/0")
    code, out = await check(good, capsys, "--offline")
    assert code == 0, out
    assert status_of(out, "redis") == [] and status_of(out, "origin") == []
    assert status_of(out, "feed") == []


def set_url(path: Path, before: str, quote: str, url: str) -> None:
    text = path.read_text()
    start = text.index(before) + len(before)
    end = text.index(quote, start)
    path.write_text(text[:start] + url + text[end:])


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (old, text)
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    ("case", "what", "expect"),
    [
        ("unknown-key", "config", "listen.prot: unknown key"),
        ("bad-yaml", "config", "YAML syntax error: line"),
        ("no-config", "config", "file not found"),
        ("bad-routes", "routes", "routes[0].budget_ms"),
        ("no-routes", "routes", "routes.yaml: file not found"),
        ("missing-model", "model", "models.dot.path: file not found"),
        ("sha-mismatch", "model", "models.dot.sha256: mismatch"),
        ("fixed-batch", "model", "batch axis is fixed at 1"),
        ("wrong-dim", "model", "embedding dim is 4, config says embeddings.dim=8"),
        ("redis-down", "redis", "ConnectionError"),
        ("origin-down", "origin", "ConnectionRefusedError"),
        ("vector-size", "vectors", "emb:user:u1: 12 bytes, embeddings.dim=8 needs 32"),
    ],
)
async def test_each_problem_fails(
    good: Path, capsys, redis_db: redis.Redis, case: str, what: str, expect: str
) -> None:
    tmp = good.parent
    routes = tmp / "routes.yaml"
    cfg = good
    if case == "unknown-key":
        edit(good, "listen: {host: 127.0.0.1, port: 0}", "listen: {host: 127.0.0.1, prot: 0}")
    elif case == "bad-yaml":
        edit(good, "listen: {host", "listen: {{host")
    elif case == "no-config":
        cfg = tmp / "nope.yaml"
    elif case == "bad-routes":
        edit(routes, "model: dot}", "model: dot, budget_ms: -1}")
    elif case == "no-routes":
        routes.unlink()
    elif case == "missing-model":
        (tmp / "dot.onnx").unlink()
    elif case == "sha-mismatch":
        dot_model(tmp / "dot.onnx", sign=-1.0)  # a different file than the one pinned
    elif case == "fixed-batch":
        routes.write_text(routes_for(dot_model(tmp / "dot.onnx", fixed_batch=True)))
    elif case == "wrong-dim":
        routes.write_text(routes_for(dot_model(tmp / "dot.onnx", dim=4)))
    elif case == "redis-down":
        set_url(good, "redis: {url: '", "'", f"redis://127.0.0.1:{dead_port()}/0")
    elif case == "origin-down":
        set_url(good, 'origin: {url: "', '"', f"http://127.0.0.1:{dead_port()}")
    elif case == "vector-size":
        redis_db.set("emb:user:u1", b"x" * 12)
    code, out = await check(cfg, capsys)
    assert code == 1, out
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert fails, out
    assert any(line.split()[1] == what and expect in line for line in fails), out
    assert out.rstrip().endswith("test failed")


async def test_vectors_of_the_wrong_length_are_counted(
    good: Path, capsys, redis_db: redis.Redis
) -> None:
    for k in range(2, 6):  # 5 user vectors: 2 of the wrong length, 1 with NaN
        redis_db.set(f"emb:user:u{k}", vec([1.0] * DIM))
    redis_db.set("emb:user:u2", vec([1.0] * (DIM - 1)))
    redis_db.set("emb:user:u3", vec([1.0] * (DIM + 3)))
    redis_db.set("emb:user:u4", vec([float("nan")] * DIM))
    redis_db.set("emb:item:d", b"x" * 5)  # 4 item vectors: 1 of the wrong length
    code, out = await check(good, capsys)
    assert code == 1, out
    users, items = (line for line in out.splitlines() if line.split()[1:2] == ["vectors"])
    assert users.startswith("FAIL") and items.startswith("FAIL"), out
    assert "2 of 5 sampled user vectors have the wrong length" in users
    assert "1 of 5 sampled user vectors hold NaN/inf" in users
    assert "reason=bad-vector" in users
    assert "1 of 4 sampled item vectors have the wrong length (e.g. emb:item:d: 5 bytes" in items


async def test_unpinned_model_warns(good: Path, capsys) -> None:
    routes = good.parent / "routes.yaml"
    routes.write_text(routes_for(good.parent / "dot.onnx", pin=False))
    code, out = await check(good, capsys)
    assert code == 0
    assert status_of(out, "model") == ["warn"] and "not pinned (sha256: " in out


def test_console_script_exit_status(tmp_path: Path) -> None:
    bad = tmp_path / "rankgate.yaml"
    bad.write_text("origin: {url: nope}\n")
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "check", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "FAIL  config" in out.stdout and "origin.url: not a URL" in out.stdout
    assert "Traceback" not in out.stderr


async def test_a_cluster_and_its_pushed_routes(
    tmp_path: Path, cluster: ValkeyCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """routes_source: redis on a cluster: no routes file needed; the stored version is
    checked as a reload would check it, and a broken one fails the check."""
    from proxy.config.settings import RoutesRedis
    from proxy.routing import versions

    model = dot_model(tmp_path / "dot.onnx")
    runner, origin = await start_app(web.Application())
    try:
        cfg = write_config(
            tmp_path, origin, cluster.url, routes_for(model), extra="routes_source: redis\n"
        )
        (tmp_path / "routes.yaml").unlink()
        with cluster.client() as client:
            client.set("emb:user:u1", vec([1.0] * DIM))
            code, out = await check(cfg, capsys)
            assert code == 0, out
            assert "a cluster of 3 primaries" in out
            assert "no version pushed yet" in out
            versions.push(client, RoutesRedis(), routes_for(model).encode(), ROUTES_KEY)
            code, out = await check(cfg, capsys)
            assert code == 0, out
            assert "redis key rankgate:routes version 1: 1 route(s) (feed)" in out
            versions.push(
                client,
                RoutesRedis(),
                routes_for(model).replace("dot.onnx", "gone.onnx").encode(),
                ROUTES_KEY,
            )
            code, out = await check(cfg, capsys)
            assert code == 1
            failed = "FAIL  routes   redis key rankgate:routes version 2: models.dot.path"
            assert f"{failed}: file not found" in out
            # Written by hand (no signature): refused before its YAML is read, as a
            # serving process refuses it.
            client.hdel(RoutesRedis().key, "sig")
            code, out = await check(cfg, capsys)
            assert code == 1
            assert "redis key rankgate:routes version 2: unsigned: refused" in out
    finally:
        await runner.cleanup()


async def test_tracing_is_checked_when_enabled(
    good: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    edit(
        good,
        "routes: routes.yaml",
        "routes: routes.yaml\ntracing: {enabled: true, sample_ratio: 0.5}",
    )
    code, out = await check(good, capsys, "--offline")
    assert code == 0, out
    assert status_of(out, "tracing") == ["ok"]
    assert "OTLP/HTTP to http://127.0.0.1:4318/v1/traces, sample_ratio 0.5" in out
    # Without the otel extra (None in sys.modules: Python's own way to make an import fail).
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http", None)
    code, out = await check(good, capsys, "--offline")
    assert code == 1 and status_of(out, "tracing") == ["FAIL"], out
    assert "pip install 'rankgate[otel]'" in out
