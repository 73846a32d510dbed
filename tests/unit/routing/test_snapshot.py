"""Reload semantics: warm sessions kept, dropped models released, requests in flight keep
their snapshot, and every kind of invalid file changes nothing (over real sockets)."""

from __future__ import annotations

import asyncio
import gc
import shutil
import textwrap
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
import redis

from models.contract import sha256_file
from proxy.routing.current import ReloadOutcome, SnapshotStore
from proxy.routing.snapshot import Snapshot
from proxy.serve.server import ProxyServer
from tests.support.common import (
    DIM,
    dot_model,
    dot_order,
    feed_origin,
    running_proxy,
    seed_vectors,
    start_app,
    wait_until,
    write_config,
)

N_ITEMS = 10
USER = "u1"


def routes_text(models: dict[str, str], route_model: str = "m", experiments: str = "[]") -> str:
    lines = ["models:"] + [f"  {name}: {{{spec}}}" for name, spec in models.items()]
    lines += [
        "routes:",
        f"  - {{name: feed, match: {{path: /feed}}, model: {route_model}, budget_ms: 30000,",
        f"     experiments: {experiments}}}",
        f"  - {{name: slow, match: {{path: /slow}}, model: {route_model}, budget_ms: 30000}}",
    ]
    return "\n".join(lines) + "\n"


# -- the store on its own (no sockets needed to look at sessions) --------------------------


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    dot_model(tmp_path / "a.onnx", sign=1.0)
    dot_model(tmp_path / "b.onnx", sign=-1.0)
    return tmp_path


def store_for(tmp: Path, text: str) -> SnapshotStore:
    (tmp / "routes.yaml").write_text(text)
    store = SnapshotStore(tmp / "routes.yaml", DIM)
    store.load_initial()
    return store


async def test_unchanged_models_keep_their_warm_session(models_dir: Path) -> None:
    store = store_for(models_dir, routes_text({"m": "path: a.onnx", "n": "path: b.onnx"}))
    before = store.current
    (models_dir / "routes.yaml").write_text(
        routes_text({"m": "path: a.onnx", "n": "path: b.onnx"}, route_model="n")
    )
    assert (await store.reload_outcome("test")).result == "ok"
    after = store.current
    assert after.version == 2
    assert after.models["m"] is before.models["m"]
    assert after.models["n"] is before.models["n"]


async def test_same_bytes_under_another_name_and_path_share_the_session(models_dir: Path) -> None:
    store = store_for(models_dir, routes_text({"m": "path: a.onnx"}))
    old = store.current.models["m"]
    shutil.copy(models_dir / "a.onnx", models_dir / "copy.onnx")
    (models_dir / "routes.yaml").write_text(routes_text({"v2": "path: copy.onnx"}, "v2"))
    assert await store.reload("test")
    new = store.current.models["v2"]
    assert new.session is old.session
    assert (new.name, new.path) == ("v2", (models_dir / "copy.onnx").resolve())


async def test_changed_model_bytes_get_a_new_session(models_dir: Path) -> None:
    store = store_for(models_dir, routes_text({"m": "path: a.onnx"}))
    old = store.current.models["m"]
    dot_model(models_dir / "a.onnx", sign=-1.0)
    assert (await store.reload_outcome("test")).result == "ok"
    new = store.current.models["m"]
    assert new.session is not old.session
    assert new.sha256 == sha256_file(models_dir / "a.onnx") != old.sha256


async def test_dropped_model_is_released_after_the_swap(models_dir: Path) -> None:
    store = store_for(models_dir, routes_text({"m": "path: a.onnx", "gone": "path: b.onnx"}))
    session = weakref.ref(store.current.models["gone"].session)
    freed_on: list[str] = []
    weakref.finalize(session(), lambda: freed_on.append(threading.current_thread().name))
    snapshot = weakref.ref(store.current)
    (models_dir / "routes.yaml").write_text(routes_text({"m": "path: a.onnx"}))
    assert (await store.reload_outcome("test")).result == "ok"
    gc.collect()
    assert snapshot() is None, gc.get_referrers(snapshot())
    # Freed on the releaser thread, off the event loop.
    await wait_until(lambda: session() is None)
    assert freed_on[0].startswith("rankgate-release")


