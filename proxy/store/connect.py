"""Connecting to Redis as one node or as a Redis/Valkey Cluster (``redis.cluster``).

``redis.cluster: true`` or ``false`` says which; ``null`` (the default) asks the server
at start with one ``CLUSTER SLOTS`` (a server without cluster support says so). When
Redis cannot be reached at start, the cluster-aware link is kept: it finds out on first
contact and then serves either shape, while ``ctx.redis`` (plugins) stays a one-node
client until a restart, as the warning says.
"""

from __future__ import annotations

import logging

import redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.exceptions import RedisClusterException

from proxy.config.settings import Embeddings
from proxy.config.settings import Redis as RedisConfig
from proxy.store.cluster import ClusterLink
from proxy.store.embeddings import EmbeddingStore, connect

log = logging.getLogger("rankgate.redis")


def cluster_client(url: str, timeout_ms: float, max_connections: int) -> RedisCluster:
    """redis-py's full-API cluster client (``ctx.redis`` on a cluster), same timeouts."""
    timeout = timeout_ms / 1000.0
    return RedisCluster.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=max_connections,
        retry=Retry(NoBackoff(), 0),  # a retry would spend the budget twice
        require_full_coverage=False,  # during a failover the other slots still serve
        decode_responses=False,
    )


async def connect_store(url: str, config: RedisConfig, embeddings: Embeddings) -> EmbeddingStore:
    """The embedding store on one node (RedisLink) or on a cluster (ClusterLink)."""
    client = connect(url, config.timeout_ms, config.max_connections)
    if config.cluster is False:
        return EmbeddingStore(client, embeddings)
    link = ClusterLink(client.connection_pool, config.max_connections)
    reached = await link.start()
    if link.single:
        if config.cluster:
            log.warning("redis.cluster is true but %s has no cluster support: one node", url)
        await link.close()
        return EmbeddingStore(client, embeddings)  # today's path, no cluster layer
    if not reached and config.cluster is None:
        log.warning(
            "Redis at %s did not answer at start: cluster or not is decided on first "
            "contact; plugins' ctx.redis is a one-node client until a restart "
            "(set redis.cluster to skip the question)",
            url,
        )
        return EmbeddingStore(client, embeddings, link)
    log.info("Redis cluster at %s: %s", url, link.describe())
    await client.aclose()
    full = cluster_client(url, config.timeout_ms, config.max_connections)
    return EmbeddingStore(full, embeddings, link)  # type: ignore[arg-type]


def sync_client(url: str, cluster: bool | None, timeout_s: float) -> redis.Redis:
    """A blocking client for the command line and threads: RedisCluster when ``cluster``
    says so, or when it is None and the server reports cluster support. A server that
    cannot be reached raises redis.ConnectionError."""
    kwargs = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if cluster is None:
        probe = redis.Redis.from_url(url, **kwargs)  # type: ignore[arg-type]
        try:
            cluster = bool(probe.info("cluster").get("cluster_enabled"))
        finally:
            probe.close()
    if cluster:
        try:
            return SyncRedisCluster.from_url(url, **kwargs)  # type: ignore[arg-type,return-value]
        except RedisClusterException as exc:  # no node answered: an error like any other
            raise redis.ConnectionError(str(exc)) from None
    return redis.Redis.from_url(url, **kwargs)  # type: ignore[arg-type]
