"""Embeddings from a real Redis: vectors validated, item lookups cached, and a whole list
remembered only for a request that was served re-ranked."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import redis

from proxy.config.settings import Embeddings
from proxy.outcome.errors import Reason, Skip
from proxy.store.embeddings import EmbeddingStore, connect
from tests.support.common import (
    DIM,
    TEN_ITEMS_ROUTES,
    feed_origin,
    proxy_get,
    running_proxy,
    seed_ten_items,
    start_app,
    vec,
    wait_until,
    write_config,
)


@pytest.fixture
async def store(redis_url: str, redis_db: redis.Redis) -> AsyncIterator[EmbeddingStore]:
    for k in range(5):
        redis_db.set(f"emb:item:i{k}", vec([k] * DIM))
    redis_db.set("emb:item:bad", b"short")
    redis_db.set("emb:user:u1", vec([1.0] * DIM))
    config = Embeddings(dim=DIM, item_cache={"max_items": 100, "missing_ttl_s": 60})
    s = EmbeddingStore(connect(redis_url, 500, 4), config)
    yield s
    await s.close()


async def test_items_and_invalid_vectors(store: EmbeddingStore) -> None:
    positions, matrix = await store.items(["i1", "nope", "bad", "i3"])
    assert positions.tolist() == [0, 3]
    assert matrix[:, 0].tolist() == [1.0, 3.0]
    assert (await store.user("u1")) is not None and (await store.user("u2")) is None


async def test_a_user_vector_there_but_invalid_is_bad_vector(
    store: EmbeddingStore, redis_db: redis.Redis
) -> None:
    redis_db.set("emb:user:short", vec([1.0] * (DIM - 1)))
    redis_db.set("emb:user:nan", vec([np.nan] * DIM))
    for user, detail in (("short", f"{(DIM - 1) * 4} bytes"), ("nan", f"{DIM * 4} bytes")):
        with pytest.raises(Skip) as caught:
            await store.user(user)
        assert caught.value.reason is Reason.BAD_VECTOR and detail in caught.value.detail
    assert await store.user("absent") is None  # absent is unknown-user's, not this


async def test_a_list_is_remembered_only_when_asked(store: EmbeddingStore) -> None:
    ids = ["i0", "i1", "i2"]
    lookup = store.lookup(ids)
    assert lookup.result is None and lookup.missed == [0, 1, 2]
    await store.complete(lookup)
    assert len(store.cache) == 3 and store.cache.lists == 0  # items yes, list not yet
    again = store.lookup(ids)
    assert again.result is not None and not again.cached  # assembled from items
    store.remember(again)
    assert store.cache.lists == 1
    third = store.lookup(ids)
    assert third.cached  # one tuple lookup now
    store.remember(third)
    assert store.cache.lists == 1


async def test_cached_vectors_survive_a_put_while_redis_answers(
    redis_url: str, redis_db: redis.Redis
) -> None:
    """A lookup gathers its cached vectors at once: another request filling the cache
    (and reusing their rows) before the MGET returns does not change them."""
    for k in range(6):
        redis_db.set(f"emb:item:i{k}", vec([k] * DIM))
    config = Embeddings(dim=DIM, item_cache={"max_items": 2})
    s = EmbeddingStore(connect(redis_url, 500, 4), config)
    try:
        await s.items(["i0", "i1"])
        lookup = s.lookup(["i0", "i1", "i2"])
        assert lookup.missed == [2]
        await s.items(["i4", "i5"])  # i0 and i1 leave; their rows now hold i4 and i5
        positions, matrix = await s.complete(lookup)
        assert positions.tolist() == [0, 1, 2] and matrix[:, 0].tolist() == [0.0, 1.0, 2.0]
        assert not matrix.flags.writeable
    finally:
        await s.close()


async def test_invalid_and_absent_vectors_are_cached_as_missing(
    store: EmbeddingStore, redis_db: redis.Redis
) -> None:
    redis_db.set("emb:item:nan", vec([float("nan")] * DIM))
    await store.items(["nan", "bad", "nope", "i1"])
    lookup = store.lookup(["nan", "bad", "nope", "i1"])  # all from the cache now
    assert lookup.missed == [] and lookup.result is not None
    assert lookup.result[0].tolist() == [3]


SPLIT_ROUTES = TEN_ITEMS_ROUTES.replace(
    "routes:\n",
    "routes:\n  - {name: hurried, match: {path: /hurried}, model: dot, budget_ms: 0.001}\n",
)


async def test_nothing_is_cached_for_a_skipped_request(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    """A route whose budget is always spent caches no list; the same page served
    re-ranked by another route does."""
    seed_ten_items(redis_db, tmp_path)
    runner, origin = await start_app(feed_origin(10))  # the same page on every path
    cfg = write_config(tmp_path, origin, redis_url, SPLIT_ROUTES)
    try:
        async with running_proxy(cfg) as proxy:
            cache = proxy.runtime.embeddings.cache
            # The late lookup still fills the item cache (a slow Redis must warm it).
            # A request whose user vector came after the body spends its budget before
            # the item lookup starts (on a busy machine, now and then): ask again.
            for _ in range(30):
                resp, _ = await proxy_get(proxy, "/hurried")
                assert resp.headers["X-Rerank"] == "skipped; reason=budget"
                with contextlib.suppress(TimeoutError):
                    await wait_until(lambda: len(cache) == 10, limit_s=0.3)
                    break
            assert len(cache) == 10
            assert cache.lists == 0
            resp, _ = await proxy_get(proxy, "/feed")
            assert resp.headers["X-Rerank"].startswith("applied")
            assert cache.lists == 1
    finally:
        await runner.cleanup()


def test_vectors_are_float32_little_endian() -> None:
    assert np.frombuffer(vec([1.5] * DIM), dtype="<f4").tolist() == [1.5] * DIM
