"""The runtime's lifespan: everything ready inside it, everything released on the way
out, in reverse order, even when one resource fails to close."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from proxy.config.settings import load_settings
from proxy.http.forward import Forwarder
from proxy.serve.runtime import open_runtime
from tests.support.common import dot_model, valkey_pids, write_config

ROUTES = """\
    models: {dot: {path: dot.onnx}}
    routes:
      - {name: feed, match: {path: /feed}, model: dot}
    """


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def valkey_pid(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


async def test_everything_is_ready_inside(tmp_path: Path) -> None:
    dot_model(tmp_path / "dot.onnx")
    settings = load_settings(write_config(tmp_path, "http://127.0.0.1:9", None, ROUTES))
    async with open_runtime(settings) as runtime:
        assert runtime.store.ready and set(runtime.store.current.models) == {"dot"}
        await runtime.embeddings.ping()  # the embedded Valkey answers
        assert runtime.feed.forwarder is runtime.forwarder
        pid = valkey_pid(runtime.redis_url)
        assert pid in valkey_children()
    assert not alive(pid)


async def test_a_failing_close_does_not_leak_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_close(self: Forwarder) -> None:
        raise RuntimeError("the origin client would not close")

    monkeypatch.setattr(Forwarder, "close", broken_close)
    dot_model(tmp_path / "dot.onnx")
    settings = load_settings(write_config(tmp_path, "http://127.0.0.1:9", None, ROUTES))
    with pytest.raises(RuntimeError, match="would not close"):
        async with open_runtime(settings) as runtime:
            pid = valkey_pid(runtime.redis_url)
            link = runtime.embeddings.link
            await runtime.embeddings.ping()
    # Released after the failure: the Redis connections and the embedded Valkey.
    assert link._all == []
    assert not alive(pid)


async def test_a_failed_start_releases_what_was_entered(tmp_path: Path) -> None:
    # No model file: the routes load fails after Valkey, Redis and the origin client.
    settings = load_settings(write_config(tmp_path, "http://127.0.0.1:9", None, ROUTES))
    before = valkey_children()
    with pytest.raises(Exception, match="file not found"):
        async with open_runtime(settings):
            pass
    assert valkey_children() == before


def valkey_children() -> list[int]:
    """Valkey processes this test process started and that still run."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (OSError, ValueError):
            continue
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        state, ppid = rest.split()[:2]
        if "valkey" in name and int(ppid) == os.getpid() and state != "Z":
            found.append(int(entry))
    return found


HOLDER = (
    "import sys, time\n"
    "from proxy.config.settings import load_settings\n"
    "from proxy.store.valkey import EmbeddedValkey\n"
    "server = EmbeddedValkey.for_settings(load_settings(sys.argv[1]))\n"
    "server.start()\n"
    "print(server.pid, flush=True)\n"
    "time.sleep(60)\n"
)


def left_behind(config: Path) -> int:
    """The pid of the embedded Valkey a process started before a kill -9 ended it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(config)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        return int(holder.stdout.readline())
    finally:
        holder.kill()  # kill -9: its Valkey stays behind
        holder.wait()


async def test_a_valkey_left_by_a_killed_rankgate_is_adopted_and_stopped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dot_model(tmp_path / "dot.onnx")
    config = write_config(tmp_path, "http://127.0.0.1:9", None, ROUTES)
    pid = left_behind(config)
    caplog.set_level(logging.INFO, logger="rankgate.valkey")
    settings = load_settings(config)
    assert valkey_pids(settings.embedded_dir) == [pid]
    async with open_runtime(settings) as runtime:
        assert valkey_pid(runtime.redis_url) == pid  # reused, not a second one
    started, stopped = (r for r in caplog.records if r.name == "rankgate.valkey")
    assert started.__dict__["adopted"] is True and "adopted" in started.getMessage()
    assert stopped.__dict__["event"] == "valkey-stopped" and stopped.__dict__["how"] == "adopted"
    # The clean exit of the process that adopted it stopped it (an exited server may
    # linger as a zombie until init reaps it: valkey_pids counts only live ones).
    assert valkey_pids(settings.embedded_dir) == []
