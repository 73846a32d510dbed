"""Traces end to end: a client's W3C trace context reaches the origin; with tracing on,
the spans of a re-ranked request reach a real OTLP/HTTP receiver started here (protobuf,
decoded with opentelemetry-proto), and the origin's parent is rankgate's origin-call span."""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support.common import (
    TEN_ITEMS,
    proxy_get,
    running_proxy,
    seed_ten_items,
    start_app,
    wait_until,
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
    plugins: [{use: pin, field: sponsored}]
"""
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


def origin_app(seen: list[dict[str, str]]) -> web.Application:
    """/feed: ten items (i3 sponsored); anything else: text. Keeps each request's headers."""

    async def feed(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        items = [dict(it, sponsored=it["id"] == "i3") for it in TEN_ITEMS]
        return web.json_response({"items": items})

    async def other(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/feed", feed)
    app.router.add_get("/{tail:.*}", other)
    return app


def receiver_app(got: list[ExportTraceServiceRequest]) -> web.Application:
    """The collector's side of OTLP/HTTP: POST /v1/traces, protobuf in and out."""

    async def traces(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        got.append(message)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    return app


Env = tuple[Path, str, list[dict[str, str]]]


@pytest.fixture
async def origin(tmp_path: Path, redis_db: redis.Redis) -> AsyncIterator[tuple[Path, str, Any]]:
    seed_ten_items(redis_db, tmp_path)
    seen: list[dict[str, str]] = []
    runner, url = await start_app(origin_app(seen))
    try:
        yield tmp_path, url, seen
    finally:
        await runner.cleanup()


def _spans(got: list[ExportTraceServiceRequest]) -> list[Any]:
    return [
        span
        for message in got
        for resource in message.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]


def _attrs(span: Any) -> dict[str, Any]:
    out = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


@pytest.mark.parametrize("path", ["/feed", "/other"])
async def test_trace_context_reaches_origin_untouched_with_tracing_off(
    origin: tuple[Path, str, list[dict[str, str]]], redis_url: str, path: str
) -> None:
    tmp, url, seen = origin
    cfg = write_config(tmp, url, redis_url, ROUTES)
    headers = {"traceparent": TRACEPARENT, "tracestate": TRACESTATE}
    async with running_proxy(cfg) as proxy:
        resp, _ = await proxy_get(proxy, path, headers=dict(headers))
        assert resp.status == 200
        if path == "/feed":
            assert resp.headers["X-Rerank"].startswith("applied")
        # Without one, none is invented (tracing is off).
        await proxy_get(proxy, path)
    assert seen[0]["traceparent"] == TRACEPARENT
    assert seen[0]["tracestate"] == TRACESTATE
    assert "traceparent" not in seen[1] and "tracestate" not in seen[1]


async def test_spans_of_a_reranked_request_reach_an_otlp_receiver(
    origin: tuple[Path, str, list[dict[str, str]]], redis_url: str
) -> None:
    tmp, url, seen = origin
    got: list[ExportTraceServiceRequest] = []
    receiver, receiver_url = await start_app(receiver_app(got))
    # sample_ratio 0: only a client's sampled flag keeps a trace (parent-based).
    cfg = write_config(
        tmp,
        url,
        redis_url,
        ROUTES,
        extra=f"""\
        tracing: {{enabled: true, endpoint: "{receiver_url}", sample_ratio: 0,
                   service_name: rg-test, batch_delay_ms: 50}}
        """,
    )
    try:
        async with running_proxy(cfg) as proxy:
            headers = {"traceparent": TRACEPARENT, "tracestate": TRACESTATE}
            resp, _ = await proxy_get(proxy, "/feed", headers=headers)
            assert resp.headers["X-Rerank"].startswith("applied")
            # Not sampled by the client, and the ratio is 0: no trace, header untouched.
            unsampled = TRACEPARENT[:-2] + "00"
            await proxy_get(proxy, "/feed", headers={"traceparent": unsampled})
            await proxy_get(proxy, "/other", headers={"traceparent": TRACEPARENT})
            await wait_until(lambda: len({s.name for s in _spans(got)}) >= 7, 10)
        spans = _spans(got)
    finally:
        await receiver.cleanup()
    assert seen[1]["traceparent"] == unsampled
    resource = {
        kv.key: kv.value.string_value for kv in got[0].resource_spans[0].resource.attributes
    }
    assert resource["service.name"] == "rg-test"

    trace_id = bytes.fromhex(CLIENT_TRACE)
    assert {s.trace_id for s in spans} == {trace_id}
    servers = [s for s in spans if s.kind == s.SPAN_KIND_SERVER]
    # One per request: the feed (named by its route) and a pass-through (one fixed name).
    assert sorted(s.name for s in servers) == ["feed", "pass-through"]
    server = next(s for s in servers if s.name == "feed")
    assert server.parent_span_id == bytes.fromhex(CLIENT_SPAN)
    assert (
        _attrs(server).items()
        >= {
            "rankgate.route": "feed",
            "rankgate.arm": "default",
            "rankgate.model": "dot",
            "rankgate.outcome": "applied",
            "http.response.status_code": 200,
            "http.request.method": "GET",
        }.items()
    )
    assert server.trace_state == TRACESTATE
    children = {s.name: s for s in spans if s.parent_span_id == server.span_id}
    assert set(children) == {
        "origin",
        "redis user",
        "redis items",
        "model",
        "plugins",
        "encode",
    }
    assert _attrs(children["model"])["rankgate.model"] == "dot"
    assert _attrs(children["plugins"])["rankgate.plugins"] == "pin"
    for child in children.values():
        assert server.start_time_unix_nano <= child.start_time_unix_nano
        assert child.start_time_unix_nano <= child.end_time_unix_nano <= server.end_time_unix_nano
    # The origin saw our origin-call span as its parent, in the client's trace.
    origin_span = children["origin"]
    assert origin_span.kind == origin_span.SPAN_KIND_CLIENT
    expected = f"00-{CLIENT_TRACE}-{origin_span.span_id.hex()}-01"
    assert seen[0]["traceparent"] == expected
    assert seen[0]["tracestate"] == TRACESTATE
    # The pass-through request: its own server span and origin span, in the same trace.
    passing = next(s for s in servers if s.name == "pass-through")
    passing_origin = next(s for s in spans if s.parent_span_id == passing.span_id)
    assert seen[2]["traceparent"] == f"00-{CLIENT_TRACE}-{passing_origin.span_id.hex()}-01"
    assert "rankgate.route" not in _attrs(passing)


async def test_new_traces_at_full_ratio_and_a_skip_reason(
    origin: tuple[Path, str, list[dict[str, str]]], redis_url: str
) -> None:
    """Without a client traceparent, a ratio of 1 starts a trace; a skipped request's
    span carries its reason."""
    tmp, url, seen = origin
    got: list[ExportTraceServiceRequest] = []
    receiver, receiver_url = await start_app(receiver_app(got))
    cfg = write_config(
        tmp,
        url,
        redis_url,
        ROUTES,
        extra=f"""\
        tracing: {{enabled: true, endpoint: "{receiver_url}", sample_ratio: 1,
                   batch_delay_ms: 50}}
        """,
    )
    try:
        async with running_proxy(cfg) as proxy:
            resp, _ = await proxy_get(proxy, "/feed", user="nobody")
            assert resp.headers["X-Rerank"] == "skipped; reason=unknown-user"
            await wait_until(lambda: any(s.name == "feed" for s in _spans(got)), 10)
        spans = _spans(got)
    finally:
        await receiver.cleanup()
    server = next(s for s in spans if s.name == "feed")
    assert server.parent_span_id == b""
    assert _attrs(server)["rankgate.reason"] == "unknown-user"
    origin_span = next(s for s in spans if s.name == "origin")
    assert seen[0]["traceparent"] == f"00-{server.trace_id.hex()}-{origin_span.span_id.hex()}-01"


SERVE_ONCE = textwrap.dedent(
    """\
    import asyncio, sys
    if sys.argv[2:] == ["block"]:  # any import of opentelemetry raises ImportError
        sys.modules["opentelemetry"] = None
    import aiohttp
    from proxy.config.settings import load_settings
    from proxy.serve.server import ProxyServer

    async def main():
        server = ProxyServer(load_settings(sys.argv[1]))
        await server.start()
        try:
            async with aiohttp.ClientSession() as s:
                url = f"http://127.0.0.1:{server.port}/feed"
                async with s.get(url, headers={"X-User-Id": "u1"}) as r:
                    assert r.headers["X-Rerank"].startswith("applied"), r.headers
        finally:
            await server.stop()

    asyncio.run(main())
    loaded = [m for m in sys.modules if m.startswith(
        ("opentelemetry.sdk.trace", "opentelemetry.exporter", "proxy.serve.otlp"))]
    print(",".join(sorted(loaded)) or "none")
    """
)


@pytest.mark.parametrize("enabled", [False, True])
async def test_nothing_of_tracing_is_imported_when_off(
    origin: tuple[Path, str, list[dict[str, str]]], redis_url: str, enabled: bool
) -> None:
    """Serving a re-ranked request with tracing off imports neither the SDK's tracing nor
    the exporter (redis-py 8 itself imports opentelemetry's metrics API when it is
    installed, so the package as a whole is not the test); on, both are."""
    tmp, url, _ = origin
    extra = "tracing: {enabled: true, endpoint: 'http://127.0.0.1:9'}\n" if enabled else ""
    cfg = write_config(tmp, url, redis_url, ROUTES, extra=extra)
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", SERVE_ONCE, str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stdout.strip().splitlines()[-1]
    if enabled:
        assert "proxy.serve.otlp" in loaded and "opentelemetry.exporter" in loaded
    else:
        assert loaded == "none"


async def test_serving_with_tracing_off_needs_no_opentelemetry(
    origin: tuple[Path, str, list[dict[str, str]]], redis_url: str
) -> None:
    """With every import of opentelemetry made to fail, a re-ranked request is served
    (tracing off); with tracing on, the start says what is missing."""
    tmp, url, _ = origin
    cfg = write_config(tmp, url, redis_url, ROUTES)
    argv = [sys.executable, "-c", SERVE_ONCE, str(cfg), "block"]
    run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=60)
    proc = await asyncio.to_thread(run, argv)
    assert proc.returncode == 0, proc.stderr
    cfg.write_text(cfg.read_text() + "tracing: {enabled: true}\n")
    proc = await asyncio.to_thread(run, argv)
    assert proc.returncode != 0
    assert "tracing: enabled: needs OpenTelemetry: pip install 'rankgate[otel]'" in proc.stderr
