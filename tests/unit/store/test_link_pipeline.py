"""RedisLink's batch calls (proxy/store/link.py: pack_mget, read_replies, pipeline,
mget) against a real Valkey."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from proxy.store.link import RedisLink, pack_mget


@pytest.fixture
async def link(redis_url: str) -> AsyncIterator[RedisLink]:
    pool = aioredis.ConnectionPool.from_url(redis_url, socket_timeout=2)
    link = RedisLink(pool, 2)
    try:
        yield link
    finally:
        await link.close()


def test_pack_mget_is_what_redis_py_sends() -> None:
    keys = [b"a", b"emb:item:{b3}:x", "ünï".encode(), b""]
    assert pack_mget(keys) == b"".join(Connection().pack_command("MGET", *keys))
    asking = b"".join(Connection().pack_commands([("ASKING",), ("MGET", *keys)]))
    assert pack_mget(keys, asking=True) == asking


async def test_mget_and_pipeline(link: RedisLink, redis_db: redis.Redis) -> None:
    redis_db.mset({"a": b"1", "b": b"2"})
    assert await link.mget([b"a", b"nope", b"b"], None) == [b"1", None, b"2"]
    replies = await link.pipeline([("GET", "a"), ("HGET", "a", "f"), ("GET", "b")])
    assert replies[0] == b"1" and replies[2] == b"2"
    assert isinstance(replies[1], redis.ResponseError)  # WRONGTYPE, returned not raised
    assert await link.command("GET", "b") == b"2"  # and the connection is still in step
