"""The slot map (proxy/store/slots.py) against a real three-node cluster and a plain server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import MovedError

from proxy.store.slots import NODE_RETRY_S, SlotMap
from tests.support.clusters import ValkeyCluster, free_port


def pool(url: str) -> aioredis.ConnectionPool:
    return aioredis.ConnectionPool.from_url(url, socket_timeout=2, socket_connect_timeout=2)


@pytest.fixture
async def slots(cluster: ValkeyCluster) -> AsyncIterator[SlotMap]:
    smap = SlotMap(pool(cluster.url), 4)
    await smap.refresh()
    try:
        yield smap
    finally:
        await smap.close()


async def test_owners_are_the_clusters(slots: SlotMap, cluster: ValkeyCluster) -> None:
    assert slots.mapped and not slots.single and slots.refreshes == 1
    for key in ("a", "emb:user:u7", "{b3}x", "emb:item:{b12}:m9"):
        slot = slots.slot(key.encode())
        assert slot == key_slot(key.encode())
        assert slots.owner(slot).port == cluster.primary_for(key).port
    assert slots.timeout == 2 and slots.seed.link.pool.connection_kwargs["socket_timeout"] is None


async def test_hash_tag_slots_are_remembered(slots: SlotMap) -> None:
    for k in range(20):
        assert slots.slot(f"x:{{tag{k % 4}}}:{k}".encode()) == key_slot(f"tag{k % 4}".encode())
    assert len(slots._tags) == 4


async def test_a_failed_node_fails_fast_then_is_tried_again(slots: SlotMap) -> None:
    node = slots.primaries[0]
    node.check()  # healthy: nothing raised
    slots.failed(node, redis.ConnectionError("connection refused"))
    with pytest.raises(redis.ConnectionError, match=r"failed 0\.5s ago: connection refused"):
        node.check()
    assert slots.any() is not node  # a keyless command goes elsewhere meanwhile
    await asyncio.sleep(NODE_RETRY_S + 0.05)
    node.check()
    assert slots.refreshes >= 2  # the failure re-read the map


async def test_moved_remaps_one_slot_at_once(slots: SlotMap) -> None:
    slot = 1234
    owner = slots.owner(slot)
    other = next(n for n in slots.primaries if n is not owner)
    target = slots.redirected(MovedError(f"{slot} {other.host}:{other.port}"))
    assert target is other and slots.owner(slot) is other
    await asyncio.sleep(0.3)  # the refresh the MOVED asked for puts the truth back
    assert slots.owner(slot) is owner


async def test_a_plain_server_is_single(redis_url: str) -> None:
    smap = SlotMap(pool(redis_url), 2)
    try:
        await smap.refresh()
        assert smap.single and smap.mapped
    finally:
        await smap.close()


async def test_nothing_answers() -> None:
    smap = SlotMap(pool(f"redis://127.0.0.1:{free_port()}"), 2)
    try:
        with pytest.raises(redis.ConnectionError, match="no cluster node answered"):
            await smap.refresh()
        assert not smap.mapped
        assert smap.owner(0) is smap.seed  # until a map is read, the seed is asked
        await smap.first_contact()  # within REFRESH_INTERVAL_S of the last try: no I/O
        assert smap.refreshes == 1
    finally:
        await smap.close()
