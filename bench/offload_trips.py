"""What one offloaded 10,000-item feed costs the serving process: its two trips to a re-rank
process and the ids taken in as the item cache's lookup takes them, in a warm loop, no
network, no vectors, no model.

    python bench/offload_trips.py [--items 10000] [--feeds 100] [--rounds 3]

Prints, per feed, the CPU of the event loop's thread (``time.thread_time``) and of every
thread of this process (``time.process_time``: the executor's threads pickle the calls and
read the results while holding the interpreter the loop waits for), and the wall time. The
re-rank process's own CPU is not counted. Steadier than a p99 on a shared VM: what it
counts is the serving process's work, not its waits. ``PYTHONPATH`` chooses the tree
(the pool of 2026-12-07 before the shared memory, with its two calls, is measured too).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

import numpy as np
from origin import feed_body

from proxy.feed import offload
from proxy.feed.offload import Offload
from proxy.routing.reads import build

PLAN = build(("items",), ("id",), ())
CACHED: dict[tuple[str | None, ...], int] = {}  # the list cache: the page's key, once


def take(found: Any) -> int:
    """The loop's work on the ids before the vectors, as proxy/feed/rerank.py does it."""
    if isinstance(found, tuple):  # the ids and their kept tuple
        ids, key = found
        every = key is not None or None not in ids
    else:  # a fresh list of ids
        ids, key = found, None
        every = ids.count(None) != len(ids) and None not in ids
    key = tuple(ids) if key is None else key
    if not CACHED:
        CACHED[tuple(list(key))] = 1  # another request's tuple, as in the item cache
    return CACHED.get(key, 0) + every


async def one(pool: Offload, raw: bytes, order: np.ndarray, deadline: float) -> int:
    if hasattr(pool, "open"):  # both trips to one process, the body kept there
        ticket = pool.open()
        try:
            take(await pool.find(ticket, deadline, raw, PLAN))
            return len(await pool.join(ticket, deadline, order))
        finally:
            ticket.close()
    old: Any = pool  # before: two calls, the body sent with each
    take(await old.call(deadline, offload.find_ids, raw, PLAN.path, PLAN.id_path))
    out = await old.call(deadline, offload.join, raw, PLAN.path, PLAN.id_path, order)
    return len(out)


async def main(args: argparse.Namespace) -> None:
    raw = feed_body(args.items)
    order = np.arange(args.items)[::-1].copy()
    pool = Offload(1, 1)
    pool.takes(raw, PLAN, 0, False)  # starts it
    for _ in range(600):  # until the process answers
        if pool.takes(raw, PLAN, 0, False):
            break
        await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    for _ in range(10):
        await one(pool, raw, order, loop.time() + 10)
    for k in range(args.rounds):
        n = args.feeds
        thread, proc, wall = time.thread_time(), time.process_time(), time.perf_counter()
        for _ in range(n):
            await one(pool, raw, order, loop.time() + 10)
        thread = (time.thread_time() - thread) / n * 1e3
        proc = (time.process_time() - proc) / n * 1e3
        wall = (time.perf_counter() - wall) / n * 1e3
        print(
            f"round {k}: loop thread {thread:.3f} ms/feed, all threads {proc:.3f} ms/feed, "
            f"wall {wall:.2f} ms/feed (load {os.getloadavg()[0]:.1f})"
        )
    pool.close()


if __name__ == "__main__":  # guarded: the re-rank processes are spawned, and import this
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--feeds", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
