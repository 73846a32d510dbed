"""Adding up the workers' metrics: counters and histograms summed, an exited worker's
counts kept, gauges the maximum over the live workers."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxy.outcome.record import RequestRecord
from proxy.serve.fleet import FleetMetrics
from proxy.serve.metrics import Metrics


def worker_text(requests: int, cold_start: float) -> str:
    metrics = Metrics()
    for _ in range(requests):
        record = RequestRecord("GET", "/x")
        record.timings["total"] = 0.002
        metrics.observe(record)
    metrics.cold_start_s = cold_start
    return metrics.render().decode()


def totals(fleet: FleetMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(fleet)
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


REQUESTS = (
    "rankgate_requests_total",
    frozenset({("route", "passthrough"), ("outcome", "passthrough"), ("reason", "")}),
)
COUNT = ("rankgate_stage_seconds_count", frozenset({("route", "passthrough"), ("stage", "total")}))
COLD = ("rankgate_cold_start_seconds", frozenset())


def test_sums_keep_what_exited_workers_counted() -> None:
    fleet = FleetMetrics()
    fleet.update(101, worker_text(3, 0.5))
    fleet.update(102, worker_text(4, 0.9))
    got = totals(fleet)
    assert got[REQUESTS] == 7 and got[COUNT] == 7 and got[COLD] == 0.9
    fleet.retire(102)  # killed; its replacement starts from zero
    fleet.update(103, worker_text(1, 0.4))
    got = totals(fleet)
    assert got[REQUESTS] == 8 and got[COUNT] == 8
    assert got[COLD] == 0.5  # a dead worker's gauges are not current
    fleet.update(101, worker_text(5, 0.5))  # a newer scrape replaces the older one
    assert totals(fleet)[REQUESTS] == 10
