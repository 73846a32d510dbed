"""The Redis part of a re-rank alone: a user vector's GET through the hot-path link, the
held-connection way (``RedisLink.command``: acquire, redis-py's pack, send + drain,
read_response) against the auto-pipelined way (``RedisLink.get``), in one process on
uvloop, in turns.

    python bench/redis_link.py [--rounds 5] [--batches 2000] [--concurrency 1 16]

At concurrency C, C GETs are issued together (as C concurrent re-ranks would) and
awaited; CPU is this process's (user + system, ``time.process_time``) per GET, so
Valkey's own time is not counted; wall is per GET. Medians over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from typing import Any

import common
import redis.asyncio as aioredis
import uvloop

from proxy.store.link import RedisLink


async def measure(
    call: Callable[[bytes], Awaitable[Any]], keys: list[bytes], conc: int, batches: int
) -> tuple[float, float]:
    """(CPU µs, wall µs) per GET over ``batches`` rounds of ``conc`` GETs at once."""
    n = len(keys)
    cpu, wall = time.process_time(), time.perf_counter()
    for b in range(batches):
        replies = await asyncio.gather(*(call(keys[(b * conc + j) % n]) for j in range(conc)))
        assert all(isinstance(r, bytes) for r in replies)
    count = batches * conc
    return (
        (time.process_time() - cpu) / count * 1e6,
        (time.perf_counter() - wall) / count * 1e6,
    )


async def run(url: str, args: argparse.Namespace) -> None:
    # A deadline as redis.timeout_ms gives (its length costs nothing; 1 s survives a busy VM).
    pool = aioredis.ConnectionPool.from_url(url, socket_timeout=1.0)
    link = RedisLink(pool, 64)
    keys = [f"emb:user:u{k}".encode() for k in range(common.USERS)]
    ways: dict[str, Callable[[bytes], Awaitable[Any]]] = {
        "held connection (command)": lambda key: link.command("GET", key),
        "auto-pipelined (get)": link.get,
    }
    for conc in args.concurrency:
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
        for way in ways.values():  # warm: connections open, code paths run
            await measure(way, keys, conc, 50)
        for r in range(args.rounds):
            for name in list(ways) if r % 2 == 0 else list(reversed(ways)):
                results[name].append(await measure(ways[name], keys, conc, args.batches))
        for name, got in results.items():
            cpu = statistics.median(c for c, _ in got)
            wall = statistics.median(w for _, w in got)
            print(f"c{conc:<3} {name:28} cpu/GET {cpu:7.1f}us   wall/GET {wall:7.1f}us")
    await link.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    with ExitStack() as stack:
        url = common.seeded_redis(stack, 0)
        uvloop.run(run(url, args))


if __name__ == "__main__":
    main()
