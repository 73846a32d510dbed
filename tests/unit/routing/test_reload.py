"""The watcher and the other reload triggers: editor renames, in-place writes, a
Kubernetes ConfigMap symlink swap, model-only changes, polling, SIGHUP, and a reload
under continuous load that fails no request."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis

from proxy.routing.current import SnapshotStore
from proxy.routing.reload import RoutesWatcher, symlink_chain
from tests.support.common import (
    DIM,
    ProxyProcess,
    dot_model,
    dot_order,
    feed_origin,
    replace_file,
    running_proxy,
    seed_vectors,
    start_app,
    wait_until,
    write_config,
)

SIGN = {"a": 1.0, "b": -1.0}
N_ITEMS = 10


def routes_text(model: str, path: str | None = None, sha256: str | None = None) -> str:
    """One route on /feed served by ``model`` (registry entry ``model: {path: ...}``)."""
    pin = f", sha256: '{sha256}'" if sha256 else ""
    return (
        f"models:\n  {model}: {{path: {path or model + '.onnx'}{pin}}}\n"
        f"routes:\n  - {{name: feed, match: {{path: /feed}}, model: {model}, budget_ms: 30000}}\n"
    )


@pytest.fixture
def models(tmp_path: Path) -> Path:
    dot_model(tmp_path / "a.onnx", sign=SIGN["a"])
    dot_model(tmp_path / "b.onnx", sign=SIGN["b"])
    return tmp_path


@contextlib.asynccontextmanager
async def watching(routes: Path, **kw: Any) -> AsyncIterator[tuple[SnapshotStore, RoutesWatcher]]:
    store = SnapshotStore(routes, DIM)
    await asyncio.to_thread(store.load_initial)
    watcher = RoutesWatcher(store, **kw)
    await watcher.start()
    assert watcher.live.is_set()
    try:
        yield store, watcher
    finally:
        await watcher.stop()


def served(store: SnapshotStore) -> str:
    return store.current.routes[0].spec.model


# Events only: the periodic check is pushed out of the way, so what reloads is an event.
EVENTS_ONLY = {"poll_interval_s": 60.0}


class ConfigMap:
    """A directory laid out like a mounted Kubernetes ConfigMap, updated like kubelet
    does it: a new ``..<timestamp>`` directory, a ``..data_tmp`` symlink to it renamed
    over ``..data``, the old directory removed. ``name -> ..data/name`` links stay."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0
        root.mkdir()

    def publish(self, files: dict[str, bytes]) -> None:
        self.generation += 1
        new = self.root / f"..2026_11_28_{self.generation:02d}"
        new.mkdir()
        for name, data in files.items():
            (new / name).write_bytes(data)
        data_link = self.root / "..data"
        old = data_link.resolve() if data_link.is_symlink() else None
        tmp = self.root / "..data_tmp"
        os.symlink(new.name, tmp)
        os.replace(tmp, data_link)  # the atomic swap
        for name in files:
            if not (self.root / name).is_symlink():
                os.symlink(f"..data/{name}", self.root / name)
        if old is not None:
            shutil.rmtree(old)


# -- what the watcher watches ---------------------------------------------------------------


def test_symlink_chain_follows_a_configmap_layout(tmp_path: Path) -> None:
    cm = ConfigMap(tmp_path / "cm")
    cm.publish({"routes.yaml": b"x"})
    chain = symlink_chain(str(cm.root / "routes.yaml"))
    assert chain == {
        str(cm.root / "routes.yaml"),
        str(cm.root / "..data"),
        str(cm.root / "..data" / "routes.yaml"),
        str(cm.root / "..2026_11_28_01" / "routes.yaml"),
    }


# -- file events --------------------------------------------------------------------------


async def test_editor_temp_file_and_rename(models: Path) -> None:
    routes = models / "routes.yaml"
    routes.write_text(routes_text("a"))
    async with watching(routes, **EVENTS_ONLY) as (store, watcher):
        assert watcher.mode == "events"
        # Like vim/VS Code "safe write": a temp file in the directory, renamed over.
        replace_file(routes, routes_text("b"))
        await wait_until(lambda: store.current.version == 2)
        assert served(store) == "b"
        assert store.last_outcome is not None and store.last_outcome.trigger == "watch"


async def test_in_place_write(models: Path) -> None:
    routes = models / "routes.yaml"
    routes.write_text(routes_text("a"))
    async with watching(routes, **EVENTS_ONLY) as (store, _):
        with routes.open("w") as fh:  # same inode, truncated and rewritten
            fh.write(routes_text("b"))
        await wait_until(lambda: store.current.version == 2)
        assert served(store) == "b"


async def test_only_content_changes_reload(models: Path) -> None:
    routes = models / "routes.yaml"
    routes.write_text(routes_text("a"))
    async with watching(routes, **EVENTS_ONLY) as (store, _):
        os.utime(routes)  # touch: new mtime, same bytes
        replace_file(routes, routes_text("a"))  # same bytes, new inode
        (models / "notes.txt").write_text("unrelated file in the same directory")
        await asyncio.sleep(0.6)  # let those events settle (no assertion on timing)
        replace_file(routes, routes_text("b"))
        await wait_until(lambda: store.current.version == 2)
        assert store.reload_counts == {"ok": 1, "unchanged": 0, "error": 0}


