"""Where exposure and event records go, off the request path.

The request path only appends an entry to a bounded queue: a record (a dict), or a
deferred one (an exposure as the request left it, which the flusher builds: see
proxy/experiments/exposure.py). A flusher task builds, serializes and writes them in
batches, every ``flush_interval_ms`` or as soon as a batch is full. A full queue or a
sink that fails drops records and counts them; a failing sink is logged once when the
outage starts and once when it ends, never per record. Nothing here can delay or fail a
response.

Writers: a Redis Stream (``XADD key MAXLEN ~ N * r <json>``, one pipeline per batch, on
a client of its own with ``exposures.timeout_ms``), or JSONL files with size rotation
(one set of files per process; the writes run in a thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
import redis.exceptions

from proxy.config.settings import Exposures

log = logging.getLogger("rankgate.sink")

Record = dict[str, Any]


class Deferred(Protocol):
    """A record built when its batch is written, off the request's turn."""

    def build(self) -> Record: ...


Entry = Record | Deferred


class Writer(Protocol):
    async def write(self, lines: list[bytes]) -> None: ...

    async def close(self) -> None: ...


class RecordQueue:
    """Bounded, drop-newest: a full queue costs the record, never the request."""

    def __init__(self, maxsize: int, batch: int) -> None:
        self.maxsize = maxsize
        self.batch = batch
        self.records: deque[Entry] = deque()
        self.written = 0
        self.dropped = 0
        self.full = asyncio.Event()  # a batch is waiting: flush before the interval

    def put(self, record: Entry) -> bool:
        """Queued (True), or dropped and counted (the queue is full)."""
        records = self.records
        if len(records) >= self.maxsize:
            self.dropped += 1
            return False
        records.append(record)
        if len(records) == self.batch:
            self.full.set()
        return True

    def take(self, n: int) -> list[Entry]:
        records = self.records
        return [records.popleft() for _ in range(min(n, len(records)))]


class Flusher:
    """Drains the queue into a writer until stopped; then writes what is left."""

    def __init__(self, queue: RecordQueue, writer: Writer, interval_s: float, what: str) -> None:
        self.queue = queue
        self.writer = writer
        self.interval_s = interval_s
        self.what = what
        self.failing_since: int | None = None  # dropped count when the outage began
        self.build_failed = False  # a record that could not be built was logged

    def lines(self, batch: list[Entry]) -> list[bytes]:
        """The batch serialized, deferred records built here; one that fails to build
        is dropped and counted (its traceback logged the first time)."""
        out = []
        dumps = orjson.dumps
        for entry in batch:
            try:
                out.append(dumps(entry if isinstance(entry, dict) else entry.build()))
            except Exception:
                self.queue.dropped += 1
                if not self.build_failed:
                    self.build_failed = True
                    log.exception("%s: a record could not be built; dropping such", self.what)
        return out

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.full.wait(), self.interval_s)
            self.queue.full.clear()
            await self.flush()

    async def flush(self) -> None:
        queue = self.queue
        while queue.records:
            batch = self.lines(queue.take(queue.batch))
            if not batch:
                continue
            try:
                await self.writer.write(batch)
            except Exception as exc:
                queue.dropped += len(batch)
                if self.failing_since is None:
                    self.failing_since = queue.dropped - len(batch)
                    log.warning(
                        "%s: cannot write records (%s: %s); dropping them until it recovers",
                        self.what,
                        type(exc).__name__,
                        exc,
                    )
                return  # the rest waits for the next tick: no hot loop on an outage
            queue.written += len(batch)
            if self.failing_since is not None:
                log.warning(
                    "%s: writing again; %d records were dropped during the outage",
                    self.what,
                    queue.dropped - self.failing_since,
                )
                self.failing_since = None


