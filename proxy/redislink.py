"""The hot-path Redis link: redis-py connections (its URL parsing, auth, TLS, hiredis
parser and socket timeouts) driven directly from a small free list.

Measured here: ``Redis.get()`` costs ~155 us of CPU per command (pool lock, retry
wrapper, observability hooks) against ~58 us for ``send_packed_command`` +
``read_response`` on a held connection; at one or two commands per feed request that
difference is a large share of the proxy's own time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection


class RedisLink:
    def __init__(self, pool: aioredis.ConnectionPool, max_connections: int) -> None:
        self.pool = pool
        self.max_connections = max_connections
        self._idle: list[AbstractConnection] = []
        self._all: list[AbstractConnection] = []
        self._waiters: deque[asyncio.Future[AbstractConnection]] = deque()

    async def _acquire(self) -> AbstractConnection:
        if self._idle:
            return self._idle.pop()
        if len(self._all) < self.max_connections:
            conn = self.pool.make_connection()
            self._all.append(conn)
            return conn
        waiter: asyncio.Future[AbstractConnection] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter

    def _release(self, conn: AbstractConnection) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    async def command(self, *args: Any) -> Any:
        """Send one command and read its reply. A connection that failed or timed out
        is disconnected by redis-py and reconnects on its next use."""
        conn = await self._acquire()
        try:
            await conn.send_packed_command(conn.pack_command(*args), check_health=False)
            return await conn.read_response()
        finally:
            self._release(conn)

    async def close(self) -> None:
        for conn in self._all:
            await conn.disconnect()
        self._all.clear()
        self._idle.clear()
        await self.pool.disconnect()
