"""The per-token event limit: exact for every token while it is valid (no LRU that forgets
a token after enough others), shared between processes through Redis, and still held per
process when Redis does not answer."""

from __future__ import annotations

import asyncio
import time

import redis
import redis.asyncio as aioredis

from proxy.experiments.limiter import KEY_PREFIX, TokenCounts

DAY_S = 86_400.0


def rid(k: int) -> str:
    return f"{k:024x}"


async def test_a_full_token_stays_full_after_many_others() -> None:
    """The old limiter kept 100,000 ids: a token at its limit took 20 more after 100,000
    other tokens. Here every token is kept until it expires."""
    counts = TokenCounts(20, DAY_S)
    now = int(time.time() * 1000)
    assert await counts.take({rid(0): (20, now)}, now)
    assert not await counts.take({rid(0): (1, now)}, now)
    for k in range(1, 120_001):
        assert await counts.take({rid(k): (1, now)}, now)
    assert counts.tracked == 120_001
    assert not await counts.take({rid(0): (1, now)}, now + 1000)


async def test_a_post_is_counted_whole_or_not_at_all() -> None:
    counts = TokenCounts(3, DAY_S)
    now = int(time.time() * 1000)
    assert await counts.take({rid(1): (2, now)}, now)
    # Token 2 fits, token 1 does not: nothing of the POST is counted.
    assert not await counts.take({rid(2): (1, now), rid(1): (2, now)}, now)
    assert counts.local(rid(2), now) == 0 and counts.local(rid(1), now) == 2


async def test_memory_goes_with_the_tokens_age() -> None:
    counts = TokenCounts(5, 60.0)
    t0 = 1_000_000_000
    for k in range(1000):
        assert await counts.take({rid(k): (1, t0)}, t0)
    counts.expire(t0 + 59_000)
    assert counts.tracked == 1000  # still valid: kept
    assert await counts.take({rid(5000): (1, t0 + 61_000)}, t0 + 62_000)
    assert counts.tracked == 1  # the first thousand expired (their tokens are refused: 410)


async def test_the_count_is_shared_through_redis(own_valkey: tuple[str, redis.Redis]) -> None:
    """Two processes (two TokenCounts on one Redis): a token replayed to the second
    counts against the total the first saw."""
    url, client = own_valkey
    a = TokenCounts(20, DAY_S, aioredis.Redis.from_url(url))
    b = TokenCounts(20, DAY_S, aioredis.Redis.from_url(url))
    now = int(time.time() * 1000)
    try:
        assert await a.take({rid(7): (15, now)}, now)
        assert not await b.take({rid(7): (6, now)}, now)
        assert await b.take({rid(7): (5, now)}, now)
        assert not await a.take({rid(7): (1, now)}, now)
        assert int(client.get(KEY_PREFIX + rid(7)) or 0) == 20  # the refusals took theirs back
        ttl_ms = client.pttl(KEY_PREFIX + rid(7))
        assert DAY_S * 1000 - 5_000 < ttl_ms <= DAY_S * 1000 + 1000  # gone when the token is
    finally:
        await a.close()
        await b.close()


async def test_without_redis_the_local_count_decides() -> None:
    dead = aioredis.Redis.from_url(
        "redis://127.0.0.1:1/0", socket_timeout=0.2, socket_connect_timeout=0.2
    )
    counts = TokenCounts(3, DAY_S, dead)
    now = int(time.time() * 1000)
    try:
        assert await counts.take({rid(9): (3, now)}, now)
        assert not await counts.take({rid(9): (1, now)}, now)
    finally:
        await counts.close()


async def test_concurrent_posts_while_redis_fails_stay_within_the_limit() -> None:
    """Both POSTs pass the first check, then wait on a Redis that does not answer: the
    local count is checked again after the wait, so only one of them is taken."""
    dead = aioredis.Redis.from_url(
        "redis://127.0.0.1:1/0", socket_timeout=0.2, socket_connect_timeout=0.2
    )
    counts = TokenCounts(3, DAY_S, dead)
    now = int(time.time() * 1000)
    try:
        got = await asyncio.gather(*(counts.take({rid(4): (2, now)}, now) for _ in range(2)))
        assert sorted(got) == [False, True] and counts.local(rid(4), now) == 2
    finally:
        await counts.close()


async def test_a_redis_that_never_answers_holds_no_post() -> None:
    """A server that takes the connection and never replies (a wedged proxy in front of
    Redis): the count gives up after timeout_s and the local count decides."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)  # never answers; ends when the client leaves

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = aioredis.Redis(host="127.0.0.1", port=port, socket_timeout=None)
    counts = TokenCounts(2, 60, client, timeout_s=0.2)
    now = int(time.time() * 1000)
    try:
        started = time.monotonic()
        assert await counts.take({"r1": (2, now)}, now)
        assert time.monotonic() - started < 2.0
        assert counts.local("r1", now) == 2
        assert not await counts.take({"r1": (1, now)}, now)  # local count: full
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
