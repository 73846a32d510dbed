"""A primary of a real six-node Valkey cluster (three primaries, one replica each) is
SIGKILLed under rankgate: requests fail open with a reason, and once the cluster has
promoted the replica rankgate re-ranks again, with no restart and the same order."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from proxy.config.keys import KeyTemplate
from proxy.serve.server import ProxyServer
from tests.e2e.test_cluster_e2e import ITEM_KEY, ITEMS, N_ITEMS, USERS, seed, served
from tests.e2e.test_cluster_e2e import write_cluster_config as write_config
from tests.support.clusters import ValkeyCluster
from tests.support.common import dot_order, feed_origin, running_proxy, start_app, wait_until

APPLIED = "applied; model=dot; arm=default"


@pytest.fixture
def six() -> Iterator[ValkeyCluster]:
    # Reads of the live nodes' slots go on while a primary is down (the default stops
    # the whole cluster until the failover): the partial case below needs it.
    cluster = ValkeyCluster(primaries=3, replicas=1, node_timeout_ms=500)
    cluster.extra_config = {"cluster-allow-reads-when-down": "yes"}
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def proxy(tmp_path: Path, six: ValkeyCluster) -> AsyncIterator[ProxyServer]:
    runner, origin = await start_app(feed_origin(N_ITEMS))
    with six.client() as client:
        seed(client)
    for node in six.nodes[: six.primaries]:  # every write has reached the replica
        with node.client() as client:
            assert client.execute_command("WAIT", 1, 5000) == 1
    try:
        async with running_proxy(write_config(tmp_path, origin, six.url)) as server:
            yield server
    finally:
        await runner.cleanup()


async def test_primary_sigkill_fails_open_then_recovers(
    six: ValkeyCluster, proxy: ProxyServer
) -> None:
    victim = six.primary_for(f"emb:user:{next(iter(USERS))}")
    hit = next(u for u in USERS if six.primary_for(f"emb:user:{u}") is victim)
    spared = next(u for u in USERS if six.primary_for(f"emb:user:{u}") is not victim)
    template = KeyTemplate(ITEM_KEY, 16)
    lost_items = {i for i in ITEMS if six.primary_for(template.key(i)) is victim}
    assert lost_items and len(lost_items) < N_ITEMS
    for user in (hit, spared):
        assert await served(proxy, "/api/feed", user) == (
            APPLIED,
            dot_order(USERS[user], ITEMS),
        )

    six.kill(victim)
    killed = time.monotonic()
    # The user on the dead primary: fails open with the reason, origin order.
    header, ids = await served(proxy, "/api/feed", hit)
    assert header == "skipped; reason=redis-unavailable"
    assert ids == list(ITEMS)
    # A user on a live primary: still ranked; the dead node's items keep their slots.
    header, ids = await served(proxy, "/api/feed", spared)
    assert header.startswith("applied")
    origin = list(ITEMS)
    assert [i for i in ids if i in lost_items] == [i for i in origin if i in lost_items]
    assert all(ids[origin.index(i)] == i for i in lost_items)

    async def recovered() -> bool:
        results = [await served(proxy, "/api/feed", u) for u in (hit, spared)]
        return results == [(APPLIED, dot_order(USERS[u], ITEMS)) for u in (hit, spared)]

    await wait_until(recovered, limit_s=20, every_s=0.05)
    print(f"re-ranking again {time.monotonic() - killed:.2f}s after the SIGKILL")
    link = proxy.runtime.embeddings.link
    assert victim.port not in {n.port for n in link.primaries}  # type: ignore[attr-defined]
