"""A pub/sub subscription that survives one node: SUBSCRIBE on the configured node, or
on another node of a cluster when that one does not answer (a cluster passes every
PUBLISH to the subscribers of all its nodes)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

CONNECT_TIMEOUT_S = 2.0


def _client(url: str, host: str | None, port: int | None) -> aioredis.Redis:
    """A client for ``url``'s settings (password, TLS) at another address."""
    pool = aioredis.ConnectionPool.from_url(url)
    kwargs: dict[str, Any] = {
        **pool.connection_kwargs,
        "socket_timeout": None,  # a subscriber waits for as long as it takes
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
    }
    if host is not None:
        kwargs.update(host=host, port=port)
    return aioredis.Redis(
        connection_pool=aioredis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )


@contextlib.asynccontextmanager
async def subscription(
    url: str, channel: str, others: Sequence[tuple[str, int]] = ()
) -> AsyncIterator[aioredis.client.PubSub]:
    """Subscribed to ``channel`` on ``url``'s node, or else the first of ``others``
    that answers; raises the last error when none does."""
    error: BaseException | None = None
    for host, port in [(None, None), *others]:
        client = _client(url, host, port)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(channel)
        except (RedisError, OSError) as exc:
            error = exc
            await pubsub.aclose()
            await client.aclose()
            continue
        try:
            yield pubsub
        finally:
            await pubsub.aclose()
            await client.aclose()
        return
    raise error or redis.ConnectionError("no node to subscribe on")
