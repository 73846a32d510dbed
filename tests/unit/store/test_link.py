"""The hot-path Redis link against a real server: replies, the connection cap, waiters
served in turn, a connection that broke coming back, and close."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis

from proxy.store.link import RedisLink


@pytest_asyncio.fixture
async def link(redis_url: str, redis_db: redis.Redis) -> AsyncIterator[RedisLink]:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=2)
    link = RedisLink(client.connection_pool, max_connections=2)
    try:
        yield link
    finally:
        await link.close()
        await client.aclose()


async def test_commands_get_raw_replies(link: RedisLink, redis_db: redis.Redis) -> None:
    redis_db.set("k1", b"\x00\x01")
    assert await link.command("PING") == b"PONG"
    assert await link.command("GET", "k1") == b"\x00\x01"
    assert await link.command("MGET", "k1", "missing") == [b"\x00\x01", None]


async def test_never_more_connections_than_the_cap(link: RedisLink, redis_db: redis.Redis) -> None:
    # Ten blocked commands at once on a cap of two: two connections, the rest wait their
    # turn and are all answered.
    replies = await asyncio.gather(*(link.command("BLPOP", f"q{i}", 0.05) for i in range(10)))
    assert replies == [None] * 10
    assert len(link._all) == 2 and len(link._idle) == 2


async def test_a_broken_connection_reconnects_on_its_next_use(
    link: RedisLink, redis_db: redis.Redis
) -> None:
    assert await link.command("CLIENT", "SETNAME", "victim") == b"OK"
    redis_db.client_kill_filter(_type="normal", skipme=True)  # every client but this one
    # The first use after the kill fails (the server closed the socket); that must not
    # poison the link: the next command on the same connection works again.
    with pytest.raises((redis.exceptions.ConnectionError, ConnectionError)):
        await link.command("PING")
    assert await link.command("PING") == b"PONG"
    assert len(link._all) == 1


async def test_close_disconnects_everything(link: RedisLink, redis_db: redis.Redis) -> None:
    await asyncio.gather(link.command("PING"), link.command("PING"))
    before = int(redis_db.info("clients")["connected_clients"])
    await link.close()
    assert link._all == [] and link._idle == []
    await asyncio.sleep(0.05)
    assert int(redis_db.info("clients")["connected_clients"]) <= before - 2
