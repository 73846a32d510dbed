"""The origin connection pool with a bounded wait for a free connection.

aiohttp bounds the wait for a pool slot only together with the connect (its ``connect``
timeout), and says neither which of the two ran out; the pool wait is the proxy's own
overload, answered 503 with Retry-After (HAProxy's ``timeout queue``), while a slow
connect is the origin's (504). The connector's wait runs only when every connection is
busy, so the timer costs nothing otherwise.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp


class PoolTimeout(Exception):
    """Every origin connection stayed busy for pool_timeout_s."""


class PoolConnector(aiohttp.TCPConnector):
    def __init__(self, *, pool_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool_timeout_s = pool_timeout_s
        self.pool_timeouts = 0

    async def _wait_for_available_connection(self, key: Any, traces: Any) -> None:
        try:
            async with asyncio.timeout(self.pool_timeout_s):
                await super()._wait_for_available_connection(key, traces)
        except TimeoutError:
            self.pool_timeouts += 1
            raise PoolTimeout from None
