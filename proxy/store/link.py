"""The hot-path Redis link: redis-py connections (its URL parsing, auth, TLS, hiredis
parser and socket timeouts) driven directly, and the feed path's GET and MGET
auto-pipelined on top of them.

``Redis.get()`` pays for a pool lock, a retry wrapper and observability hooks on every
command; ``send_packed_command`` + ``read_response`` on a held connection costs a
fraction of that, and at one or two commands per feed request the difference is a large
share of the proxy's own time (figures: docs/performance.md). ``command`` and
``pipeline`` (plugins' ``ctx.command``, PING, the cluster layer) still take a connection
of their own from a small free list, so a slow or blocking command holds up no one else.

``get`` and ``mget``, the two commands of every re-rank, go through ``autopipe``
instead when the link has a deadline (``redis.timeout_ms``): the commands of one loop
turn share one write, the replies are parsed with hiredis as they arrive and answer
their callers in order, without a connection acquired, a drain or a reader wake-up per
command (proxy/store/autopipe.py says how it stays in step). Without a deadline (a
cluster node's link: ClusterLink gives each call its own) a pipelined connection could
not give up on a silent server, so they keep the held-connection path.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.store.autopipe import MAX_PIPES, AutoPipeline


class _Unavailable:
    """A key whose node did not answer: not absent, so never cached as missing."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNAVAILABLE"


UNAVAILABLE: Any = _Unavailable()


def pack_get(key: bytes) -> bytes:
    """``GET key`` in RESP, without redis-py's general pack_command (one per re-rank)."""
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)


def pack_mget(keys: Sequence[bytes], asking: bool = False) -> bytes:
    """``MGET key ...`` in RESP (ASKING first when ``asking``): ~3x cheaper than
    redis-py's general pack_command for 100 keys, and it runs for every uncached lookup."""
    parts = [
        b"*1\r\n$6\r\nASKING\r\n" if asking else b"",
        b"*%d\r\n$4\r\nMGET\r\n" % (len(keys) + 1),
    ]
    for key in keys:
        parts.append(b"$%d\r\n%s\r\n" % (len(key), key))
    return b"".join(parts)


async def read_replies(conn: AbstractConnection, count: int) -> list[Any]:
    """``count`` replies from ``conn``, error replies returned as their ResponseError.

    One deadline (the connection's socket timeout) for the whole batch rather than one
    per reply: redis-py's per-read timeout costs ~4 us, and a pipeline's replies arrive
    together. A read cut short disconnects the connection (redis-py does), so it is never
    reused out of step."""
    replies: list[Any] = []
    try:
        async with asyncio.timeout(conn.socket_timeout):
            for _ in range(count):
                try:
                    replies.append(await conn.read_response(timeout=math.inf))
                except ResponseError as exc:  # the connection stays in step
                    replies.append(exc)
    except TimeoutError:
        raise RedisTimeoutError(f"Timeout reading from {conn.host}:{conn.port}") from None
    return replies


class RedisLink:
    def __init__(self, pool: aioredis.ConnectionPool, max_connections: int) -> None:
        self.pool = pool
        self.max_connections = max_connections
        self._idle: list[AbstractConnection] = []
        self._all: list[AbstractConnection] = []
        self._waiters: deque[asyncio.Future[AbstractConnection]] = deque()
        timeout = pool.connection_kwargs.get("socket_timeout")
        self._pipes = (
            AutoPipeline(pool, timeout, min(MAX_PIPES, max_connections)) if timeout else None
        )

    async def acquire(self) -> AbstractConnection:
        if self._idle:
            return self._idle.pop()
        if len(self._all) < self.max_connections:
            conn = self.pool.make_connection()
            self._all.append(conn)
            return conn
        waiter: asyncio.Future[AbstractConnection] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter

    def release(self, conn: AbstractConnection) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    async def command(self, *args: Any) -> Any:
        """Send one command and read its reply. A connection that failed or timed out
        is disconnected by redis-py and reconnects on its next use."""
        conn = await self.acquire()
        try:
            await conn.send_packed_command(conn.pack_command(*args), check_health=False)
            return await conn.read_response()
        finally:
            self.release(conn)

    async def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send ``commands`` in one write and read every reply, in order. An error reply
        (MOVED, ASK, CLUSTERDOWN, ...) is returned as its ResponseError, not raised, so
        one bad reply does not hide the others; a connection error or timeout raises."""
        conn = await self.acquire()
        try:
            await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
            return await read_replies(conn, len(commands))
        finally:
            self.release(conn)

    def get(self, key: bytes) -> Awaitable[Any]:
        """The value of ``key`` (None when absent): auto-pipelined when the link has a
        deadline. Not a coroutine: the future itself, one frame less per re-rank."""
        if self._pipes is not None:
            return self._pipes.send(pack_get(key))
        return self.command("GET", key)

    async def ping(self) -> None:
        """PING on the connection the feed path uses (opening it: the warm-up's), or
        raise: the admin status's check."""
        if self._pipes is not None:
            await self._pipes.send(b"*1\r\n$4\r\nPING\r\n")
        else:
            await self.command("PING")

    async def mget(self, keys: list[bytes], slots: list[int] | None = None) -> list[Any]:
        """Values of ``keys`` in order (None where absent): one MGET on one node,
        auto-pipelined as ``get`` is.

        ClusterLink.mget has the same shape (``slots``, the keys' cluster slots when the
        caller knows them, is for it); where a node is down its keys come back as
        UNAVAILABLE, which this link never returns (it raises instead)."""
        if self._pipes is not None:
            reply = await self._pipes.send(pack_mget(keys))
            assert isinstance(reply, list)
            return reply
        conn = await self.acquire()
        try:
            await conn.send_packed_command(pack_mget(keys), check_health=False)
            reply = await conn.read_response()
        finally:
            self.release(conn)
        assert isinstance(reply, list)
        return reply

    async def close(self) -> None:
        if self._pipes is not None:
            self._pipes.close()
        for conn in self._all:
            await conn.disconnect()
        self._all.clear()
        self._idle.clear()
        await self.pool.disconnect()