async def test_model_file_change_alone_reloads(models: Path) -> None:
    routes = models / "routes.yaml"
    routes.write_text(routes_text("a"))
    async with watching(routes, **EVENTS_ONLY) as (store, _):
        old = store.current.models["a"]
        # New bytes at the same path (an export written elsewhere, then moved in).
        dot_model(models / "next.onnx", sign=-1.0)
        os.replace(models / "next.onnx", models / "a.onnx")
        await wait_until(lambda: store.current.version == 2)
        new = store.current.models["a"]
        assert new.sha256 != old.sha256 and new.session is not old.session
        assert store.last_outcome is not None and store.last_outcome.trigger == "watch"


async def test_pinned_model_changed_on_disk_is_refused(models: Path) -> None:
    from models.contract import sha256_file

    routes = models / "routes.yaml"
    routes.write_text(routes_text("a", sha256=sha256_file(models / "a.onnx")))
    async with watching(routes, **EVENTS_ONLY) as (store, _):
        dot_model(models / "a.onnx", sign=-1.0)
        await wait_until(lambda: store.reload_counts["error"] == 1)
        assert store.current.version == 1  # the reviewed file's session keeps serving
        assert store.last_error is not None and "models.a.sha256: mismatch" in store.last_error


async def test_broken_file_is_not_retried_until_it_changes(models: Path) -> None:
    routes = models / "routes.yaml"
    routes.write_text(routes_text("a"))
    # Fast periodic checks: several of them see the same broken bytes.
    async with watching(routes, poll_interval_s=0.1) as (store, _):
        replace_file(routes, "models: [")
        await wait_until(lambda: store.reload_counts["error"] == 1)
        await asyncio.sleep(0.5)
        assert store.reload_counts["error"] == 1
        assert store.last_error is not None and "YAML syntax error" in store.last_error
        replace_file(routes, routes_text("b"))
        await wait_until(lambda: store.current.version == 2)
        assert store.last_error is None


async def test_configmap_symlink_swap_is_seen(models: Path) -> None:
    cm = ConfigMap(models / "config")
    files = {
        "a.onnx": (models / "a.onnx").read_bytes(),
        "b.onnx": (models / "b.onnx").read_bytes(),
    }
    cm.publish({**files, "routes.yaml": routes_text("a").encode()})
    async with watching(cm.root / "routes.yaml", **EVENTS_ONLY) as (store, _):
        assert served(store) == "a"
        cm.publish({**files, "routes.yaml": routes_text("b").encode()})
        await wait_until(lambda: store.current.version == 2)
        assert served(store) == "b"
        # The directory the first swap pointed at is gone; the next swap is seen too.
        cm.publish({**files, "routes.yaml": routes_text("a").encode()})
        await wait_until(lambda: store.current.version == 3)
        assert served(store) == "a"
        assert store.current.models["a"].path == (cm.root / "..2026_11_28_03" / "a.onnx")
        # A swap that changes no byte the routes use (another key of the ConfigMap),
        # then a real one: only the real one reloads.
        cm.publish({**files, "routes.yaml": routes_text("a").encode(), "other": b"1"})
        await asyncio.sleep(0.5)  # let it settle (no assertion on timing)
        cm.publish({**files, "routes.yaml": routes_text("b").encode(), "other": b"1"})
        await wait_until(lambda: store.current.version == 4)
        assert served(store) == "b"
        assert store.reload_counts == {"ok": 3, "unchanged": 0, "error": 0}


async def test_model_directory_created_later(models: Path) -> None:
    routes = models / "routes.yaml"
    routes.write_text(routes_text("a"))
    async with watching(routes) as (store, _):
        replace_file(routes, routes_text("n", path="later/n.onnx"))
        await wait_until(lambda: store.reload_counts["error"] == 1)
        assert "models.n.path: file not found" in (store.last_error or "")
        (models / "later").mkdir()
        dot_model(models / "later" / "n.onnx")
        await wait_until(lambda: store.current.version == 2)
        assert served(store) == "n"


# -- polling ----------------------------------------------------------------------------------


async def test_polling_sees_edits_and_configmap_swaps(models: Path) -> None:
    cm = ConfigMap(models / "config")
    model = {"a.onnx": (models / "a.onnx").read_bytes()}
    cm.publish({**model, "routes.yaml": routes_text("a").encode()})
    async with watching(cm.root / "routes.yaml", use_events=False, poll_interval_s=0.1) as (
        store,
        watcher,
    ):
        assert watcher.mode == "poll"
        cm.publish({**model, "routes.yaml": routes_text("a", path="./a.onnx").encode()})
        await wait_until(lambda: store.current.version == 2)
        assert store.last_outcome is not None and store.last_outcome.trigger == "poll"
    assert store.watch_mode == "off"


# -- over real sockets -------------------------------------------------------------------------


