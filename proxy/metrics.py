"""Prometheus metrics, fed one way: a RequestRecord observer and a reload listener.

Series (label values are bounded: route names come from routes.yaml, ``passthrough``
for requests no route matches; never raw paths or user ids):

  rankgate_requests_total{route,outcome,reason}
      outcome: applied | skipped | control | passthrough | origin-error
      reason: why it was not applied (``redis-timeout``, ``no-user``, ... see feed.py;
      ``origin_timeout`` ... for origin-error), "" for applied and passthrough.
      Reasons are constants in the code, so they stay a small set.
  rankgate_stage_seconds{route,stage}        histogram: origin, redis, inference,
      rerank, total, and plugin:NAME
  rankgate_model_requests_total{model,arm,outcome}  requests that chose an arm
      (model "none" is a control arm)
  rankgate_item_cache_hits_total / rankgate_item_cache_misses_total
  rankgate_item_cache_bytes                   estimated bytes held (summed over workers)
  rankgate_connections_open                   client connections held (summed)
  rankgate_connections_closed_total{reason}   closed by a limit: max-connections (503),
      header-timeout (408), send-timeout, bad-request (the parser's 400)
  rankgate_reloads_total{result}              ok | unchanged | error (not the first load)
  rankgate_model_info{model,sha256}           1 for every model of the active snapshot
  rankgate_cold_start_seconds                 process start to ready

With ``rankgate serve --workers N`` every worker writes its values to files under
PROMETHEUS_MULTIPROC_DIR (set by the supervisor before the worker starts, so before it
imports prometheus_client) and the admin side renders the sum with a
MultiProcessCollector. Counters and histograms add up over workers (a dead worker's
counts stay); the gauges show the maximum over live workers.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from proxy.record import RequestRecord

if TYPE_CHECKING:
    from proxy.app import Runtime
    from proxy.snapshot import Snapshot

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format every Prometheus (2.x and 3.x) reads; our names need nothing newer.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PASSTHROUGH = "passthrough"
STAGES = frozenset({"origin", "redis", "inference", "rerank", "total"})
# From a cached 100 us feed to a slow origin: 100 us .. 30 s.
BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
RELOAD_RESULTS = ("ok", "unchanged", "error")
FLUSH_S = 1.0
# A label value that is not one of our short constants becomes "other": whatever a
# future code path (or plugin) puts in a record, the series count stays bounded.
_LABEL = re.compile(r"^[a-z][a-z0-9_.:-]{0,47}$")

# Counters only: the _created series double the output and nobody graphs them.
prometheus_client.disable_created_metrics()


def _bounded(value: str | None) -> str:
    if not value:
        return ""
    return value if _LABEL.match(value) else "other"


def process_start_time() -> float:
    """Wall-clock time this process started (Linux /proc; else this module's import)."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            # Field 22 (starttime, in clock ticks after boot); fields after the ")" of
            # the command name start at field 3.
            start_ticks = int(fh.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/uptime", "rb") as fh:
            uptime = float(fh.read().split()[0])
        age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - max(age, 0.0)
    except (OSError, ValueError, IndexError):
        return _IMPORTED_AT


_IMPORTED_AT = time.time()


def multiprocess_dir() -> str | None:
    """The shared metrics directory when this process writes multiprocess values."""
    path = os.environ.get(MULTIPROC_ENV)
    # The value class was chosen when prometheus_client was imported; trust that.
    return path if path and getattr(values.ValueClass, "_multiprocess", False) else None


def render_multiprocess(path: str, extra: Iterable[Collector] = ()) -> bytes:
    """Every worker's values from ``path``, summed, plus any extra collectors."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)


class Metrics:
    """The metrics of one serving process, in a registry of its own (tests run several
    servers in one process)."""

    def __init__(self) -> None:
        self.multiproc_dir = multiprocess_dir()
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "rankgate_requests",
            "Requests by route and outcome; reason says why a feed was not re-ranked.",
            ["route", "outcome", "reason"],
            registry=r,
        )
        self.stages = Histogram(
            "rankgate_stage_seconds",
            "Time spent per stage of a request (total: the whole request).",
            ["route", "stage"],
            buckets=BUCKETS,
            registry=r,
        )
        self.model_requests = Counter(
            "rankgate_model_requests",
            "Feed requests by the model and experiment arm chosen for them.",
            ["model", "arm", "outcome"],
            registry=r,
        )
        self.cache_hits = Counter(
            "rankgate_item_cache_hits", "Item vectors found in the local cache.", registry=r
        )
        self.cache_misses = Counter(
            "rankgate_item_cache_misses", "Item vectors looked up in Redis.", registry=r
        )
        self.cache_bytes = Gauge(
            "rankgate_item_cache_bytes",
            "Estimated bytes held by the item and list caches.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections_open = Gauge(
            "rankgate_connections_open",
            "Client connections held now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections_closed = Counter(
            "rankgate_connections_closed",
            "Client connections closed by a limit (listen.* timeouts and max_connections).",
            ["reason"],
            registry=r,
        )
        self._closed_seen: dict[str, int] = {}
        self.reloads = Counter(
            "rankgate_reloads",
            "routes.yaml reload attempts by result (the first load is not counted).",
            ["result"],
            registry=r,
        )
        self.model_info = Gauge(
            "rankgate_model_info",
            "Models of the active snapshot (1) with the sha256 of the file served.",
            ["model", "sha256"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.cold_start = Gauge(
            "rankgate_cold_start_seconds",
            "Seconds from process start to ready (slowest live worker).",
            registry=r,
            multiprocess_mode="livemax",
        )
        for result in RELOAD_RESULTS:
            self.reloads.labels(result)  # present at 0 from the start
        # Requests are counted in plain dicts and added to the prometheus values in a
        # batch (at every scrape, and each FLUSH_S with workers): a prometheus inc() or
        # observe() takes a lock (and writes an mmap with workers), ~1-3 us each, and a
        # request makes seven of them.
        self._pending_requests: dict[tuple[str, str, str], int] = {}
        self._pending_models: dict[tuple[str, str, str], int] = {}
        # (route, stage) -> counts per bucket (len(BUCKETS) + 1 with +Inf), then the sum.
        self._pending_stages: dict[tuple[str, str], list[float]] = {}
        self._label_memo: dict[str, str] = {}
        self._runtime: Runtime | None = None
        self._cache_seen = (0, 0)
        self._reloads_seen: dict[str, int] = {}
        self._models: set[tuple[str, str]] = set()

    def install(self, runtime: Runtime) -> None:
        self._runtime = runtime
        runtime.observers.append(self.observe)
        runtime.store.listeners.append(self.on_reload)

    # -- fed by the request path and the snapshot store ---------------------------------

    def _label(self, value: str | None) -> str:
        if not value:
            return ""
        label = self._label_memo.get(value)
        if label is None:
            label = _bounded(value)
            if len(self._label_memo) < 10_000:
                self._label_memo[value] = label
        return label

    def observe(self, record: RequestRecord) -> None:
        route = record.route or PASSTHROUGH
        outcome = self._label(record.outcome) or PASSTHROUGH
        key = (route, outcome, self._label(record.reason))
        pending = self._pending_requests
        pending[key] = pending.get(key, 0) + 1
        stages = self._pending_stages
        for stage, seconds in record.timings.items():
            if stage in STAGES or stage.startswith("plugin:"):
                skey = (route, stage if stage in STAGES else self._label(stage))
                counts = stages.get(skey)
                if counts is None:
                    counts = stages[skey] = [0.0] * (len(BUCKETS) + 2)
                # Buckets are "less than or equal": the first bound >= seconds.
                counts[bisect_left(BUCKETS, seconds)] += 1
                counts[-1] += seconds
        if record.model is not None:
            mkey = (self._label(record.model) or "none", self._label(record.arm), outcome)
            models = self._pending_models
            models[mkey] = models.get(mkey, 0) + 1

    def flush(self) -> None:
        """Add what was counted since the last flush to the prometheus values."""
        requests, self._pending_requests = self._pending_requests, {}
        for key, count in requests.items():
            self.requests.labels(*key).inc(count)
        models, self._pending_models = self._pending_models, {}
        for key, count in models.items():
            self.model_requests.labels(*key).inc(count)
        stages, self._pending_stages = self._pending_stages, {}
        for skey, counts in stages.items():
            child = self.stages.labels(*skey)
            # A batch of observations at once: prometheus_client has no public call for
            # it, but a histogram child is its buckets (non-cumulative) and its sum.
            for bucket, count in zip(child._buckets, counts[:-1], strict=True):
                if count:
                    bucket.inc(count)
            child._sum.inc(counts[-1])
        self.sync_cache()

    async def run_flusher(self) -> None:
        """With workers: the supervisor reads the files, so flush them regularly."""
        while True:
            await asyncio.sleep(FLUSH_S)
            self.flush()

    def sync_cache(self) -> None:
        """Add what the item cache counted since last time (it keeps plain ints)."""
        runtime = self._runtime
        if runtime is None or runtime.ready_at is None:
            return
        cache = runtime.embeddings.cache
        hits, misses = cache.hits, cache.misses
        seen_hits, seen_misses = self._cache_seen
        if hits > seen_hits:
            self.cache_hits.inc(hits - seen_hits)
        if misses > seen_misses:
            self.cache_misses.inc(misses - seen_misses)
        self._cache_seen = (hits, misses)
        self.cache_bytes.set(cache.nbytes)
        self.sync_connections()

    def sync_connections(self) -> None:
        """What proxy/connlimits.py counted (plain ints) since last time."""
        runtime = self._runtime
        if runtime is None:
            return
        stats = runtime.connections
        self.connections_open.set(stats.open)
        for reason, count in stats.snapshot().items():
            delta = count - self._closed_seen.get(reason, 0)
            if delta > 0 or reason not in self._closed_seen:
                self.connections_closed.labels(reason).inc(delta)
            self._closed_seen[reason] = count

    def on_reload(self, result: str, snapshot: Snapshot | None, error: str | None) -> None:
        counts: Mapping[str, int] | None = None
        if self._runtime is not None:
            counts = getattr(self._runtime.store, "reload_counts", None)
        if counts is None:
            self.reloads.labels(_bounded(result)).inc()
        else:
            for name, count in counts.items():
                delta = count - self._reloads_seen.get(name, 0)
                if delta > 0:
                    self.reloads.labels(_bounded(name)).inc(delta)
                self._reloads_seen[name] = count
        if snapshot is not None:
            self.set_models((name, m.sha256) for name, m in snapshot.models.items())

    def set_models(self, models: Iterable[tuple[str, str]]) -> None:
        active = set(models)
        for name, sha in self._models - active:
            # Multiprocess files cannot forget a series: 0 first, then drop it here.
            self.model_info.labels(name, sha).set(0)
            self.model_info.remove(name, sha)
        for name, sha in active:
            self.model_info.labels(name, sha).set(1)
        self._models = active

    def set_cold_start(self, ready_at: float) -> float:
        seconds = max(ready_at - process_start_time(), 0.0)
        self.cold_start.set(seconds)
        return seconds

    # -- read by /metrics ----------------------------------------------------------------

    def render(self) -> bytes:
        self.flush()
        if self.multiproc_dir is not None:
            return render_multiprocess(self.multiproc_dir)
        return generate_latest(self.registry)
