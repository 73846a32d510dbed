"""Shadow scoring: a model that scores the same inputs after the response is sent, to
see how its order would have differed from the one served, on live traffic.

A route (or an arm) names it: ``shadow: {model: NAME, sample: 0.1, top: 20}``. For that
share of re-ranked requests, once the response is on its way, the shadow model scores
the same user and item vectors; how the two orders agree (Kendall tau, top-10 overlap)
goes to metrics, and the shadow's top items to the exposure record (so the report can
replay clicks against it). It never delays or fails a response: it runs after the
response, is skipped (and counted) when the event loop is behind or the route's budget
is spent, and any error is counted, never raised.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from proxy.config.routes import Shadow
from proxy.feed.state import FeedRequest

log = logging.getLogger("rankgate.shadow")

# Behind by more than this (a callback scheduled now runs this late): skip the shadow,
# the loop has real requests to serve.
MAX_LAG_S = 0.005
# Agreement is measured over the first this many served items (an O(n^2) comparison).
COMPARE_MAX = 200
OVERLAP_K = 10
TAU_BUCKETS = (-0.5, 0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
OVERLAP_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
RESULTS = ("run", "skipped-lag", "skipped-budget", "error")


@dataclass
class ShadowStats:
    """What the shadows did, per (route, model): read by metrics at scrape time."""

    results: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # (route, model) -> counts per bucket (+Inf last), then the sum
    tau: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    overlap: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def count(self, route: str, model: str, result: str) -> None:
        key = (route, model, result)
        self.results[key] = self.results.get(key, 0) + 1

    def observe(self, route: str, model: str, tau: float | None, overlap: float | None) -> None:
        for table, value, bounds in (
            (self.tau, tau, TAU_BUCKETS),
            (self.overlap, overlap, OVERLAP_BUCKETS),
        ):
            if value is None:
                continue
            counts = table.setdefault((route, model), [0.0] * (len(bounds) + 2))
            counts[next((k for k, b in enumerate(bounds) if value <= b), len(bounds))] += 1
            counts[-1] += value


@functools.lru_cache(maxsize=8)
def _pairs(n: int) -> np.ndarray:
    """The pairs i < j of n items, as a mask (read-only: it is shared)."""
    mask = np.triu(np.ones((n, n), dtype=bool), 1)
    mask.flags.writeable = False
    return mask


def kendall_tau(ranks: np.ndarray) -> float | None:
    """Kendall's tau between 0..n-1 and ``ranks`` (each item's place in the other
    order, all distinct), vectorized: the pairs in the same order minus those reversed,
    over all. Boolean comparisons on a cached mask: 7 us for 100 items, 17 with signs."""
    n = ranks.size
    if n < 2:
        return None
    pairs = n * (n - 1) / 2
    same = np.count_nonzero((ranks[:, None] < ranks[None, :]) & _pairs(n))
    return (2 * same - pairs) / pairs


def agreement(served_ids: list[str], shadow_ids: list[str]) -> tuple[float | None, float | None]:
    """Kendall tau over the first COMPARE_MAX served items, and the top-10 overlap."""
    head = served_ids[:COMPARE_MAX]
    place = {item: k for k, item in enumerate(shadow_ids)}
    ranks = np.fromiter((place[i] for i in head if i in place), dtype=np.int64)
    size = min(OVERLAP_K, len(served_ids), len(shadow_ids))
    overlap = (
        len(set(served_ids[:OVERLAP_K]) & set(shadow_ids[:OVERLAP_K])) / size if size else None
    )
    return kendall_tau(ranks), overlap


class ShadowRunner:
    def __init__(self, stats: ShadowStats, thread_min_items: int) -> None:
        self.stats = stats
        self.thread_min_items = thread_min_items
        self.random = random.random
        self._tasks: set[asyncio.Task[None]] = set()

    def wanted(self, st: FeedRequest) -> Shadow | None:
        """The shadow to run for this request, if any: re-ranked, sampled, loaded."""
        shadow = st.arm.shadow if st.arm is not None else None
        if shadow is None or not st.served or shadow.model not in st.snapshot.models:
            return None
        return shadow if self.random() < shadow.sample else None

    def start(self, st: FeedRequest, shadow: Shadow, then: Callable[[], None]) -> None:
        """After the response: score, compare, then ``then()`` (the record)."""
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._run(st, shadow, loop.time(), then))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self, st: FeedRequest, shadow: Shadow, scheduled: float, then: Callable[[], None]
    ) -> None:
        route, name = st.route.name, shadow.model
        loop = asyncio.get_running_loop()
        try:
            if loop.time() - scheduled > MAX_LAG_S:
                self.stats.count(route, name, "skipped-lag")
            elif loop.time() > st.deadline:
                self.stats.count(route, name, "skipped-budget")
            else:
                await self._score(st, shadow)
                self.stats.count(route, name, "run")
        except Exception as exc:
            self.stats.count(route, name, "error")
            log.warning("shadow %s on route %s failed: %s", name, route, exc)
        finally:
            then()

    async def _score(self, st: FeedRequest, shadow: Shadow) -> None:
        model = st.snapshot.models[shadow.model]
        if st.positions.size >= self.thread_min_items:
            scores = await asyncio.to_thread(model.score, st.user, st.vectors)
        else:
            scores = model.score(st.user, st.vectors)
        if not np.isfinite(scores).all():
            raise ValueError("non-finite scores")
        ids = st.ids
        shadow_ids = [ids[i] for i in st.positions[np.argsort(-scores, kind="stable")].tolist()]
        scored = set(st.positions.tolist())
        served_ids, offset = [], 0
        for arr, order in zip(st.arrays, st.served, strict=True):
            served_ids += [ids[i + offset] for i in order.tolist() if i + offset in scored]
            offset += len(arr.items)
        tau, overlap = agreement(served_ids, shadow_ids)  # type: ignore[arg-type]
        self.stats.observe(st.route.name, shadow.model, tau, overlap)
        st.shadow = {"model": shadow.model, "items": shadow_ids[: shadow.top]}