def patient(redis_url: str) -> str:
    """Config lines: a generous Redis timeout (a fail-open skip on a busy box is not what
    these tests look at), no access log."""
    return f"redis: {{url: {redis_url!r}, timeout_ms: 10000}}\nlogging: {{access_log: false}}\n"


@pytest.fixture
async def origin() -> AsyncIterator[str]:
    runner, url = await start_app(feed_origin(N_ITEMS))
    try:
        yield url
    finally:
        await runner.cleanup()


async def rerank(session: aiohttp.ClientSession, url: str) -> tuple[int, str, list[str]]:
    async with session.get(url, headers={"X-User-Id": "u1"}) as resp:
        body = await resp.read()
        ids = [it["id"] for it in orjson.loads(body)["items"]]
        return resp.status, resp.headers.get("X-Rerank", ""), ids


async def test_proxy_follows_a_configmap_swap(
    models: Path, origin: str, redis_url: str, redis_db: redis.Redis
) -> None:
    users, items = seed_vectors(redis_db, ["u1"], N_ITEMS)
    cm = ConfigMap(models / "config")
    files = {n: (models / n).read_bytes() for n in ("a.onnx", "b.onnx")}
    cm.publish({**files, "routes.yaml": routes_text("a").encode()})
    cfg = write_config(models, origin, None, routes_text("a"), patient(redis_url))
    cfg.write_text(cfg.read_text().replace("routes: routes.yaml", "routes: config/routes.yaml"))
    async with running_proxy(cfg) as proxy, aiohttp.ClientSession() as s:
        url = f"http://127.0.0.1:{proxy.port}/feed"
        assert await rerank(s, url) == (
            200,
            "applied; model=a; arm=default",
            _order(users, items, "a"),
        )
        cm.publish({**files, "routes.yaml": routes_text("b").encode()})

        async def on_b() -> bool:
            return (await rerank(s, url))[1] == "applied; model=b; arm=default"

        await wait_until(on_b)
        assert (await rerank(s, url))[2] == _order(users, items, "b")


def _order(users: dict[str, Any], items: dict[str, Any], model: str) -> list[str]:
    return dot_order(users["u1"], items, SIGN[model])


async def test_reload_under_continuous_load_fails_no_request(
    models: Path, origin: str, redis_url: str, redis_db: redis.Redis
) -> None:
    users, items = seed_vectors(redis_db, ["u1"], N_ITEMS)
    expected = {m: _order(users, items, m) for m in SIGN}
    cfg = write_config(models, origin, None, routes_text("a"), patient(redis_url))
    routes = models / "routes.yaml"
    results: list[tuple[int, str, list[str]] | BaseException] = []
    stop = asyncio.Event()

    async def client(url: str) -> None:
        async with aiohttp.ClientSession() as s:
            while not stop.is_set():
                try:
                    results.append(await rerank(s, url))
                except Exception as exc:  # recorded, then fails the test below
                    results.append(exc)

    async with running_proxy(cfg) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/feed"
        clients = [asyncio.create_task(client(url)) for _ in range(8)]
        try:
            # Each rewrite swaps the model: the old session is dropped, a new one loaded.
            for version, model in enumerate("bababa", start=2):
                await asyncio.sleep(0.1)
                replace_file(routes, routes_text(model))
                await wait_until(lambda v=version: proxy.runtime.store.current.version == v)
            await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.gather(*clients)
        assert proxy.runtime.store.reload_counts == {"ok": 6, "unchanged": 0, "error": 0}
    failures = [r for r in results if isinstance(r, BaseException) or r[0] != 200]
    assert not failures, failures[:5]
    by_model: dict[str, int] = {}
    for _, rerank_header, ids in results:  # type: ignore[misc]
        model = rerank_header.removeprefix("applied; model=").split(";")[0]
        assert rerank_header == f"applied; model={model}; arm=default", rerank_header
        assert ids == expected[model]  # the order of the model the header names
        by_model[model] = by_model.get(model, 0) + 1
    assert len(results) > 100 and set(by_model) == {"a", "b"}, by_model
    print(f"{len(results)} requests during 6 reloads: {by_model}")


async def test_sighup_reloads(models: Path, origin: str, redis_url: str) -> None:
    # No watcher: the version can only move because of the signal.
    extra = patient(redis_url) + "routes_watch: false\n"
    cfg = write_config(models, origin, None, routes_text("a"), extra)
    proc = await ProxyProcess.start(cfg)
    try:
        async with aiohttp.ClientSession() as s:

            async def routes_info() -> dict[str, Any]:
                async with s.get(proc.admin_url("/admin/routes")) as resp:
                    return await resp.json()

            info = await routes_info()
            assert (info["version"], info["watch"]) == (1, "off")
            replace_file(models / "routes.yaml", routes_text("b"))
            proc.proc.send_signal(signal.SIGHUP)

            async def reloaded() -> bool:
                return (await routes_info())["version"] == 2

            await wait_until(reloaded)
            info = await routes_info()
            assert info["last_attempt"]["trigger"] == "sighup"
            assert info["active"]["routes"][0]["model"] == "b"
    finally:
        assert await proc.stop() == 0
