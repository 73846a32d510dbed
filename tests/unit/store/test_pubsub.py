"""A subscription that survives one node (proxy/store/pubsub.py), on real servers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from proxy.store.pubsub import subscription
from tests.support.clusters import ValkeyCluster, free_port


async def next_message(pubsub: Any, limit_s: float = 2.0) -> bytes:
    """The next published message (get_message returns None for the subscribe reply)."""
    async with asyncio.timeout(limit_s):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=limit_s)
            if message is not None:
                return bytes(message["data"])


async def test_messages_arrive(redis_url: str, redis_db: redis.Redis) -> None:
    async with subscription(redis_url, "chan") as pubsub:
        assert redis_db.publish("chan", "1 abc") == 1
        assert await next_message(pubsub) == b"1 abc"


async def test_another_cluster_node_when_the_configured_one_is_down(
    cluster: ValkeyCluster,
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}"
    others = [("127.0.0.1", n.port) for n in cluster.nodes]
    async with subscription(dead, "chan", others) as pubsub:
        # Published on another node than the one subscribed to: the cluster passes it on.
        with cluster.nodes[-1].client() as client:
            client.publish("chan", "2 def")
        assert await next_message(pubsub) == b"2 def"


async def test_no_node_answers() -> None:
    with pytest.raises(redis.ConnectionError):
        async with subscription(f"redis://127.0.0.1:{free_port()}", "chan"):
            pass
