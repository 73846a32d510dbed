"""`rankgate routes push|status` (proxy/cli/routes.py) against a real Valkey, a real
cluster, and real serving processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
import redis

from proxy.cli.main import main
from proxy.config.settings import RoutesRedis
from proxy.routing import versions
from tests.conftest import ROUTES_KEY
from tests.support.clusters import ValkeyCluster
from tests.support.common import running_proxy, wait_until
from tests.unit.routing.test_sources import DOT, MISSING, NEG, config, order

pytestmark = pytest.mark.usefixtures("routes_key")

CFG = RoutesRedis()


def cli(*args: str) -> int:
    return main(["routes", *args])


def setup_dir(tmp: Path, redis_url: str) -> Path:
    """rankgate.yaml (routes_source: redis) and routes files next to their models."""
    from tests.support.common import dot_model

    dot_model(tmp / "dot.onnx")
    (tmp / "dot.yaml").write_bytes(DOT)
    (tmp / "neg.yaml").write_bytes(NEG)
    (tmp / "ghost.yaml").write_bytes(MISSING)
    return config(tmp, "http://127.0.0.1:9", redis_url, None)


def test_push_validates_stores_and_reports(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(setup_dir(tmp_path, redis_url))
    assert cli("push", str(tmp_path / "dot.yaml"), "--config", cfg) == 0
    out = capsys.readouterr().out
    assert "ok    " in out and "1 route(s) (feed), 1 model(s)" in out
    assert "pushed version 1" in out
    stored = versions.fetch(redis_db, CFG)
    assert stored is not None and stored.raw == DOT

    assert cli("push", str(tmp_path / "dot.yaml"), "--config", cfg) == 0
    assert "unchanged: version 1" in capsys.readouterr().out
    assert cli("push", str(tmp_path / "dot.yaml"), "--config", cfg, "--force") == 0
    assert "pushed version 2" in capsys.readouterr().out


def test_push_refuses_what_a_reload_would(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(setup_dir(tmp_path, redis_url))
    assert cli("push", str(tmp_path / "ghost.yaml"), "--config", cfg) == 1
    err = capsys.readouterr().err
    assert "models.ghost.path: file not found" in err and "nothing pushed" in err
    (tmp_path / "bad.yaml").write_text("routes:\n  - {name: x, match: {path: /x}, model: nope}\n")
    assert cli("push", str(tmp_path / "bad.yaml"), "--config", cfg) == 1
    assert "routes[0]" in capsys.readouterr().err
    assert cli("push", str(tmp_path / "absent.yaml"), "--config", cfg) == 1
    assert versions.head(redis_db, CFG) is None  # nothing was stored


def test_status_lists_processes_and_says_who_is_behind(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(setup_dir(tmp_path, redis_url))
    assert cli("status", "--config", cfg) == 0
    out = capsys.readouterr().out
    assert "no routes pushed yet" in out and "no live process" in out

    head, _ = versions.push(redis_db, CFG, DOT, ROUTES_KEY)
    versions.report(redis_db, CFG, "pod-a:1", {"version": 1, "sha256": head.sha256})
    versions.report(redis_db, CFG, "pod-b:1", {"version": None, "source": "file"})
    refusal = {"version": 1, "error": "x: models.m.path: file not found"}
    versions.report(redis_db, CFG, "pod-c:1", {"version": None, "refused": refusal})
    assert cli("status", "--config", cfg) == 1  # not every process serves version 1
    out = capsys.readouterr().out
    assert "stored   version 1" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("pod-")}
    assert lines["pod-a:1"].endswith("current")
    assert "serving the routes file" in lines["pod-b:1"]
    assert "refused 1: x: models.m.path: file not found" in lines["pod-c:1"]

    assert cli("status", "--config", cfg, "--json") == 1
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["stored"]["version"] == 1 and not doc["converged"]
    assert [p["process"] for p in doc["processes"]] == ["pod-a:1", "pod-b:1", "pod-c:1"]


async def test_push_and_wait_for_two_processes(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.common import seed_ten_items, start_app, ten_item_origin

    seed_ten_items(redis_db, tmp_path)
    runner, origin = await start_app(ten_item_origin())
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        seed_ten_items(redis_db, tmp_path / d)
    cfg_a = config(tmp_path / "a", origin, redis_url, None)
    cfg_b = config(tmp_path / "b", origin, redis_url, None)
    (tmp_path / "a" / "neg.yaml").write_bytes(NEG)
    try:
        async with running_proxy(cfg_a) as a, running_proxy(cfg_b) as b:
            code = await asyncio.to_thread(
                cli,
                "push",
                str(tmp_path / "a" / "neg.yaml"),
                "--config",
                str(cfg_a),
                "--wait",
                "10",
            )
            assert code == 0
            out = capsys.readouterr().out
            assert "2 process(es), 2 on the stored version" in out
            assert await order(a) == await order(b) == [f"i{k}" for k in range(10)]

            # b lacks the model a version names: --wait stops on the refusal, exit 1.
            (tmp_path / "a" / "extra.onnx").write_bytes((tmp_path / "a" / "neg.onnx").read_bytes())
            (tmp_path / "a" / "extra.yaml").write_bytes(
                NEG.replace(b"neg: {path: neg.onnx}", b"neg: {path: extra.onnx}")
            )
            code = await asyncio.to_thread(
                cli,
                "push",
                str(tmp_path / "a" / "extra.yaml"),
                "--config",
                str(cfg_a),
                "--wait",
                "10",
            )
            assert code == 1
            out = capsys.readouterr().out
            assert "refused 2" in out and "extra.onnx" in out
            await wait_until(lambda: a.runtime.store.current.version == 3, limit_s=5)
    finally:
        await runner.cleanup()


def test_push_into_a_cluster(
    tmp_path: Path, cluster: ValkeyCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(setup_dir(tmp_path, cluster.url))
    assert cli("push", str(tmp_path / "dot.yaml"), "--config", cfg) == 0
    assert "pushed version 1" in capsys.readouterr().out
    with cluster.client() as client:
        stored = versions.fetch(client, CFG)
    assert stored is not None and stored.raw == DOT
    assert cli("status", "--config", cfg) == 0


def test_needs_a_redis_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rankgate.yaml").write_text("origin: {url: 'http://127.0.0.1:9'}\n")
    assert main(["routes", "status", "--config", str(tmp_path / "rankgate.yaml")]) == 2
    assert "redis.url: required" in capsys.readouterr().err


def test_push_needs_the_fleet_key_and_status_checks_signatures(
    tmp_path: Path,
    redis_url: str,
    redis_db: redis.Redis,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = str(setup_dir(tmp_path, redis_url))
    assert cli("push", str(tmp_path / "dot.yaml"), "--config", cfg) == 0
    capsys.readouterr()
    assert cli("status", "--config", cfg) == 0
    assert "signature ok" in capsys.readouterr().out
    assert cli("status", "--config", cfg, "--json") == 0
    assert orjson.loads(capsys.readouterr().out)["stored"]["signature"] == "signature ok"

    monkeypatch.setenv("RANKGATE_ROUTES_KEY", "another-fleets-key-0123456789")
    assert cli("status", "--config", cfg) == 0
    assert "REFUSED: signature does not verify" in capsys.readouterr().out
    monkeypatch.delenv("RANKGATE_ROUTES_KEY")
    assert cli("status", "--config", cfg) == 0
    assert "signature not checked (RANKGATE_ROUTES_KEY not set here)" in capsys.readouterr().out
    assert cli("push", str(tmp_path / "neg.yaml"), "--config", cfg) == 1
    err = capsys.readouterr().err
    assert "RANKGATE_ROUTES_KEY is not set" in err and "nothing pushed" in err
    assert versions.head(redis_db, CFG).version == 1  # type: ignore[union-attr]
    redis_db.hdel(CFG.key, "sig")
    assert cli("status", "--config", cfg) == 0
    assert "UNSIGNED: every process refuses it" in capsys.readouterr().out
