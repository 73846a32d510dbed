"""Each stage of the feed path in a warm loop, no network: the steady measure of CPU work.

    python bench/micro.py [--items 100] [--loops 3000] [--model models/ranker_v1.onnx]

Latency at concurrency 1 moves by more than 100 us between runs on a shared VM; the CPU
a stage costs does not. This builds the feed request the way the server does (a parsed
aiohttp request, the route and snapshot from a routes file, item vectors already in the
in-process cache, the user's vector already fetched) and runs the stages after the
origin's body is in, timing each one, then prints the median of each per request.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import common
import numpy as np
import redis.asyncio as aioredis
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict, CIMultiDictProxy
from origin import feed_body

from proxy.config.settings import Embeddings
from proxy.feed import rerank, respond, stages
from proxy.feed.state import FeedServices
from proxy.outcome.record import RequestRecord
from proxy.routing.snapshot import build_snapshot
from proxy.store.embeddings import EmbeddingStore

STAGES = ("context", "before_origin", "decode", "find_items", "user_vector", "item_vectors")
STAGES += ("score", "arrange", "encode", "respond")


def snapshot(model: Path, tmp: Path) -> Any:
    routes = tmp / "routes.yaml"
    routes.write_text(
        textwrap.dedent(
            f"""\
            models: {{ranker: {{path: {model}}}}}
            routes:
              - {{name: feed, match: {{path: /api/feed}}, model: ranker}}
            """
        )
    )
    return build_snapshot(routes, common.DIM, 1, None)


def services(items: int) -> FeedServices:
    # The client is never used: every vector is in the cache, the user's is given.
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0")
    store = EmbeddingStore(client, Embeddings(dim=common.DIM))
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((items, common.DIM)).astype("<f4")
    store.cache.put_many([(f"i{k}", vectors[k].tobytes()) for k in range(items)])
    store.lookup([f"i{k}" for k in range(items)])  # assembles and caches the whole list
    return FeedServices(SimpleNamespace(), store, 8 << 20, 2048)  # type: ignore[arg-type]


async def one(svc: FeedServices, snap: Any, body: bytes, user: np.ndarray) -> dict[str, float]:
    times: dict[str, float] = {}
    # Parsed as the server parses it; not timed (the stand-in transport is slow to make).
    request = make_mocked_request("GET", "/api/feed", headers={"X-User-Id": "u1"})
    t = time.perf_counter()
    record = RequestRecord("GET", "/api/feed")
    route = snap.match("GET", "/api/feed")
    ctx = stages._context(svc, request, route, record)
    st = stages.FeedRequest(svc, request, route, snap, record, ctx)
    times["context"] = time.perf_counter() - t
    t = time.perf_counter()
    stages.resolve_user(st)
    stages.choose_arm(st)
    stages.check_request(st, None)
    done: asyncio.Future[np.ndarray | None] = asyncio.get_running_loop().create_future()
    done.set_result(user)
    st.user_task = done  # type: ignore[assignment]
    times["before_origin"] = time.perf_counter() - t
    st.body, st.encoding = body, ""
    st.deadline = asyncio.get_running_loop().time() + 1.0
    for name, step in (("decode", rerank.decode), ("find_items", rerank.find_items)):
        t = time.perf_counter()
        step(st)
        times[name] = time.perf_counter() - t
    for name, coro in (("user_vector", rerank.user_vector), ("item_vectors", rerank.item_vectors)):
        t = time.perf_counter()
        await coro(st)
        times[name] = time.perf_counter() - t
    t = time.perf_counter()
    await rerank.score(st)
    times["score"] = time.perf_counter() - t
    for name, step in (("arrange", rerank.arrange), ("encode", rerank.encode)):
        t = time.perf_counter()
        step(st)
        times[name] = time.perf_counter() - t
    upstream = SimpleNamespace(
        status=200,
        reason="OK",
        headers=CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"})),
    )
    t = time.perf_counter()
    respond.applied(record, upstream, route.vary, st.out)  # type: ignore[arg-type]
    times["respond"] = time.perf_counter() - t
    return times


async def measure(args: argparse.Namespace, snap: Any) -> dict[str, float]:
    svc = services(args.items)
    body = feed_body(args.items)
    user = np.random.default_rng(2).standard_normal(common.DIM).astype("<f4")
    samples: dict[str, list[float]] = {s: [] for s in STAGES}
    for k in range(args.warmup + args.loops):
        times = await one(svc, snap, body, user)
        if k >= args.warmup:
            for stage, seconds in times.items():
                samples[stage].append(seconds)
    return {s: statistics.median(v) * 1e6 for s, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--loops", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--model", default=str(common.ROOT / "models" / "ranker_v1.onnx"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        snap = snapshot(Path(args.model).resolve(), Path(tmp))
        medians = asyncio.run(measure(args, snap))
    width = max(map(len, STAGES))
    print(f"feed path stages, {args.items} items, median of {args.loops} warm runs (us)")
    for stage in STAGES:
        print(f"  {stage:<{width}}  {medians[stage]:8.1f}")
    print(f"  {'sum':<{width}}  {sum(medians.values()):8.1f}")


if __name__ == "__main__":
    main()
