"""The exposure sink: a bounded queue that drops (and counts) rather than wait, a
flusher that writes batches to a real Redis Stream or to JSONL files, and an outage
logged once when it starts and once when it ends."""

from __future__ import annotations

import asyncio
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


async def test_a_refused_batch_is_dropped_and_the_next_one_is_written(
    redis_url: str, redis_db: redis.Redis
) -> None:
    """Every reply of a batch is read, errors among them too: a key of another type
    refuses the XADDs (WRONGTYPE), the batch is dropped and counted, and the writer's
    next batch on the same client is written whole."""
    redis_db.set("t:wrong", "a string")
    queue = RecordQueue(100, 10)
    writer = RedisStreamWriter(redis_url, "t:wrong", 1000, 1000)
    flusher = Flusher(queue, writer, 0.01, "exposures (redis)")
    for k in range(3):
        queue.put({"k": k})
    await flusher.flush()
    assert (queue.written, queue.dropped) == (0, 3)
    redis_db.delete("t:wrong")
    for k in range(4):
        queue.put({"k": k})
    await flusher.flush()
    await writer.close()
    assert (queue.written, queue.dropped) == (4, 3)
    assert [orjson.loads(f[b"r"])["k"] for _, f in redis_db.xrange("t:wrong")] == [0, 1, 2, 3]


def _records(directory: Path) -> list[object]:
    return [orjson.loads(x) for f in directory.glob("*.jsonl") for x in f.read_bytes().splitlines()]


class _Broken:
    def build(self) -> dict[str, object]:
        raise ValueError("a bug")


class _Fine:
    def build(self) -> dict[str, object]:
        return {"built": True}


async def test_deferred_records_are_built_in_the_batch_and_a_failure_is_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = RecordQueue(100, 10)
    writer = JsonlWriter(tmp_path, max_file_bytes=1 << 20, keep_files=2)
    flusher = Flusher(queue, writer, 0.01, "exposures (jsonl)")
    caplog.set_level(logging.ERROR, "rankgate.sink")
    for entry in (_Fine(), _Broken(), {"plain": 1}, _Broken()):
        queue.put(entry)  # type: ignore[arg-type]
    await flusher.flush()
    await writer.close()
    assert _records(tmp_path) == [{"built": True}, {"plain": 1}]
    assert (queue.written, queue.dropped) == (2, 2)
    assert len(caplog.records) == 1 and "could not be built" in caplog.records[0].getMessage()


async def test_a_sink_that_does_not_answer_costs_one_timeout_per_batch(
    redis_url: str, redis_db: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Valkey holding every write (CLIENT PAUSE WRITE): a batch's replies are read under
    one timeout (``timeout_ms``), the batch is dropped and counted, the outage logged
    once; once Valkey answers again, the next batch is written."""
    queue = RecordQueue(100, 5)
    writer = RedisStreamWriter(redis_url, "t:paused", 1000, 200)
    flusher = Flusher(queue, writer, 0.01, "exposures (redis)")
    await writer.client.ping()  # connected before the pause
    caplog.set_level(logging.WARNING, "rankgate.sink")
    redis_db.execute_command("CLIENT", "PAUSE", 3000, "WRITE")
    try:
        for round_ in range(2):
            for k in range(5):
                queue.put({"round": round_, "k": k})
            await asyncio.wait_for(flusher.flush(), 2)
    finally:
        redis_db.execute_command("CLIENT", "UNPAUSE")
    assert (queue.written, queue.dropped) == (0, 10)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "TimeoutError" in messages[0], messages
    queue.put({"after": True})
    await flusher.flush()
    await writer.close()
    assert queue.written == 1 and "writing again" in caplog.records[-1].getMessage()
