"""User and item embeddings from Redis: raw little-endian float32 bytes of ``dim`` values.

An item vector of the wrong length or with NaN/inf is treated as missing; such a user
vector raises ``Skip(bad-vector)``, so that a wrong ``embeddings.dim`` is not mistaken
for users who have no vector (``unknown-user``). Redis failures
raise ``errors.RedisError`` (redis-timeout, redis-unavailable, redis-error), which the
feed path turns into a fail-open.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from proxy.config.keys import KeyTemplate
from proxy.config.settings import Embeddings
from proxy.outcome.errors import Reason, Skip, from_redis
from proxy.store.itemcache import NO_ROW, ItemCache
from proxy.store.link import UNAVAILABLE, RedisLink

F32 = np.dtype("<f4")
# (positions in the id list that have a vector, those vectors as an [n, dim] matrix)
Vectors = tuple[np.ndarray, np.ndarray]


class Link(Protocol):
    """RedisLink (one node) or ClusterLink (a Redis Cluster)."""

    async def command(self, *args: Any) -> Any: ...
    def get(self, key: bytes) -> Awaitable[Any]: ...
    async def ping(self) -> None: ...
    async def mget(self, keys: list[bytes], slots: list[int] | None) -> list[Any]: ...
    async def close(self) -> None: ...


@dataclass(slots=True)
class ItemLookup:
    ids: list[str]
    key: tuple[str, ...]
    # The cached vectors, gathered at lookup (a put while Redis answers may reuse rows).
    hits: Vectors | None
    missed: list[int]
    result: Vectors | None
    # Set when a cluster node was down: its items go unscored this once (not cached).
    partial: str | None = None
    # The result came from the list cache (nothing to remember).
    cached: bool = False


def connect(url: str, timeout_ms: float, max_connections: int) -> aioredis.Redis:
    timeout = timeout_ms / 1000.0
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=max_connections,
        # A retry would spend the budget twice; the next request simply tries again.
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
        decode_responses=False,
    )


def _key(template: str, ident: str) -> str:
    # Plain replacement: ids may contain braces, which str.format would choke on.
    return template.replace("{id}", ident)


class EmbeddingStore:
    def __init__(
        self, client: aioredis.Redis, config: Embeddings, link: Link | None = None
    ) -> None:
        self.client = client  # redis-py's full API, for anything off the hot path
        # A ClusterLink for a Redis Cluster (proxy/store/connect.py chooses).
        self.link: Link = link or RedisLink(
            client.connection_pool, client.connection_pool.max_connections
        )
        self.config = config
        self.item_keys = KeyTemplate(config.item_key, config.item_buckets)
        self.dim = config.dim
        self.nbytes = config.dim * 4
        cache = config.item_cache
        self.cache = ItemCache(
            cache.max_items,
            cache.ttl_s,
            cache.missing_ttl_s,
            cache.max_lists,
            cache.max_bytes,
            config.dim,
        )

    def _valid(self, raw: bytes | None) -> bool:
        if raw is None or len(raw) != self.nbytes:
            return False
        return bool(np.isfinite(np.frombuffer(raw, dtype=F32)).all())

    def _valid_many(self, raws: list[Any]) -> tuple[list[bool], np.ndarray]:
        """_valid for a whole reply in one numpy pass (one vector at a time costs ten
        times as much: docs/performance.md), and the valid vectors, in order, as one
        [n, dim] matrix."""
        nbytes = self.nbytes
        ok = [isinstance(raw, bytes) and len(raw) == nbytes for raw in raws]
        sized = [raw for raw, good in zip(raws, ok, strict=True) if good]
        if not sized:
            return ok, np.empty((0, self.dim), dtype=F32)
        matrix = np.frombuffer(b"".join(sized), dtype=F32).reshape(len(sized), self.dim)
        finite = np.isfinite(matrix).all(axis=1)
        good = iter(finite.tolist())
        return [size_ok and next(good) for size_ok in ok], matrix[finite]

    async def _call(self, coro: object) -> object:
        try:
            return await coro  # type: ignore[misc]
        except (redis.exceptions.RedisError, OSError) as exc:
            raise from_redis(exc) from None

    async def user(self, user_id: str) -> np.ndarray | None:
        """The user's vector, or None when absent; ``Skip(bad-vector)`` when invalid."""
        raw = await self._call(self.link.get(_key(self.config.user_key, user_id).encode()))
        if not isinstance(raw, bytes):
            return None
        if not self._valid(raw):
            raise Skip(
                Reason.BAD_VECTOR,
                f"user vector of {len(raw)} bytes; embeddings.dim={self.dim} needs "
                f"{self.nbytes} bytes of finite float32",
            )
        return np.frombuffer(raw, dtype=F32)

    def lookup(self, ids: list[str], key: tuple[str, ...] | None = None) -> ItemLookup:
        """Item vectors from the in-process caches (no I/O).

        The same page of a feed is usually served to many users, so a whole id list is
        cached too (by ``remember``, once the request that built it was served re-ranked):
        then one tuple hash replaces a lookup per item. ``key``: ``tuple(ids)``, when the
        caller keeps it (the same object again is found without comparing its ids).
        """
        key = tuple(ids) if key is None else key
        batch = self.cache.get_batch(key)
        if batch is not None:
            return ItemLookup(ids, key, None, [], batch, cached=True)
        rows, missed = self.cache.get_many(ids)
        have = np.flatnonzero(rows != NO_ROW)
        # One gather, now: a put while Redis answers the misses may reuse these rows.
        hits = (have, self.cache.vectors(rows if len(have) == len(rows) else rows[have]))
        lookup = ItemLookup(ids, key, hits, missed, None)
        if not missed:
            lookup.result = _frozen(*hits)
        return lookup

    async def complete(self, lookup: ItemLookup) -> Vectors:
        """Fetch what the caches missed in one MGET, then assemble the matrix.

        The vectors fetched go to the item cache even when the request that asked has
        given up (budget): they are facts about Redis, and a slow Redis must be able to
        warm the cache, or a large cold feed would miss its budget for ever."""
        if lookup.result is not None:
            return lookup.result
        ids = lookup.ids
        keys, slots = self.item_keys.encoded([ids[p] for p in lookup.missed])
        raws = await self._call(self.link.mget(keys, slots))
        assert isinstance(raws, list)
        valid, fresh = self._valid_many(raws)  # fresh: the valid ones' vectors, in order
        cached: list[str] = []
        present: list[bool] = []
        fresh_at: list[int] = []
        for pos, raw, good in zip(lookup.missed, raws, valid, strict=True):
            if raw is UNAVAILABLE:  # its cluster node is down: unscored, not "missing"
                lookup.partial = "redis-unavailable"
                continue
            cached.append(ids[pos])
            present.append(good)  # not good: cached as known to have no vector
            if good:
                fresh_at.append(pos)
        self.cache.put_vectors(cached, present, fresh)
        assert lookup.hits is not None
        have, hits = lookup.hits
        # Cached and fetched vectors, put back in the order of the ids.
        positions = np.concatenate([have, np.asarray(fresh_at, dtype=np.intp)])
        order = np.argsort(positions, kind="stable")
        lookup.result = _frozen(positions[order], np.concatenate([hits, fresh])[order])
        return lookup.result

    def remember(self, lookup: ItemLookup) -> None:
        """Keep the assembled list for the next request with the same page. Called only
        for a request served re-ranked: nothing is cached for one that was skipped."""
        if lookup.cached or lookup.result is None or lookup.partial is not None:
            return  # a list with a down node's items missing is not the page's list
        complete = len(lookup.result[0]) == len(lookup.ids)
        self.cache.put_batch(lookup.key, lookup.result, complete)

    async def items(self, ids: list[str]) -> Vectors:
        """(positions of ids that have a vector, their vectors as an [n, dim] matrix),
        remembered as a list (for tools and tests; the feed path remembers itself)."""
        lookup = self.lookup(ids)
        result = await self.complete(lookup)
        self.remember(lookup)
        return result

    async def ping(self) -> None:
        await self._call(self.link.ping())

    async def close(self) -> None:
        await self.link.close()
        await self.client.aclose()


def _frozen(positions: np.ndarray, matrix: np.ndarray) -> Vectors:
    """A result shared with the list cache: read-only, as every request reads it."""
    positions = positions.astype(np.intp, copy=False)
    positions.flags.writeable = False
    matrix.flags.writeable = False
    return positions, matrix
