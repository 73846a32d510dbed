"""Choosing one node or a cluster (proxy/store/connect.py), against real servers."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from proxy.config.keys import KeyTemplate
from proxy.config.settings import Embeddings
from proxy.config.settings import Redis as RedisConfig
from proxy.outcome.errors import RedisError as EmbeddingError
from proxy.store.cluster import ClusterLink
from proxy.store.connect import connect_store, sync_client
from proxy.store.link import RedisLink
from tests.support.clusters import ValkeyCluster, free_port

EMB = Embeddings(dim=4, item_key="emb:item:{b{bucket}}:{id}", item_buckets=16)


def vec(x: float) -> bytes:
    return np.full(4, x, dtype="<f4").tobytes()


def seed(client: redis.Redis | redis.RedisCluster, users: int = 30, items: int = 60) -> None:
    template = KeyTemplate(EMB.item_key, EMB.item_buckets)
    for k in range(users):
        client.set(f"emb:user:u{k}", vec(k))
    for k in range(items):
        client.set(template.key(f"i{k}"), vec(k))


async def test_one_node_is_detected(redis_url: str, redis_db: redis.Redis) -> None:
    seed(redis_db)
    store = await connect_store(redis_url, RedisConfig(url=redis_url), EMB)
    try:
        assert type(store.link) is RedisLink
        assert type(store.client) is aioredis.Redis
        assert (await store.user("u3")).tolist() == [3.0] * 4  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_a_cluster_is_detected(cluster: ValkeyCluster) -> None:
    with cluster.client() as client:
        seed(client)
    store = await connect_store(cluster.url, RedisConfig(url=cluster.url), EMB)
    try:
        assert isinstance(store.link, ClusterLink) and isinstance(store.client, RedisCluster)
        for k in range(30):  # users on every node
            assert (await store.user(f"u{k}")).tolist() == [float(k)] * 4  # type: ignore[union-attr]
        ids = [f"i{k}" for k in range(0, 70, 2)]
        have, vectors = await store.items(ids)
        assert have.tolist() == list(range(30))  # i60+ have no vector
        assert vectors[:, 0].tolist() == [float(k) for k in range(0, 60, 2)]
        # ctx.redis, the plugins' full-API client, works on the cluster too.
        assert await store.client.get("emb:user:u7") == vec(7)
    finally:
        await store.close()


async def test_one_node_client_on_a_cluster_fails_open(cluster: ValkeyCluster) -> None:
    """The bug this module exists for: redis.cluster: false against a cluster gets MOVED
    for most users and CROSSSLOT for the item MGET, which the store names redis-error."""
    with cluster.client() as client:
        seed(client)
    store = await connect_store(cluster.url, RedisConfig(url=cluster.url, cluster=False), EMB)
    try:
        assert type(store.link) is RedisLink
        reasons = []
        for k in range(30):
            try:
                await store.user(f"u{k}")
            except EmbeddingError as exc:
                reasons.append(exc.reason)
        assert reasons and set(reasons) == {"redis-error"}
        with pytest.raises(EmbeddingError, match=r"slot|MOVED"):
            await store.items([f"i{k}" for k in range(20)])
    finally:
        await store.close()


async def test_cluster_true_on_one_node_warns(
    redis_url: str, redis_db: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    seed(redis_db)
    with caplog.at_level(logging.WARNING, "rankgate.redis"):
        store = await connect_store(redis_url, RedisConfig(url=redis_url, cluster=True), EMB)
    try:
        assert type(store.link) is RedisLink
        assert "no cluster support" in caplog.text
        assert (await store.user("u1")).tolist() == [1.0] * 4  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_unreachable_at_start_decides_on_first_contact(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, "rankgate.redis"):
        store = await connect_store(url, RedisConfig(url=url, timeout_ms=50), EMB)
    try:
        assert isinstance(store.link, ClusterLink)
        assert "decided on first contact" in caplog.text
        with pytest.raises(EmbeddingError) as err:
            await store.user("u1")
        assert err.value.reason == "redis-unavailable"
    finally:
        await store.close()


def test_sync_client_detects(cluster: ValkeyCluster, redis_url: str) -> None:
    with sync_client(cluster.url, None, 2.0) as client:
        assert isinstance(client, redis.RedisCluster)
        client.set("a", "1")
        assert client.get("a") == b"1"
    with sync_client(redis_url, None, 2.0) as client:
        assert type(client) is redis.Redis
    with sync_client(redis_url, False, 2.0) as client:
        assert type(client) is redis.Redis


def test_sync_client_nothing_answers() -> None:
    """Down is a redis.ConnectionError whatever the shape (RedisCluster raises its own)."""
    url = f"redis://127.0.0.1:{free_port()}"
    for cluster in (True, None):
        with pytest.raises(redis.ConnectionError):
            sync_client(url, cluster, 0.5).ping()
