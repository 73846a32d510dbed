"""Prometheus metrics of one serving process, fed one way: request records, reload
outcomes, and counters the item cache keeps itself.

Series (label values are bounded: route names come from routes.yaml, ``passthrough``
for requests no route matches; reasons are ``proxy.outcome.errors.Reason``; never raw paths or
user ids):

  rankgate_requests_total{route,outcome,reason}
      outcome: applied | skipped | control | passthrough | origin-error
      reason: why it was not applied (``proxy.outcome.errors.Reason``: ``no-user``,
      ``redis-timeout``, ``origin-timeout`` ...), "" for applied and passthrough.
  rankgate_stage_seconds{route,stage}        histogram: origin, redis, inference,
      rerank, total, and plugin:NAME
  rankgate_model_requests_total{model,arm,outcome}  requests that chose an arm
      (model "none" is a control arm)
  rankgate_item_cache_hits_total / rankgate_item_cache_misses_total
  rankgate_exposures_total{result}            exposure and event records: written | dropped
  rankgate_events_total{result}               POSTed events: accepted, or the refusal's status
  rankgate_feedback_total{route,arm,kind}     accepted events by the arm that served them
      (kind click | conversion): over rankgate_model_requests_total, a live CTR per arm
  rankgate_shadow_runs_total{route,model,result}  shadow scorings: run | skipped-lag |
      skipped-budget | error
  rankgate_shadow_kendall_tau{route,model}    histogram: how the shadow's order agrees
      with the one served (1 the same, -1 reversed; buckets only: with negative
      buckets OpenMetrics has no _sum, and the +Inf bucket is the count)
  rankgate_shadow_overlap_at_10{route,model}  histogram: the share of the top 10 both hold
  rankgate_item_cache_bytes                   estimated bytes held (summed over workers)
  rankgate_connections_open                   client connections held (summed)
  rankgate_connections_closed_total{reason}   closed by a limit: max-connections (503),
      header-timeout (408), send-timeout, bad-request (the parser's 400)
  rankgate_reloads_total{result}              ok | unchanged | error (not the first load)
  rankgate_routes_refused_total{reason}       invalid|limit|signature|sha256|timeout|error
  rankgate_model_info{model,sha256}           1 for every model of the active snapshot
  rankgate_cold_start_seconds                 process start to ready

The request path only adds to plain dicts (a prometheus-client Counter or Histogram
takes a lock per call, ~1-3 us, and a request makes seven); a collector of our own turns
them into metric families at scrape time, with prometheus-client's public API. With
``rankgate serve --workers N`` the supervisor scrapes every worker and adds them up
(``proxy.serve.fleet``).
"""

from __future__ import annotations

import os
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from proxy.experiments.shadow import OVERLAP_BUCKETS, TAU_BUCKETS, ShadowStats
from proxy.outcome.errors import Outcome, Reason
from proxy.outcome.record import RequestRecord
from proxy.routing.current import ReloadOutcome
from proxy.routing.snapshot import Snapshot

# The classic text format every Prometheus (2.x and 3.x) reads; our names need nothing newer.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PASSTHROUGH = "passthrough"
STAGES = frozenset({"origin", "redis", "inference", "rerank", "total"})
# From a cached 100 us feed to a slow origin: 100 us .. 30 s.
# fmt: off
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
           1.0, 2.5, 5.0, 10.0, 30.0)
# fmt: on
RELOAD_RESULTS = ("ok", "unchanged", "error")
# A label value that is not one of our short constants becomes "other": whatever a
# future code path (or plugin) puts in a record, the series count stays bounded.
_LABEL = re.compile(r"^[a-z][a-z0-9_.:+-]{0,47}$")
_BOUNDS = [*(repr(float(b)) for b in BUCKETS), "+Inf"]


def _bounded(value: str | None) -> str:
    if not value:
        return ""
    return value if _LABEL.match(value) else "other"


def process_start_time() -> float:
    """Wall-clock time this process started (Linux /proc; else now)."""
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
        return time.time()


CacheCounts = Callable[[], tuple[int, int]]  # (hits, misses) so far
CacheBytes = Callable[[], int]  # estimated bytes held now
Connections = Callable[[], tuple[int, dict[str, int]]]  # (open now, closed by reason so far)
SinkCounts = Callable[[], tuple[int, int]]  # (written, dropped) so far
EventCounts = Callable[[], dict[str, int]]  # result -> count so far
FeedbackCounts = Callable[[], dict[tuple[str, str, str], int]]  # (route, arm, kind) -> count