class RedisStreamWriter:
    """``XADD key MAXLEN ~ N * r <json>`` per record, a batch in one write on one
    connection. The commands are packed here (a constant prefix and the record): redis-py's
    pipeline costs several times as much CPU per record (docs/performance.md)."""

    def __init__(self, url: str, stream: str, maxlen: int, timeout_ms: float) -> None:
        timeout = timeout_ms / 1000.0
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self.timeout = timeout
        self.stream = stream
        self.maxlen = maxlen
        parts = [b"XADD", stream.encode(), b"MAXLEN", b"~", str(maxlen).encode(), b"*", b"r"]
        self._prefix = b"*8\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in parts)

    def pack(self, lines: list[bytes]) -> bytes:
        prefix = self._prefix
        return b"".join(b"%s$%d\r\n%s\r\n" % (prefix, len(line), line) for line in lines)

    async def write(self, lines: list[bytes]) -> None:
        pool = self.client.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(self.pack(lines), check_health=False)
            failed = await self._replies(conn, len(lines))
            if failed is not None:
                raise failed
        except BaseException:
            await conn.disconnect()  # replies may be left unread: never reuse it
            raise
        finally:
            await pool.release(conn)

    async def _replies(self, conn: Any, n: int) -> Exception | None:
        """Every reply read (the first error among them returned), under one timeout for
        the batch: the connection's parser directly, whose replies are values or error
        objects, not ``read_response``'s timeout and wrappers per reply (most of the
        writer's CPU per record)."""
        parser = getattr(conn, "_parser", None)
        failed: Exception | None = None
        async with asyncio.timeout(self.timeout):
            for _ in range(n):
                if parser is not None:
                    reply = await parser.read_response(disable_decoding=True)
                else:  # another redis-py: its own way, an error raised
                    try:
                        reply = await conn.read_response(disable_decoding=True)
                    except redis.exceptions.ResponseError as exc:
                        reply = exc
                if isinstance(reply, Exception):  # read every reply first
                    failed = failed or reply
        return failed

    async def close(self) -> None:
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await self.client.aclose()


class JsonlWriter:
    """``DIR/exposures-HOST-PID-NNNNNN.jsonl``, a new file past ``max_file_bytes``; a
    process keeps its newest ``keep_files`` files."""

    def __init__(self, directory: Path, max_file_bytes: int, keep_files: int) -> None:
        self.directory = directory
        self.max_file_bytes = max_file_bytes
        self.keep_files = keep_files
        self.prefix = f"exposures-{socket.gethostname()}-{os.getpid()}-"
        self.seq = 0
        self.size = 0
        self.file: Any = None

    async def write(self, lines: list[bytes]) -> None:
        await asyncio.to_thread(self._write, lines)

    def _write(self, lines: list[bytes]) -> None:
        """The lines in order, a new file whenever the next one would not fit (a line
        longer than a whole file gets a file of its own)."""
        chunk: list[bytes] = []
        size = self.size
        for line in lines:
            n = len(line) + 1
            if self.file is None or (size + n > self.max_file_bytes and size > 0):
                self._flush(chunk)
                chunk = []
                self._rotate()
                size = self.size
            chunk.append(line)
            size += n
        self._flush(chunk)

    def _flush(self, chunk: list[bytes]) -> None:
        if chunk and self.file is not None:
            data = b"\n".join(chunk) + b"\n"
            self.file.write(data)
            self.file.flush()
            self.size += len(data)

    def _rotate(self) -> None:
        if self.file is not None:
            self.file.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.seq += 1
        path = self.directory / f"{self.prefix}{self.seq:06d}.jsonl"
        self.file = path.open("ab")
        self.size = path.stat().st_size
        mine = sorted(self.directory.glob(f"{self.prefix}*.jsonl"))
        for old in mine[: -self.keep_files]:
            with contextlib.suppress(OSError):
                old.unlink()

    async def close(self) -> None:
        if self.file is not None:
            await asyncio.to_thread(self.file.close)
            self.file = None


def make_writer(cfg: Exposures, redis_url: str, directory: Path) -> Writer:
    if cfg.sink == "redis":
        url = cfg.redis_url or redis_url
        return RedisStreamWriter(url, cfg.stream, cfg.maxlen, cfg.timeout_ms)
    return JsonlWriter(directory, cfg.max_file_bytes, cfg.keep_files)


@contextlib.asynccontextmanager
async def running_sink(
    cfg: Exposures, redis_url: str, directory: Path
) -> AsyncIterator[RecordQueue]:
    """The queue for the lifespan; on the way out, what is left is written (bounded by
    the writer's own timeout), then the writer closes."""
    queue = RecordQueue(cfg.queue_size, cfg.batch)
    writer = make_writer(cfg, redis_url, directory)
    what = f"exposures ({cfg.sink})"
    flusher = Flusher(queue, writer, cfg.flush_interval_ms / 1000.0, what)
    task = asyncio.create_task(flusher.run(), name="rankgate-exposures")
    try:
        yield queue
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await flusher.flush()
        await writer.close()
