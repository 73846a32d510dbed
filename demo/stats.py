"""The admin ``/metrics`` text boiled down to what the page's metrics view shows.

Every series is optional: a metric that is absent (an older or newer proxy) leaves its
part of the summary empty instead of failing the whole view.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

PASSTHROUGH = "passthrough"
# Display order of the stages; others (plugins) follow in name order.
STAGE_ORDER = ("origin", "redis", "inference", "rerank", "total")

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    out: list[Sample] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.append(Sample(s.name, dict(s.labels), float(s.value)))
    return out


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) pairs.

    Linear interpolation inside the bucket that holds the rank; a rank in the +Inf bucket
    gives the highest finite bound (as Prometheus does)."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def summarize(text: str) -> dict[str, Any]:
    samples = parse(text)
    by_outcome: dict[tuple[str, str], float] = defaultdict(float)
    passthrough = 0.0
    arms: dict[tuple[str, str], float] = defaultdict(float)
    # stage -> upper bound -> cumulative count (summed over the feed routes)
    stage_buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    stage_sum: dict[str, float] = defaultdict(float)
    stage_count: dict[str, float] = defaultdict(float)
    cache = {"hits": 0.0, "misses": 0.0}
    models: list[dict[str, str]] = []
    reloads: dict[str, float] = {}
    cold_start: float | None = None
    clicks: dict[str, float] = defaultdict(float)  # arm -> click events
    served: dict[str, float] = defaultdict(float)  # arm -> feed responses (every outcome)
    arm_model: dict[str, str] = {}
    seen: set[str] = set()

    for s in samples:
        seen.add(s.name)
        route = s.labels.get("route", "")
        if s.name == "rankgate_requests_total":
            if route == PASSTHROUGH or s.labels.get("outcome") == PASSTHROUGH:
                passthrough += s.value
            else:
                by_outcome[(s.labels.get("outcome", ""), s.labels.get("reason", ""))] += s.value
        elif s.name == "rankgate_model_requests_total":
            arm = s.labels.get("arm", "")
            arms[(s.labels.get("model", ""), arm)] += s.value
            served[arm] += s.value
            arm_model[arm] = s.labels.get("model", "")
        elif s.name == "rankgate_feedback_total" and s.labels.get("kind") == "click":
            clicks[s.labels.get("arm", "")] += s.value
        elif s.name.startswith("rankgate_stage_seconds") and route != PASSTHROUGH:
            stage = s.labels.get("stage", "")
            if s.name.endswith("_bucket"):
                stage_buckets[stage][float(s.labels.get("le", "inf"))] += s.value
            elif s.name.endswith("_sum"):
                stage_sum[stage] += s.value
            elif s.name.endswith("_count"):
                stage_count[stage] += s.value
        elif s.name == "rankgate_item_cache_hits_total":
            cache["hits"] += s.value
        elif s.name == "rankgate_item_cache_misses_total":
            cache["misses"] += s.value
        elif s.name == "rankgate_model_info" and s.value > 0:
            models.append(
                {"model": s.labels.get("model", ""), "sha256": s.labels.get("sha256", "")}
            )
        elif s.name == "rankgate_reloads_total":
            reloads[s.labels.get("result", "")] = s.value
        elif s.name == "rankgate_cold_start_seconds":
            cold_start = s.value

    def rank(stage: str) -> tuple[int, str]:
        return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)

    stages = []
    for stage in sorted(stage_buckets, key=rank):
        buckets = list(stage_buckets[stage].items())
        count = stage_count.get(stage, max((c for _, c in buckets), default=0.0))
        p50, p99 = quantile(0.5, buckets), quantile(0.99, buckets)
        stages.append(
            {
                "stage": stage,
                "count": int(count),
                "p50_ms": None if p50 is None else round(p50 * 1000, 3),
                "p99_ms": None if p99 is None else round(p99 * 1000, 3),
                "mean_ms": round(stage_sum[stage] / count * 1000, 3) if count else None,
            }
        )
    outcomes = [
        {"outcome": o, "reason": r, "count": int(v)}
        for (o, r), v in sorted(by_outcome.items(), key=lambda kv: -kv[1])
        if v > 0
    ]
    return {
        "feed_requests": int(sum(by_outcome.values())),
        "passthrough_requests": int(passthrough),
        "outcomes": outcomes,
        "arms": [
            {"model": m, "arm": a, "count": int(v)}
            for (m, a), v in sorted(arms.items(), key=lambda kv: -kv[1])
            if v > 0
        ],
        "stages": stages,
        "ctr": [
            {
                "arm": arm,
                "model": arm_model.get(arm, ""),
                "responses": int(n),
                "clicks": int(clicks.get(arm, 0)),
                "ctr": round(clicks.get(arm, 0) / n, 4) if n else None,
            }
            for arm, n in sorted(served.items(), key=lambda kv: -kv[1])
            if n > 0
        ],
        "item_cache": {k: int(v) for k, v in cache.items()},
        "models": sorted(models, key=lambda m: m["model"]),
        "reloads": {k: int(v) for k, v in reloads.items()},
        "cold_start_s": None if cold_start is None else round(cold_start, 3),
        "missing": sorted(
            name
            for name in (
                "rankgate_requests_total",
                "rankgate_model_requests_total",
                "rankgate_stage_seconds_bucket",
            )
            if name not in seen
        ),
    }