class Metrics:
    """The metrics of one serving process, in a registry of its own (tests run several
    servers in one process)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.models: dict[tuple[str, str, str], int] = {}
        # (route, stage) -> counts per bucket (len(BUCKETS) + 1 with +Inf), then the sum.
        self.stages: dict[tuple[str, str], list[float]] = {}
        self.reloads: dict[str, int] = dict.fromkeys(RELOAD_RESULTS, 0)
        self.refused: dict[tuple[str], int] = {}
        self.model_info: frozenset[tuple[str, str]] = frozenset()
        self.cold_start_s: float | None = None
        self.cache_counts: CacheCounts | None = None
        self.cache_bytes: CacheBytes | None = None
        self.connections: Connections | None = None
        self.sink_counts: SinkCounts | None = None
        self.event_counts: EventCounts | None = None
        self.feedback_counts: FeedbackCounts | None = None
        self.shadow_stats: ShadowStats | None = None
        self._label_memo: dict[str, str] = {}
        # Keys resolved once: (route, outcome, reason) -> labels (an enum's .value is a
        # Python property); route -> stage -> the counts in self.stages (no tuple per stage).
        self._request_keys: dict[tuple[str, Outcome, Reason | None], tuple[str, str, str]] = {}
        self._route_stages: dict[str, dict[str, list[float]]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # -- fed by the request path, the snapshot store and the lifespan -------------------

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
        rkey = (route, record.outcome, record.reason)
        key = self._request_keys.get(rkey)
        if key is None:
            key = (route, rkey[1].value, rkey[2].value if rkey[2] is not None else "")
            if len(self._request_keys) < 10_000:  # routes x outcomes x reasons: far fewer
                self._request_keys[rkey] = key
        self.requests[key] = self.requests.get(key, 0) + 1
        by_stage = self._route_stages.setdefault(route, {})
        for stage, seconds in record.timings.items():
            counts = by_stage.get(stage)
            if counts is None:
                if stage not in STAGES and not stage.startswith("plugin:"):
                    continue
                skey = (route, stage if stage in STAGES else self._label(stage))
                counts = self.stages.setdefault(skey, [0.0] * (len(BUCKETS) + 2))
                if len(by_stage) < 1_000:  # plugin:NAME per plugin of the route: a few
                    by_stage[stage] = counts
            # Buckets are "less than or equal": the first bound >= seconds.
            counts[bisect_left(BUCKETS, seconds)] += 1
            counts[-1] += seconds
        if record.model is not None:
            mkey = (self._label(record.model) or "none", self._label(record.arm), key[1])
            self.models[mkey] = self.models.get(mkey, 0) + 1

    def on_reload(self, outcome: ReloadOutcome | None, snapshot: Snapshot | None) -> None:
        """A reload listener: ``outcome`` is None for the first load (not counted)."""
        if outcome is not None:
            self.reloads[outcome.result] = self.reloads.get(outcome.result, 0) + 1
            if outcome.reason is not None:
                self.refused[(outcome.reason,)] = self.refused.get((outcome.reason,), 0) + 1
        if snapshot is not None:
            self.model_info = frozenset((n, m.sha256) for n, m in snapshot.models.items())

    def set_cold_start(self, ready_at: float) -> float:
        self.cold_start_s = max(ready_at - process_start_time(), 0.0)
        return self.cold_start_s

    # -- read at scrape time -------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        yield _counters(
            "rankgate_requests",
            "Requests by route and outcome; reason says why a feed was not re-ranked.",
            ["route", "outcome", "reason"],
            self.requests,
        )
        yield _histograms(
            "rankgate_stage_seconds",
            "Time spent per stage of a request (total: the whole request).",
            ["route", "stage"],
            self.stages,
            _BOUNDS,
        )
        yield _counters(
            "rankgate_model_requests",
            "Feed requests by the model and experiment arm chosen for them.",
            ["model", "arm", "outcome"],
            self.models,
        )
        yield from self._cache_families()
        yield from self._exposure_families()
        yield from self._shadow_families()
        yield _counters(
            "rankgate_reloads",
            "routes.yaml reload attempts by result (the first load is not counted).",
            ["result"],
            {(result,): count for result, count in self.reloads.items()},
        )
        doc = "Routes versions refused, by reason (the active version kept serving)."
        yield _counters("rankgate_routes_refused", doc, ["reason"], self.refused)
        info = GaugeMetricFamily(
            "rankgate_model_info",
            "Models of the active snapshot (1) with the sha256 of the file served.",
            labels=["model", "sha256"],
        )
        for name, sha in sorted(self.model_info):
            info.add_metric([name, sha], 1)
        yield info
        if self.cold_start_s is not None:
            yield GaugeMetricFamily(
                "rankgate_cold_start_seconds",
                "Seconds from process start to ready (slowest live worker).",
                value=self.cold_start_s,
            )

    def _cache_families(self) -> Iterable[Metric]:
        hits, misses = self.cache_counts() if self.cache_counts is not None else (0, 0)
        yield CounterMetricFamily(
            "rankgate_item_cache_hits", "Item vectors found in the local cache.", value=hits
        )
        yield CounterMetricFamily(
            "rankgate_item_cache_misses", "Item vectors looked up in Redis.", value=misses
        )
        if self.cache_bytes is not None:
            yield GaugeMetricFamily(
                "rankgate_item_cache_bytes",
                "Estimated bytes held by the item and list caches.",
                value=self.cache_bytes(),
            )
        if self.connections is not None:
            held, closed = self.connections()
            yield GaugeMetricFamily(
                "rankgate_connections_open", "Client connections held now.", value=held
            )
            yield _counters(
                "rankgate_connections_closed",
                "Client connections closed by a limit (listen.* timeouts and max_connections).",
                ["reason"],
                {(reason,): count for reason, count in closed.items()},
            )

    def _shadow_families(self) -> Iterable[Metric]:
        stats = self.shadow_stats
        if stats is None or not stats.results:
            return
        yield _counters(
            "rankgate_shadow_runs",
            "Shadow scorings after the response, by result.",
            ["route", "model", "result"],
            stats.results,
        )
        labels = ["route", "model"]
        yield _histograms(
            "rankgate_shadow_kendall_tau",
            "Kendall tau, shadow order vs served.",
            labels,
            stats.tau,
            [*(repr(float(b)) for b in TAU_BUCKETS), "+Inf"],
        )
        yield _histograms(
            "rankgate_shadow_overlap_at_10",
            "Top-10 overlap, shadow order vs served.",
            labels,
            stats.overlap,
            [*(repr(float(b)) for b in OVERLAP_BUCKETS), "+Inf"],
        )

    def _exposure_families(self) -> Iterable[Metric]:
        if self.sink_counts is not None:
            written, dropped = self.sink_counts()
            yield _counters(
                "rankgate_exposures",
                "Exposure and event records written to the sink, or dropped (queue full, "
                "sink down).",
                ["result"],
                {("written",): written, ("dropped",): dropped},
            )
        if self.event_counts is not None:
            yield _counters(
                "rankgate_events",
                "Events POSTed back: accepted, or refused with the status given.",
                ["result"],
                {(result,): count for result, count in self.event_counts().items()},
            )
        if self.feedback_counts is not None:
            yield _counters(
                "rankgate_feedback",
                "Accepted events by the route and arm of the response they follow.",
                ["route", "arm", "kind"],
                {
                    (self._label(route), self._label(arm), kind): count
                    for (route, arm, kind), count in self.feedback_counts().items()
                },
            )

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _counters(
    name: str, doc: str, labels: list[str], counts: Mapping[tuple[str, ...], float]
) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, count in sorted(counts.items()):
        family.add_metric(list(key), count)
    return family


def _histograms(
    name: str,
    doc: str,
    labels: list[str],
    tables: Mapping[tuple[str, ...], Sequence[float]],
    bounds: Sequence[str],
) -> Metric:
    """``tables`` hold a count per bucket (not cumulative), then the sum."""
    family = HistogramMetricFamily(name, doc, labels=labels)
    for key, counts in tables.items():
        running, buckets = 0.0, []
        for bound, count in zip(bounds, counts[:-1], strict=True):
            running += count
            buckets.append((bound, running))
        family.add_metric(list(key), buckets, counts[-1])
    return family
