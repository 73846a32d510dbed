"""Bounds on what a routes version can make a process do (proxy/routing/limits.py):
model paths are regular files within models.max_bytes, read under a deadline; routes
sizes and counts are capped before any work; a reload past its bound is abandoned on a
thread nobody waits for. Real files, FIFOs and devices."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from proxy.config.settings import load_settings
from proxy.config.yamlload import ConfigError
from proxy.routing.current import SnapshotStore
from proxy.routing.limits import (
    Deadline,
    ReloadTimeout,
    RoutesPolicy,
    model_file_problem,
    read_model_file,
    read_routes_file,
    run_bounded,
)
from proxy.routing.reload import DiskReader
from tests.support.common import DIM, dot_model


def test_a_model_is_a_regular_file_within_the_limit(tmp_path: Path) -> None:
    model = dot_model(tmp_path / "dot.onnx")
    data, digest = read_model_file(model, 1 << 20)
    assert (
        digest == hashlib.sha256(data).hexdigest() == hashlib.sha256(model.read_bytes()).hexdigest()
    )
    assert read_model_file(model, 1 << 20, keep=False) == (b"", digest)
    os.mkfifo(tmp_path / "fifo")
    for path in (Path("/dev/zero"), Path("/dev/urandom"), tmp_path / "fifo", tmp_path):
        problem = model_file_problem(path, 1 << 20)
        assert problem is not None and problem.startswith("not a regular file"), path
    started = time.monotonic()
    with pytest.raises(ValueError, match="not a regular file"):
        read_model_file(tmp_path / "fifo", 1 << 20)  # no writer: an open would block
    with pytest.raises(ValueError, match="not a regular file"):
        read_model_file(Path("/dev/zero"), 1 << 20)
    assert time.monotonic() - started < 1
    size = model.stat().st_size
    assert f"over models.max_bytes ({size - 1})" in str(model_file_problem(model, size - 1))
    with pytest.raises(ValueError, match=r"over models\.max_bytes"):
        read_model_file(model, size - 1)


def test_a_read_stops_at_its_deadline(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"\0" * (4 << 20))
    deadline = Deadline(60)
    deadline.abandoned.set()  # as run_bounded does past its bound
    with pytest.raises(ReloadTimeout, match="ran out of time reading"):
        read_model_file(big, 8 << 20, deadline)


def test_routes_sizes_and_counts_are_capped_before_parsing(tmp_path: Path) -> None:
    policy = RoutesPolicy(max_routes_bytes=100, max_models=2, max_routes=1)
    (tmp_path / "r.yaml").write_bytes(b"# x\n" * 100)
    with pytest.raises(ConfigError) as err:
        read_routes_file(tmp_path / "r.yaml", policy)
    assert err.value.reason == "limit"
    assert "400 bytes: over routes_limits.max_bytes (100) in rankgate.yaml" in err.value.render()
    with pytest.raises(ConfigError, match="not a regular file"):
        read_routes_file(Path("/dev/zero"), policy)
    doc = {"models": {"a": {}, "b": {}, "c": {}}, "routes": [{}, {}]}
    with pytest.raises(ConfigError) as err:
        policy.check_counts(doc, "routes.yaml")
    assert err.value.problems == [
        "models: 3 entries: over routes_limits.max_models (2) in rankgate.yaml",
        "routes: 2 entries: over routes_limits.max_routes (1) in rankgate.yaml",
    ]


async def test_run_bounded_abandons_and_does_not_wait() -> None:
    release = threading.Event()
    seen: list[bool] = []

    def stuck(deadline: Deadline) -> int:
        release.wait(10)
        seen.append(deadline.abandoned.is_set())
        return 1

    started = time.monotonic()
    with pytest.raises(ReloadTimeout, match=r"abandoned after 0\.3s"):
        await run_bounded(stuck, 0.3, "test-stuck")
    assert time.monotonic() - started < 2
    (thread,) = [t for t in threading.enumerate() if t.name == "test-stuck"]
    assert thread.daemon  # an exit never joins it
    release.set()
    thread.join(5)
    assert seen == [True]  # it learns it was abandoned
    assert await run_bounded(lambda d: 7, 5, "test-quick") == 7


def test_the_watcher_never_reads_a_device(tmp_path: Path) -> None:
    """A routes file naming /dev/zero: the watcher's check returns at once (the stat
    stands for the file), so the reload it triggers can refuse it."""
    routes = tmp_path / "routes.yaml"
    routes.write_text("models:\n  z: {path: /dev/zero}\n  d: {path: dot.onnx}\nroutes: []\n")
    dot_model(tmp_path / "dot.onnx")
    started = time.monotonic()
    state = DiskReader(str(routes)).read(True)
    assert time.monotonic() - started < 1
    digests = dict(state.fingerprint.models)
    assert digests["z"].startswith("refused:") and len(digests["d"]) == 64


async def test_a_store_refuses_a_device_promptly_and_keeps_serving(tmp_path: Path) -> None:
    dot_model(tmp_path / "dot.onnx")
    routes = tmp_path / "routes.yaml"
    routes.write_text("models:\n  d: {path: dot.onnx}\nroutes: []\n")
    store = SnapshotStore(routes, DIM, RoutesPolicy(reload_timeout_s=5))
    first = store.load_initial()
    routes.write_text("models:\n  d: {path: /dev/zero}\nroutes: []\n")
    outcome = await asyncio.wait_for(store.reload_outcome("test"), 3)
    assert (outcome.result, outcome.reason) == ("error", "invalid")
    assert "models.d.path: not a regular file: /dev/zero" in str(outcome.error)
    assert store.current is first


def test_limits_come_from_rankgate_yaml(tmp_path: Path) -> None:
    cfg = tmp_path / "rankgate.yaml"
    cfg.write_text(
        'origin: {url: "http://127.0.0.1:9"}\n'
        "models: {max_bytes: 1000}\n"
        "routes_limits: {max_bytes: 2000, max_models: 3, max_routes: 4, reload_timeout_s: 5}\n"
        "plugins: {paths: [mine]}\n"
    )
    policy = RoutesPolicy.from_settings(load_settings(cfg))
    assert policy == RoutesPolicy(2000, 3, 4, 1000, 5.0, (tmp_path / "mine",))
    cfg.write_text('origin: {url: "http://127.0.0.1:9"}\nrouts_limits: {max_bytes: 1}\n')
    with pytest.raises(ConfigError, match="routs_limits"):
        load_settings(cfg)


async def test_a_build_that_exits_is_an_error_not_an_exit() -> None:
    def exits(deadline: Deadline) -> int:
        raise SystemExit(3)

    with pytest.raises(RuntimeError, match=r"the reload raised SystemExit\(3\)"):
        await run_bounded(exits, 5, "test-exit")
