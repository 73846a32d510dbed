"""Guardrails that act: an experiment arm that is surely worse than its limits (its own
failures, its added latency, its CTR; proxy/experiments/guardtest.py) is taken off the
air, and its users are served by the route's default arm on every process within a
couple of seconds, until a person resumes it (``rankgate experiments resume ROUTE ARM``).

Per process, on the request path, only dictionary updates: ``observe`` (every feed
request's record: served, not re-ranked for the arm's own reasons, rankgate's own time),
``exposed`` (a response that carries a click token: its request id and user) and
``clicked`` (accepted click events). A background task, every FLUSH_S:

    flush   the deltas into the shared counts (proxy/experiments/guardstore.py)
    poll    the trips and test numbers of the fleet (a trip made elsewhere is seen here
            within one poll; after a restart, before the first request)
    check   every CHECK_S, each guarded arm against the default arm; a trip is written
            once for the fleet (HSETNX: the process that wins logs it and counts it)

A tripped arm stays tripped whatever the counts do next (no flapping) and whatever
``routes.yaml`` becomes; resuming it starts a new test (new counts) for that arm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from proxy.config.routes import DEFAULT_ARM, Route, arm_name
from proxy.experiments.guardstore import Batch, GuardStore, RedisGuardStore, field_of
from proxy.experiments.guardtest import ArmCounts, Check, bucket_of, check_arm
from proxy.experiments.weights import Bandits, bandit_arms
from proxy.feed.state import FeedRequest
from proxy.outcome.errors import Outcome, Reason
from proxy.outcome.record import RequestRecord
from proxy.routing.arms import Arm

log = logging.getLogger("rankgate.guardrails")

__all__ = [
    "CLICK_WINDOW_S",
    "OWN_REASONS",
    "Guard",
    "GuardCollector",
    "guarded_arms",
    "running_guard",
]

FLUSH_S = 0.5
CHECK_S = 1.0
CLICK_RETRIES = 10  # flushes a click waits for its exposure from another process
# How long a served list's clicks count for the live tests (each list is one short-lived
# key in Redis); the report counts every click within events.max_age_s.
CLICK_WINDOW_S = 600
MAX_PENDING = 100_000  # exposures or clicks held between two flushes, then dropped
# Not re-ranked for reasons of the arm's own making; the others (no user, Redis, the
# origin's body) hit every arm alike.
OWN_REASONS = frozenset(
    {Reason.MODEL_ERROR, Reason.BUDGET, Reason.PLUGIN_ERROR, Reason.INTERNAL_ERROR}
)
_SERVED = frozenset({Outcome.APPLIED, Outcome.SKIPPED})


def guarded_arms(route: Route) -> Iterator[tuple[str, Any]]:
    """(arm, its guardrails) for each experiment arm of the route that has some."""
    for j, exp in enumerate(route.experiments):
        cfg = exp.guardrails or route.guardrails
        # A bandit moves traffic off a weak model itself (down to its min_share).
        if cfg is not None and exp.bandit is None:
            yield arm_name(j, exp), cfg


class Guard:
    def __init__(
        self, store: GuardStore, routes: Callable[[], Iterable[Route]], ttl_s: int = 86400
    ) -> None:
        self.store = store
        self.routes = routes
        self.ttl_s = ttl_s
        self.trips: dict[str, dict[str, Any]] = {}
        self.epochs: dict[str, int] = {}
        self._moved: frozenset[tuple[str, str]] = frozenset()
        self.guarded: frozenset[str] = frozenset()  # routes with a guarded arm
        self.caps: dict[str, int] = {}  # route -> exposures a user counts with
        self.pending: dict[str, Batch] = {}
        self.retry: dict[str, dict[str, int]] = {}
        self.readings: dict[str, tuple[int, list[Check]]] = {}  # with the test's number
        self.trip_counts: dict[tuple[str, str, str], int] = {}
        self.dropped = 0
        self.errors = 0
        self._next_check = 0.0
        self.bandits = Bandits()  # counted here too: their models' exposures and clicks

    # -- the request path ----------------------------------------------------------------

    def moved(self, route: str, arm: str) -> bool:
        return (route, arm) in self._moved

    def pick(self, route: str, arm: Arm, user: str | None) -> Arm:
        """A bandit arm's model for this user in this period; any other arm as it is."""
        return self.bandits.pick(route, arm, user)

    def period(self, route: str, arm: str) -> dict[str, Any] | None:
        """A bandit arm's current period, models and weights (for its exposure records)."""
        return self.bandits.tag(route, arm)

    def _key(self, route: str, arm: str) -> str:
        return f"{arm}:{self.epochs.get(field_of(route, arm), 0)}"

    def _batch(self, route: str) -> Batch:
        batch = self.pending.get(route)
        if batch is None:
            batch = self.pending[route] = Batch()
        return batch

    def observe(self, record: RequestRecord) -> None:
        route, arm = record.route, record.arm
        if route not in self.guarded or arm is None or record.outcome not in _SERVED:
            return
        batch, key = self._batch(route), self._key(route, arm)
        batch.add(key, "requests")
        if record.reason in OWN_REASONS:
            batch.add(key, "own")
        t = record.timings
        ours_ms = (t.get("total", 0.0) - t.get("origin", 0.0)) * 1000.0
        batch.add(key, f"l{bucket_of(ours_ms)}")

    def exposed(self, st: FeedRequest) -> None:
        route, arm, user = st.route.name, st.ctx.arm, st.ctx.user_id
        if route not in self.guarded or arm is None or user is None or not st.ts_ms:
            return
        batch = self._batch(route)
        if len(batch.exposures) >= MAX_PENDING:
            self.dropped += 1
            return
        cap = self.caps.get(route, 50)
        batch.exposures.append((st.request_id, self._key(route, arm), user, cap))

    def clicked(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            route = record.get("route")
            if record.get("kind") != "click" or route not in self.guarded:
                continue
            batch = self._batch(route)
            if len(batch.clicks) >= MAX_PENDING:
                self.dropped += 1
                continue
            batch.clicks.append(record["id"])

    # -- the background task -------------------------------------------------------------

    async def flush(self) -> None:
        pending, self.pending = self.pending, {}
        for route in set(pending) | set(self.retry):
            batch = pending.get(route) or Batch()
            waiting = self.retry.pop(route, {})
            batch.clicks.extend(waiting)
            if not batch:
                continue
            unmatched = await self.store.add(route, batch, self.ttl_s)
            again = {i: waiting.get(i, 0) + 1 for i in unmatched}
            again = {i: n for i, n in again.items() if n < CLICK_RETRIES}
            if again:
                self.retry[route] = again

    async def poll(self) -> None:
        # What the routes say first: it holds even when Redis does not answer.
        caps = {
            r.name: max([cfg.max_exposures_per_unit for _, cfg in arms] or [50])
            for r in self.routes()
            if (arms := list(guarded_arms(r))) or any(bandit_arms(r))
        }
        self.guarded, self.caps = frozenset(caps), caps
        self.bandits.prepare(self.routes())
        trips, epochs = await self.store.state()
        self.trips, self.epochs = trips, epochs
        self._moved = frozenset(tuple(k.split(" ", 1)) for k in trips)  # type: ignore[misc]

    async def check(self, act: bool = True) -> None:
        """Read every guarded arm's guardrails; trip the failing ones (with ``act``)."""
        for route in self.routes():
            base: ArmCounts | None = None
            for arm, cfg in guarded_arms(route):
                key = field_of(route.name, arm)
                if key in self.trips:
                    continue
                if base is None:
                    default_key = self._key(route.name, DEFAULT_ARM)
                    base = ArmCounts.from_hash(await self.store.counts(route.name, default_key))
                mine = await self.store.counts(route.name, self._key(route.name, arm))
                checks = check_arm(cfg, ArmCounts.from_hash(mine), base)
                self.readings[key] = (self.epochs.get(key, 0), checks)
                failing = [c for c in checks if c.trips]
                if failing and act:
                    await self._trip(route.name, arm, failing[0], checks)

    async def _trip(self, route: str, arm: str, cause: Check, checks: list[Check]) -> None:
        key = field_of(route, arm)
        trips, epochs = await self.store.state()
        if key in trips or epochs.get(key, 0) != self.epochs.get(key, 0):
            await self.poll()  # tripped elsewhere, or resumed since this reading: not ours
            return
        info = {
            "route": route,
            "arm": arm,
            "guardrail": cause.guardrail,
            "figures": cause.figures,
            "checks": {c.guardrail: c.figures for c in checks},
            "at": round(time.time(), 3),
            "by_pid": os.getpid(),
            "epoch": self.epochs.get(field_of(route, arm), 0),
        }
        if await self.store.trip(route, arm, info):
            label = (route, arm, cause.guardrail)
            self.trip_counts[label] = self.trip_counts.get(label, 0) + 1
            log.warning(
                "guardrail tripped: route %s arm %s guardrail %s %s; its users go to the "
                "default arm until `rankgate experiments resume %s %s`",
                route,
                arm,
                cause.guardrail,
                " ".join(f"{k}={v}" for k, v in cause.figures.items()),
                route,
                arm,
            )
        await self.poll()

    def active(self) -> bool:
        """Whether any route has an experiment arm (else no arm can be moved, and the
        guard asks Redis nothing)."""
        return any(r.experiments for r in self.routes())

    async def tick(self) -> None:
        if not self.active():
            self.guarded = frozenset()
            return
        await self.flush()
        await self.poll()
        await self.bandits.update(self.store, self.routes())
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + CHECK_S
            await self.check()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                await self.tick()
            except (RedisError, OSError) as exc:
                # The trips known stay in force; counts of the failed flush are lost.
                self.errors += 1
                if self.errors == 1 or self.errors % 100 == 0:
                    log.warning("guardrails: Redis failed (%s); %d times", exc, self.errors)
            except Exception:  # a bad stored value must not end the loop for good
                self.errors += 1
                if self.errors == 1 or self.errors % 100 == 0:
                    log.exception("guardrails: the background task failed; %d times", self.errors)

    def describe(self) -> list[dict[str, Any]]:
        """Each guarded or tripped arm: its state, its test number, its last figures."""
        out: dict[str, dict[str, Any]] = {}
        for route in self.routes():
            for arm, _cfg in guarded_arms(route):
                key = field_of(route.name, arm)
                out[key] = {"route": route.name, "arm": arm, "state": "watching"}
        for key, trip in self.trips.items():
            route, arm = key.split(" ", 1)
            out[key] = {"route": route, "arm": arm, "state": "tripped", "trip": trip}
        for key, entry in out.items():
            entry["epoch"] = epoch = self.epochs.get(key, 0)
            read_in, checks = self.readings.get(key, (epoch, []))
            if read_in != epoch:  # read before a resume: not this test's
                checks = []
            entry["checks"] = [
                {"guardrail": c.guardrail, "trips": c.trips, **c.figures} for c in checks
            ]
        return list(out.values())


class GuardCollector(Collector):
    """``rankgate_guardrail_trips_total{route,arm,guardrail}``: counted by the process
    that recorded the trip, so a fleet's sum is the number of trips."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "rankgate_guardrail_trips",
            "Experiment arms taken off the air by a guardrail.",
            labels=["route", "arm", "guardrail"],
        )
        for labels, count in self.guard.trip_counts.items():
            family.add_metric(list(labels), count)
        yield family


@contextlib.asynccontextmanager
async def running_guard(
    redis_url: str, routes: Callable[[], Iterable[Route]], ttl_s: int, cluster: bool = False
) -> AsyncIterator[Guard]:
    """A guard on the fleet's Redis, its trips read before the first request."""
    guard = Guard(RedisGuardStore(redis_url, cluster=cluster), routes, ttl_s)
    try:
        if guard.active():
            await guard.poll()
    except (RedisError, OSError) as exc:
        log.warning("guardrails: Redis failed at start (%s); retrying every %ss", exc, FLUSH_S)
    task = asyncio.create_task(guard.run(), name="guardrails")
    try:
        yield guard
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(RedisError, OSError):
            await guard.flush()
        await guard.store.close()
