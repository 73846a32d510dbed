"""/metrics moves as requests go through: scraped over HTTP from the admin port and
parsed as Prometheus text."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis

from proxy.serve.metrics import BUCKETS
from proxy.serve.server import ProxyServer
from tests.support.common import (
    dot_model,
    fetch,
    metric,
    parse_metrics,
    running_proxy,
    seed_ten_items,
    start_app,
    ten_item_origin,
    write_config,
)

ROUTES = """\
models:
  dot: {path: dot.onnx}
routes:
  - name: feed
    match: {path: /feed}
    model: dot
    budget_ms: 500
    experiments:
      - {name: holdout, when: {header: {X-Holdout: "1"}}, model: none}
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def proxy(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> AsyncIterator[ProxyServer]:
    seed_ten_items(redis_db, tmp_path)
    runner, origin = await start_app(ten_item_origin())
    cfg = write_config(tmp_path, origin, redis_url, ROUTES, "logging: {access_log: false}\n")
    async with running_proxy(cfg) as server:
        yield server
    await runner.cleanup()


async def scrape(server: ProxyServer) -> tuple[Samples, str]:
    status, headers, body = await fetch(f"http://127.0.0.1:{server.admin_port}/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse_metrics(body.decode()), body.decode()


async def get(server: ProxyServer, path: str, **headers: str) -> dict[str, str]:
    status, got, _ = await fetch(f"http://127.0.0.1:{server.port}{path}", headers=headers)
    assert status == 200
    return got


def delta(after: Samples, before: Samples, name: str, **labels: Any) -> float:
    return metric(after, name, **labels) - metric(before, name, **labels)


async def test_metrics_move_with_requests(
    proxy: ProxyServer, tmp_path: Path, redis_db: redis.Redis
) -> None:
    redis_db.set("emb:user:short", b"\0" * 12)  # there, but not embeddings.dim floats
    before, _ = await scrape(proxy)
    assert (await get(proxy, "/feed", **{"X-User-Id": "u1"}))["X-Rerank"].startswith("applied")
    await get(proxy, "/feed", **{"X-User-Id": "u1"})  # the same page again: cache hits
    await get(proxy, "/feed")  # no user
    await get(proxy, "/feed", **{"X-User-Id": "nobody"})  # unknown user
    bad = await get(proxy, "/feed", **{"X-User-Id": "short"})
    assert bad["X-Rerank"] == "skipped; reason=bad-vector"
    await get(proxy, "/feed", **{"X-User-Id": "u1", "X-Holdout": "1"})  # control arm
    await get(proxy, "/somewhere/else")
    after, _ = await scrape(proxy)

    def requests(**labels: str) -> float:
        return delta(after, before, "rankgate_requests_total", **labels)

    assert requests(route="feed", outcome="applied", reason="") == 2
    assert requests(route="feed", outcome="skipped", reason="no-user") == 1
    assert requests(route="feed", outcome="skipped", reason="unknown-user") == 1
    assert requests(route="feed", outcome="skipped", reason="bad-vector") == 1
    assert requests(route="feed", outcome="control", reason="control") == 1
    assert requests(route="passthrough", outcome="passthrough", reason="") == 1

    def stage(route: str, name: str) -> float:
        return delta(after, before, "rankgate_stage_seconds_count", route=route, stage=name)

    assert stage("feed", "total") == 6
    assert stage("feed", "inference") == 2
    assert stage("feed", "origin") == 6
    assert stage("passthrough", "total") == 1
    # Buckets from 100 us: a cached feed is measurable, not all in the first bucket.
    assert BUCKETS[0] == 0.0001
    assert delta(after, before, "rankgate_stage_seconds_bucket", stage="total", le="+Inf") == 7

    def model(**labels: str) -> float:
        return delta(after, before, "rankgate_model_requests_total", **labels)

    assert model(model="dot", arm="default", outcome="applied") == 2
    assert model(model="dot", arm="default") == 5
    assert model(model="none", arm="holdout", outcome="control") == 1

    assert delta(after, before, "rankgate_item_cache_misses_total") == 10
    assert delta(after, before, "rankgate_item_cache_hits_total") >= 10

    digest = hashlib.sha256((tmp_path / "dot.onnx").read_bytes()).hexdigest()
    assert metric(after, "rankgate_model_info", model="dot", sha256=digest) == 1
    assert 0 < metric(after, "rankgate_cold_start_seconds") < 3600


async def test_reloads_and_model_info(proxy: ProxyServer, tmp_path: Path) -> None:
    store = proxy.runtime.store
    before, _ = await scrape(proxy)
    results = []
    await store.reload("test")  # the same files (ok or unchanged: the store decides)
    results.append(store.last_outcome.result)
    dot_model(tmp_path / "neg.onnx", sign=-1.0)
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.replace("  dot: {path: dot.onnx}", "  neg: {path: neg.onnx}"))
    routes.write_text(routes.read_text().replace("model: dot", "model: neg"))
    assert await store.reload("test")
    results.append(store.last_outcome.result)
    routes.write_text("models: {bad: {path: missing.onnx}}\nroutes: []\n")
    assert not await store.reload("test")
    results.append(store.last_outcome.result)
    after, text = await scrape(proxy)

    assert results[1:] == ["ok", "error"]
    for result in ("ok", "unchanged", "error"):
        got = delta(after, before, "rankgate_reloads_total", result=result)
        assert got == results.count(result), result
    # Only the active snapshot's models are listed.
    assert metric(after, "rankgate_model_info", model="neg") == 1
    assert 'model="dot"' not in text


async def test_label_values_stay_bounded(proxy: ProxyServer) -> None:
    for k in range(5):
        await get(proxy, f"/users/secret-{k}/page", **{"X-User-Id": f"user-{k}"})
        await get(proxy, "/feed", **{"X-User-Id": f"user-{k}"})
    _, text = await scrape(proxy)
    assert "secret-" not in text and "user-" not in text
    routes = {
        dict(labels).get("route")
        for (name, labels) in parse_metrics(text)
        if name.startswith("rankgate_requests")
    }
    assert routes == {"feed", "passthrough"}


async def test_origin_errors_are_counted(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    dot_model(tmp_path / "dot.onnx")
    cfg = write_config(tmp_path, f"http://127.0.0.1:{dead}", redis_url, ROUTES)
    async with running_proxy(cfg) as server:
        status, _, _ = await fetch(f"http://127.0.0.1:{server.port}/any")
        assert status == 502
        samples, _ = await scrape(server)
    assert (
        metric(
            samples,
            "rankgate_requests_total",
            route="passthrough",
            outcome="origin-error",
            reason="origin-unreachable",
        )
        == 1
    )


def test_batched_histogram_matches_prometheus_semantics() -> None:
    from prometheus_client import Histogram

    from proxy.outcome.record import RequestRecord
    from proxy.serve.metrics import Metrics

    ours = Metrics()
    reference = Histogram("ref_seconds", "", buckets=BUCKETS, registry=None)
    for seconds in (0.00005, 0.0001, 0.001, 0.003, 0.7, 100.0):
        rec = RequestRecord("GET", "/x")
        rec.timings["total"] = seconds
        ours.observe(rec)
        reference.observe(seconds)
    samples = parse_metrics(ours.render().decode())
    for sample in reference.collect()[0].samples:
        if sample.name.endswith(("_bucket", "_count", "_sum")):
            suffix = sample.name.removeprefix("ref_seconds")
            got = metric(samples, "rankgate_stage_seconds" + suffix, stage="total", **sample.labels)
            assert got == pytest.approx(sample.value), sample
