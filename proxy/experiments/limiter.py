"""How many events each click token has brought, until the token expires: the events
endpoint's ``max_per_id``, held exactly.

Two counts, both kept until the token is older than ``events.max_age_s`` (after that the
token itself is refused, so nothing can be forgotten too early):

- in Redis, for the fleet: ``INCRBY rankgate:events:n:<request id> N`` and ``PEXPIREAT``
  the token's expiry, for all of a POST's tokens in one pipelined round trip; a POST
  that would pass the limit is refused whole and its increments taken back (so
  concurrent POSTs can only be refused too often, never accepted too often). Every
  process that shares the Redis (a fleet, or the workers of one embedded Valkey) counts
  a replayed token against the same total;
- in this process, in buckets by expiry time: memory is what the tokens of the last
  ``max_age_s`` need, and a whole bucket goes once its tokens have expired (no LRU, which
  forgets a busy token after enough others). This count is what decides while Redis does
  not answer (then a token can reach ``max_per_id`` once per process at most), and it
  refuses without a round trip a token that is already at its limit here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis
import redis.exceptions

log = logging.getLogger("rankgate.events")

KEY_PREFIX = "rankgate:events:n:"
BUCKETS = 64  # per max_age_s: a bucket lives max_age_s / 64 past its last token's expiry
RETRY_REDIS_S = 5.0  # after a failure, the local count alone decides this long


class TokenCounts:
    def __init__(
        self,
        max_per_id: int,
        max_age_s: float,
        client: aioredis.Redis | None = None,
        timeout_s: float = 1.0,
    ) -> None:
        self.max_per_id = max_per_id
        # The whole count in Redis, both round trips: past it the local count decides (a
        # client that hangs must not hold a POST, whatever its socket timeouts).
        self.timeout_s = timeout_s
        self.max_age_ms = int(max_age_s * 1000)
        self.bucket_ms = max(self.max_age_ms // BUCKETS, 1000)
        self.client = client
        self._buckets: dict[int, dict[str, int]] = {}  # expiry bucket -> id -> count
        self._redis_down_until = 0.0

    def _bucket(self, ts_ms: int) -> int:
        return (ts_ms + self.max_age_ms) // self.bucket_ms

    def local(self, request_id: str, ts_ms: int) -> int:
        bucket = self._buckets.get(self._bucket(ts_ms))
        return 0 if bucket is None else bucket.get(request_id, 0)

    @property
    def tracked(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    def expire(self, now_ms: int) -> None:
        """Drop the buckets whose every token is past max_age_s."""
        last = now_ms // self.bucket_ms - 1  # buckets that ended before now
        for key in [k for k in self._buckets if k <= last]:
            del self._buckets[key]

    async def take(self, wanted: dict[str, tuple[int, int]], now_ms: int) -> bool:
        """Count ``wanted`` (request id -> (events, token time in ms)) if every token
        stays within max_per_id; else count nothing and say False."""
        self.expire(now_ms)
        if self._over(wanted):
            return False
        shared = await self._take_shared(wanted)
        # Not counted in Redis: the local count decides, checked again after the wait
        # (another POST for the same token may have been counted meanwhile).
        if shared is False or (shared is None and self._over(wanted)):
            return False
        for rid, (n, ts) in wanted.items():
            bucket = self._buckets.setdefault(self._bucket(ts), {})
            bucket[rid] = bucket.get(rid, 0) + n
        return True

    def _over(self, wanted: dict[str, tuple[int, int]]) -> bool:
        limit = self.max_per_id
        return any(self.local(rid, ts) + n > limit for rid, (n, ts) in wanted.items())

    async def _take_shared(self, wanted: dict[str, tuple[int, int]]) -> bool | None:
        """True: counted in Redis; False: over the limit there; None: not counted (no
        Redis, or it failed)."""
        client = self.client
        if client is None or time.monotonic() < self._redis_down_until:
            return None
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._count_shared(client, wanted)
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            if self._redis_down_until == 0.0:
                log.warning(
                    "events: cannot count tokens in Redis (%s: %s); counting per process",
                    type(exc).__name__,
                    exc,
                )
            self._redis_down_until = time.monotonic() + RETRY_REDIS_S
            return None

    async def _count_shared(
        self, client: aioredis.Redis, wanted: dict[str, tuple[int, int]]
    ) -> bool:
        async with client.pipeline(transaction=False) as pipe:
            for rid, (n, ts) in wanted.items():
                pipe.incrby(KEY_PREFIX + rid, n)
                pipe.pexpireat(KEY_PREFIX + rid, ts + self.max_age_ms + 1000)
            replies = await pipe.execute()
        self._redis_down_until = 0.0
        if all(count <= self.max_per_id for count in replies[0::2]):
            return True
        async with client.pipeline(transaction=False) as pipe:
            for rid, (n, _) in wanted.items():
                pipe.decrby(KEY_PREFIX + rid, n)
            await pipe.execute()
        return False

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await self.client.aclose()