async def test_same_files_are_unchanged_for_the_watcher(models_dir: Path) -> None:
    store = store_for(models_dir, routes_text({"m": "path: a.onnx"}))
    seen: list[tuple[ReloadOutcome | None, Snapshot | None]] = []
    store.listeners.append(lambda *args: seen.append(args))
    outcome = await store.reload_outcome("watch", if_changed=True)
    assert (outcome.result, outcome.version, store.current.version) == ("unchanged", 1, 1)
    (models_dir / "routes.yaml").write_text("models: [")
    assert (await store.reload_outcome("watch", if_changed=True)).result == "error"
    (models_dir / "routes.yaml").write_text(routes_text({"m": "path: a.onnx"}))
    # Back to what is served: unchanged, and the error is no longer current.
    assert (await store.reload_outcome("watch", if_changed=True)).result == "unchanged"
    assert store.last_error is None
    # An explicit reload (SIGHUP, admin) always swaps: plugins may read files of their
    # own that no hash covers. The warm session is kept all the same.
    session = store.current.models["m"].session
    outcome = await store.reload_outcome("admin")
    assert (outcome.result, store.current.version) == ("ok", 2)
    assert store.current.models["m"].session is session
    assert store.reload_counts == {"ok": 1, "unchanged": 2, "error": 1}
    assert [(o and o.result, s is store.current, o and o.error is None) for o, s in seen] == [
        ("unchanged", False, True),
        ("error", False, False),
        ("unchanged", False, True),
        ("ok", True, True),
    ]


# -- over sockets: a proxy with reloads driven by POST /admin/reload ------------------------


@dataclass(frozen=True)
class Env:
    proxy: ProxyServer
    dir: Path
    user: np.ndarray
    items: dict[str, np.ndarray]

    @property
    def routes(self) -> Path:
        return self.dir / "routes.yaml"

    def order(self, sign: float) -> list[str]:
        return dot_order(self.user, self.items, sign)


@pytest.fixture
async def env(models_dir: Path, redis_url: str, redis_db: redis.Redis) -> AsyncIterator[Env]:
    users, items = seed_vectors(redis_db, [USER], N_ITEMS)
    runner, origin = await start_app(feed_origin(N_ITEMS))
    # No watcher: each reload here is the test's own POST /admin/reload.
    # Generous Redis timeout and budget: a fail-open skip on a busy box is not the subject.
    extra = (
        f"redis: {{url: {redis_url!r}, timeout_ms: 10000}}\n"
        "routes_watch: false\nlogging: {access_log: false}\n"
    )
    cfg = write_config(models_dir, origin, None, routes_text({"m": "path: a.onnx"}), extra)
    try:
        async with running_proxy(cfg) as proxy:
            yield Env(proxy, models_dir, users[USER], items)
    finally:
        await runner.cleanup()


async def feed(env: Env, path: str = "/feed") -> tuple[int, str, list[str]]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{env.proxy.port}{path}", headers={"X-User-Id": USER}) as r,
    ):
        ids = [i["id"] for i in orjson.loads(await r.read())["items"]]
        return r.status, r.headers.get("X-Rerank", ""), ids


async def admin(env: Env, method: str, path: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, f"http://127.0.0.1:{env.proxy.admin_port}{path}") as r,
    ):
        return r.status, await r.json()


async def test_request_in_flight_finishes_on_its_snapshot(env: Env) -> None:
    assert await feed(env) == (200, "applied; model=m; arm=default", env.order(1.0))
    old_session = weakref.ref(env.proxy.runtime.store.current.models["m"].session)
    slow = asyncio.create_task(feed(env, "/slow?ms=600"))
    # The request holds its snapshot once it is in flight (it waits on the origin).
    await wait_until(lambda: env.proxy.runtime.in_flight > 0, every_s=0.005)
    env.routes.write_text(routes_text({"m": "path: b.onnx"}))
    status, body = await admin(env, "POST", "/admin/reload")
    assert (status, body["result"], body["version"]) == (200, "ok", 2)
    assert await feed(env) == (200, "applied; model=m; arm=default", env.order(-1.0))
    assert not slow.done()
    # Same model name, but the old file's session: the snapshot it started with.
    assert await slow == (200, "applied; model=m; arm=default", env.order(1.0))
    gc.collect()
    await wait_until(lambda: old_session() is None)  # once the last request using it is done


