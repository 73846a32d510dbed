"""The exposure sink: a bounded queue that drops (and counts) rather than wait, a
flusher that writes batches to a real Redis Stream or to JSONL files, and an outage
logged once when it starts and once when it ends."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import orjson
import pytest
import redis

from proxy.config.settings import Exposures
from proxy.experiments.sink import (
    Flusher,
    JsonlWriter,
    RecordQueue,
    RedisStreamWriter,
    running_sink,
)


def test_a_full_queue_drops_the_newest() -> None:
    queue = RecordQueue(maxsize=3, batch=2)
    for k in range(5):
        queue.put({"k": k})
    assert [r["k"] for r in queue.records] == [0, 1, 2] and queue.dropped == 2
    assert queue.full.is_set()  # a batch was waiting
    assert [r["k"] for r in queue.take(2)] == [0, 1] and len(queue.records) == 1


async def test_batches_reach_a_redis_stream(redis_url: str, redis_db: redis.Redis) -> None:
    cfg = Exposures(enabled=True, stream="t:exp", batch=10, flush_interval_ms=10)
    async with running_sink(cfg, redis_url, Path("unused")) as queue:
        for k in range(25):
            queue.put({"k": k})
    # Leaving the lifespan writes what is left.
    entries = redis_db.xrange("t:exp")
    assert [orjson.loads(f[b"r"])["k"] for _, f in entries] == list(range(25))
    assert (queue.written, queue.dropped) == (25, 0)


async def test_an_outage_drops_and_is_logged_once_each_way(
    redis_url: str, redis_db: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    queue = RecordQueue(100, 5)
    writer = RedisStreamWriter(f"redis://127.0.0.1:{dead}/0", "t:out", 1000, 200)
    flusher = Flusher(queue, writer, 0.01, "exposures (redis)")
    caplog.set_level(logging.WARNING, "rankgate.sink")
    for round_ in range(3):
        for k in range(5):
            queue.put({"round": round_, "k": k})
        await flusher.flush()
    assert queue.dropped == 15 and queue.written == 0
    await writer.close()
    flusher.writer = RedisStreamWriter(redis_url, "t:out", 1000, 1000)  # Redis is back
    queue.put({"back": True})
    await flusher.flush()
    await flusher.writer.close()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "cannot write records" in messages[0]
    assert "writing again; 15 records were dropped" in messages[1]
    assert queue.written == 1 and len(redis_db.xrange("t:out")) == 1


async def test_jsonl_files_rotate_and_keep_the_newest(tmp_path: Path) -> None:
    writer = JsonlWriter(tmp_path / "log", max_file_bytes=4096, keep_files=2)
    line = orjson.dumps({"pad": "x" * 1000})
    await writer.write([line] * 5)  # batches of any size: no file grows past the bound
    await writer.write([line] * 7)
    await writer.close()
    files = sorted((tmp_path / "log").glob("*.jsonl"))
    # 12 lines of ~1 KB, four to a 4 KiB file: three files, the newest two kept.
    assert [f.name[-12:] for f in files] == ["000002.jsonl", "000003.jsonl"]
    assert all(f.stat().st_size <= 4096 for f in files)
    assert all(orjson.loads(x)["pad"] for f in files for x in f.read_bytes().splitlines())
