"""ClusterLink against a real three-node Valkey cluster: routing, per-node pipelines,
MOVED and ASK during a real slot migration, cancellation, and a non-cluster server."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis
from redis.crc import key_slot

from proxy.config.keys import KeyTemplate
from proxy.store.cluster import ClusterLink
from proxy.store.link import UNAVAILABLE
from tests.support.clusters import ClusterNode, ValkeyCluster

BUCKETED = KeyTemplate("emb:item:{b{bucket}}:{id}", 16)
PLAIN = KeyTemplate("emb:item:{id}")


def pool(url: str) -> aioredis.ConnectionPool:
    return aioredis.ConnectionPool.from_url(url, socket_timeout=2, socket_connect_timeout=2)


@pytest.fixture
async def link(cluster: ValkeyCluster) -> AsyncIterator[ClusterLink]:
    link = ClusterLink(pool(cluster.url), 8)
    assert await link.start()
    try:
        yield link
    finally:
        await link.close()


def seed_items(cluster: ValkeyCluster, template: KeyTemplate, n: int) -> dict[bytes, bytes]:
    values = {template.key(f"m{k}").encode(): f"v{k}".encode() for k in range(n)}
    # Right after another test moved a slot back, a busy machine's nodes may still redirect
    # a fresh client in a loop for a moment (redis-py: "TTL exhausted"): the seeding waits.
    for attempt in range(10):
        try:
            with cluster.client() as client:
                pipe = client.pipeline()
                for key, value in values.items():
                    pipe.set(key, value)
                pipe.execute()
            return values
        except redis.exceptions.ClusterError:
            if attempt == 9:
                raise
            time.sleep(0.3)
    return values


async def test_slot_map_has_every_primary(link: ClusterLink, cluster: ValkeyCluster) -> None:
    assert link.map.mapped and not link.single
    assert sorted(n.port for n in link.primaries) == sorted(n.port for n in cluster.nodes)
    assert link.describe()["mode"] == "cluster"


@pytest.mark.parametrize("template", [BUCKETED, PLAIN], ids=["bucketed", "plain"])
async def test_mget_in_order_across_nodes(
    link: ClusterLink, cluster: ValkeyCluster, template: KeyTemplate
) -> None:
    values = seed_items(cluster, template, 300)
    ids = [f"m{k}" for k in random.Random(1).sample(range(400), 150)]
    keys, slots = template.encoded(ids)
    nodes = {cluster.primary_for(k.decode()).port for k in keys}
    assert len(nodes) == 3  # the batch really spans the cluster
    for given in (slots, None):  # slots from the template, or computed by the link
        got = await link.mget(keys, given)
        assert got == [values.get(k) for k in keys]  # absent ids (m300+) are None


async def test_command_goes_to_the_keys_node(link: ClusterLink, cluster: ValkeyCluster) -> None:
    for k in range(30):  # keys on every node
        assert await link.command("SET", f"user:{k}", f"x{k}") == b"OK"
    for k in range(30):
        assert await link.command("GET", f"user:{k}") == f"x{k}".encode()
    assert await link.command("SADD", b"seen:u1", "a", "b") == 2
    assert await link.command("SMISMEMBER", "seen:u1", "a", "z", "b") == [1, 0, 1]
    assert await link.command("PING") == b"PONG"  # no key: any node
    with pytest.raises(redis.ResponseError, match="same slot"):  # CROSSSLOT
        await link.command("MGET", "user:1", "user:2")  # as the cluster says


async def test_cancelled_batches_leave_no_stale_replies(
    link: ClusterLink, cluster: ValkeyCluster
) -> None:
    """A budget that runs out mid-batch must not leave replies on a connection that a
    later lookup would read as its own."""
    values = seed_items(cluster, BUCKETED, 400)
    rng = random.Random(2)
    cancelled = 0
    for round_ in range(200):
        ids = [f"m{k}" for k in rng.sample(range(400), 50)]
        keys, slots = BUCKETED.encoded(ids)
        expected = [values[k] for k in keys]
        if round_ % 2:
            # Cancelled after a few turns of the loop: before, between or during reads.
            task = asyncio.ensure_future(link.mget(keys, slots))
            for _ in range(rng.randrange(0, 10)):
                await asyncio.sleep(0)
            task.cancel()
            try:
                got = await task
            except asyncio.CancelledError:
                cancelled += 1
                continue
        else:
            got = await link.mget(keys, slots)
        assert got == expected
    assert cancelled >= 10  # the cancellations this test is about did happen


async def test_batch_cancelled_while_nodes_are_slow(
    link: ClusterLink, cluster: ValkeyCluster
) -> None:
    """Every node paused, the lookup cancelled while it waits: the replies that arrive
    afterwards are on closed connections, not read by the next lookup as its own."""
    values = seed_items(cluster, BUCKETED, 200)
    first, _ = BUCKETED.encoded([f"m{k}" for k in range(0, 100)])
    second, slots = BUCKETED.encoded([f"m{k}" for k in range(100, 200)])
    assert await link.mget(first, None) == [values[k] for k in first]  # connections made
    for node in cluster.nodes:
        with node.client() as client:
            client.execute_command("CLIENT", "PAUSE", 150, "ALL")
    task = asyncio.ensure_future(link.mget(first, None))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)  # the pause is over: the abandoned replies were sent
    assert await link.mget(second, slots) == [values[k] for k in second]


def migrate_slot(cluster: ValkeyCluster, slot: int, src: ClusterNode, dst: ClusterNode) -> None:
    """Steps 1-3 of a real resharding: IMPORTING/MIGRATING, then MIGRATE every key."""
    with src.client() as a, dst.client() as b:
        b.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src.node_id)
        a.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst.node_id)
        while keys := a.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            a.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys)


def assign_slot(cluster: ValkeyCluster, slot: int, dst: ClusterNode) -> None:
    """Step 4: the slot belongs to ``dst`` (told to every node, the new owner first)."""
    for node in sorted(cluster.nodes, key=lambda n: n is not dst):
        with node.client() as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst.node_id)
    deadline = time.monotonic() + 15  # gossip: slow on a busy machine
    while cluster.owners(slot) != {dst.port}:  # every node agrees before going on
        assert time.monotonic() < deadline, "the nodes did not agree on the slot's owner"
        time.sleep(0.02)


@pytest.fixture
def moving_slot(cluster: ValkeyCluster) -> Iterator[tuple[int, ClusterNode, ClusterNode]]:
    """Bucket 0's slot, its owner and another node; afterwards the slot is its owner's
    again (keys flushed first: a node gives up a slot only when it holds no keys)."""
    slot = BUCKETED.slots[0]
    src = cluster.primary_for("{b0}")  # the key "{b0}" hashes as bucket 0's keys do
    dst = next(n for n in cluster.nodes if n is not src)
    try:
        yield slot, src, dst
    finally:
        cluster.flush()
        assign_slot(cluster, slot, src)  # also ends any MIGRATING/IMPORTING state


async def test_ask_then_moved_during_a_resharding(
    link: ClusterLink,
    cluster: ValkeyCluster,
    moving_slot: tuple[int, ClusterNode, ClusterNode],
) -> None:
    slot, src, dst = moving_slot
    values = seed_items(cluster, BUCKETED, 200)
    keys, slots = BUCKETED.encoded([f"m{k}" for k in range(200)])
    in_slot = [k for k, s in zip(keys, slots, strict=True) if s == slot]
    assert in_slot and key_slot(in_slot[0]) == slot
    assert link.map.owner(slot).port == src.port

    migrate_slot(cluster, slot, src, dst)  # the keys are on dst, the slot still src's
    assert await link.mget(keys, slots) == [values[k] for k in keys]  # via ASK
    assert await link.command("GET", in_slot[0]) == values[in_slot[0]]
    assert link.map.owner(slot).port == src.port  # ASK: no remap

    assign_slot(cluster, slot, dst)  # now src answers MOVED
    assert await link.command("GET", in_slot[0]) == values[in_slot[0]]
    assert link.map.owner(slot).port == dst.port
    assert await link.mget(keys, slots) == [values[k] for k in keys]


async def test_stale_map_after_resharding_is_corrected_by_moved(
    cluster: ValkeyCluster, moving_slot: tuple[int, ClusterNode, ClusterNode]
) -> None:
    slot, src, dst = moving_slot
    values = seed_items(cluster, BUCKETED, 200)
    keys, slots = BUCKETED.encoded([f"m{k}" for k in range(200)])
    link = ClusterLink(pool(cluster.url), 4)
    try:
        await link.start()
        migrate_slot(cluster, slot, src, dst)
        assign_slot(cluster, slot, dst)
        assert await link.mget(keys, slots) == [values[k] for k in keys]  # MOVED, resent
        await asyncio.sleep(0.3)  # the refresh MOVED scheduled has run
        assert link.map.owner(slot).port == dst.port
        assert link.map.refreshes >= 2
    finally:
        await link.close()


async def test_a_plain_server_is_one_node(redis_url: str, redis_db: redis.Redis) -> None:
    redis_db.mset({"a": b"1", "{x}b": b"2"})
    link = ClusterLink(pool(redis_url), 4)
    try:
        assert await link.start()
        assert link.single and link.describe()["mode"] == "single"
        # One MGET across "slots": a single server has none.
        assert await link.mget([b"a", b"{x}b", b"zz"], None) == [b"1", b"2", None]
        assert await link.command("GET", "a") == b"1"
    finally:
        await link.close()


async def test_nothing_listening_raises_not_unavailable(cluster: ValkeyCluster) -> None:
    """Every key failed: an error the store names, not a list of UNAVAILABLE."""
    from tests.support.clusters import free_port

    link = ClusterLink(pool(f"redis://127.0.0.1:{free_port()}"), 2)
    try:
        assert not await link.start()
        with pytest.raises(redis.ConnectionError):
            await link.mget([b"a"], None)
        with pytest.raises(redis.ConnectionError):
            await link.command("GET", "a")
    finally:
        await link.close()
    assert UNAVAILABLE is not None