def _bad_model(name: str) -> Callable[[Path], str]:
    def make(tmp: Path) -> str:
        path = tmp / f"{name}.onnx"
        if name == "fixed":
            dot_model(path, fixed_batch=True)
        elif name == "dim4":
            dot_model(path, dim=4)
        elif name == "garbage":
            path.write_bytes(b"this is not onnx")
        return routes_text({"m": f"path: {path.name}"})

    return make


BAD_FILES: list[tuple[str, Callable[[Path], str], str]] = [
    ("yaml", lambda tmp: "models:\n  m: {path: a.onnx\n", "YAML syntax error: line "),
    (
        "unknown-model",
        lambda tmp: routes_text({"m": "path: a.onnx"}, route_model="zz"),
        "routes[0].model: unknown model 'zz' (known: ['m'])",
    ),
    (
        "percent",
        lambda tmp: routes_text(
            {"m": "path: a.onnx"}, experiments="[{when: {percent: 101}, model: m}]"
        ),
        "routes[0].experiments[0].when.percent: must be 0..100",
    ),
    (
        "missing-model-file",
        lambda tmp: routes_text({"m": "path: nowhere.onnx"}),
        "models.m.path: file not found: ",
    ),
    (
        "sha256",
        lambda tmp: routes_text({"m": f"path: a.onnx, sha256: '{'0' * 64}'"}),
        f"models.m.sha256: mismatch: file is {{a}}, expected {'0' * 64}",
    ),
    (
        "fixed-batch",
        _bad_model("fixed"),
        "models.m: input user_embedding: batch axis is fixed at 1",
    ),
    ("wrong-dim", _bad_model("dim4"), "models.m: embedding dim is 4, config says embeddings.dim=8"),
    ("not-onnx", _bad_model("garbage"), "models.m: not a loadable ONNX model"),
    ("routes-file-gone", lambda tmp: "", "file not found"),
]


@pytest.mark.parametrize(
    ("kind", "write", "expected"), BAD_FILES, ids=[case[0] for case in BAD_FILES]
)
async def test_invalid_file_changes_nothing(
    env: Env, kind: str, write: Callable[[Path], str], expected: str
) -> None:
    good = env.routes.read_text()
    text = write(env.dir)
    if kind == "routes-file-gone":
        env.routes.unlink()
    else:
        env.routes.write_text(text)
    expected = expected.replace("{a}", sha256_file(env.dir / "a.onnx"))

    status, body = await admin(env, "POST", "/admin/reload")
    assert status == 422
    assert (body["reloaded"], body["result"], body["version"]) == (False, "error", 1)
    assert f"{env.routes}: {expected}" in body["error"]

    # The old snapshot keeps serving, and the admin API says why the new one is not.
    assert await feed(env) == (200, "applied; model=m; arm=default", env.order(1.0))
    status, info = await admin(env, "GET", "/admin/routes")
    assert status == 200
    assert info["version"] == info["active"]["version"] == 1
    assert f"{env.routes}: {expected}" in info["last_error"]
    assert info["reloads"] == {"ok": 0, "unchanged": 0, "error": 1}
    assert info["last_attempt"]["result"] == "error"

    # Fixed: served again, no error left.
    env.routes.write_text(good)
    status, body = await admin(env, "POST", "/admin/reload")
    assert (status, body["result"], body["version"]) == (200, "ok", 2)
    _, info = await admin(env, "GET", "/admin/routes")
    assert info["last_error"] is None


def test_routes_text_is_valid_yaml() -> None:
    # Guards the helper the cases above build on.
    import yaml

    doc = yaml.safe_load(textwrap.dedent(routes_text({"m": "path: a.onnx"})))
    assert doc["routes"][0]["model"] == "m"
