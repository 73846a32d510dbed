"""The experiment loop end to end, over real sockets: a record per feed decision in a
Redis Stream (or JSONL files) whose items are the served order, tokens on the responses,
clicks posted back and stored, refusals, and a sink outage that loses records, never a
response."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import numpy as np
import orjson
import pytest
import redis
from aiohttp import web

from proxy.experiments.tokens import TokenSigner
from proxy.serve.server import ProxyServer
from tests.support.common import (
    DIM,
    dot_model,
    parse_metrics,
    running_proxy,
    start_app,
    start_valkey,
    vec,
    write_config,
)

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "exposures.schema.json").read_text()
)
TOKEN_KEY = "k" * 32
N_ITEMS = 12
ROUTES = """\
models: {dot: {path: dot.onnx}}
routes:
  - name: feed
    match: {path: /api/feed}
    model: dot
    budget_ms: 2000
    experiments:
      - {name: half, when: {percent: 50, salt: s1}, model: none}
"""


def exposures_conf(sink: str = "redis", **extra: Any) -> str:
    # unit raw: these tests read the users back from the records (the default is keyed).
    options = {
        "enabled": True,
        "sink": sink,
        "flush_interval_ms": 20,
        "max_items": 8,
        "unit": "raw",
        **extra,
    }
    return (
        f"exposures: {json.dumps(options)}\n"
        "events: {enabled: true, max_per_id: 3, max_body_bytes: 4096}\n"
    )


def seed(client: redis.Redis) -> None:
    rng = np.random.default_rng(3)
    for k in range(200):
        client.set(f"emb:user:u{k}", vec(rng.standard_normal(DIM)))
    for k in range(N_ITEMS):
        client.set(f"emb:item:i{k}", vec(rng.standard_normal(DIM)))


def origin_app() -> web.Application:
    body = orjson.dumps({"items": [{"id": f"i{k}", "n": k} for k in range(N_ITEMS)]})

    async def feed(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/feed", feed)
    return app


@pytest.fixture
def valkey(own_valkey: tuple[str, redis.Redis]) -> tuple[str, redis.Redis]:
    """A Valkey of the test's own (see conftest.py), seeded with this module's vectors."""
    seed(own_valkey[1])
    return own_valkey


async def proxy_for(tmp: Path, redis_url: str, extra: str) -> tuple[Any, web.AppRunner]:
    dot_model(tmp / "dot.onnx")
    runner, origin = await start_app(origin_app())
    return write_config(tmp, origin, redis_url, ROUTES, extra), runner


async def get_feed(proxy: ProxyServer, user: str | None) -> tuple[dict[str, str], list[str]]:
    headers = {"X-User-Id": user} if user else {}
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{proxy.port}/api/feed", headers=headers) as resp,
    ):
        assert resp.status == 200
        return dict(resp.headers), [it["id"] for it in (await resp.json())["items"]]


async def post(proxy: ProxyServer, body: Any, **kw: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = kw.pop("headers", {"Content-Type": "application/json"})
    method = kw.pop("method", "POST")
    async with (
        aiohttp.ClientSession() as s,
        s.request(
            method, f"http://127.0.0.1:{proxy.port}/_rankgate/events", data=data, headers=headers
        ) as resp,
    ):
        return resp.status, await resp.json()


def stream(client: redis.Redis) -> list[dict[str, Any]]:
    return [orjson.loads(fields[b"r"]) for _, fields in client.xrange("rankgate:exposures")]


async def until(condition: Any, within_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_one_record_per_feed_request_with_the_served_order(
    tmp_path: Path, valkey: tuple[str, redis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANKGATE_TOKEN_KEY", TOKEN_KEY)
    url, client = valkey
    cfg, runner = await proxy_for(tmp_path, url, exposures_conf(scores=True))
    served: dict[str, tuple[dict[str, str], list[str]]] = {}
    async with running_proxy(cfg) as proxy:
        for k in range(40):
            served[f"u{k}"] = await get_feed(proxy, f"u{k}")
        await get_feed(proxy, None)  # no user: no token, so no exposure
        await until(lambda: len(stream(client)) == 40)
        await asyncio.sleep(0.1)
    await runner.cleanup()
    records = stream(client)
    for record in records:
        jsonschema.validate(record, SCHEMA)
    by_unit = {r["unit"]: r for r in records}
    arms = {r["arm"] for r in records if r["unit"]}
    assert arms == {"default", "half"}  # 40 users at 50%: both arms get some
    for user, (headers, ids) in served.items():
        record = by_unit[user]
        assert record["items"] == ids[:8]  # max_items
        assert record["origin_pos"] == [int(i[1:]) for i in ids[:8]]
        assert headers["X-Rankgate-Id"]
        if record["arm"] == "half":
            assert (record["model"], record["outcome"], record["reason"]) == (
                "none",
                "control",
                "control",
            )
            assert ids == [f"i{k}" for k in range(N_ITEMS)] and record["scores"] == [None] * 8
            assert record["model_sha256"] is None
        else:
            assert (record["outcome"], record["reason"]) == ("applied", None)
            assert record["scores"] == sorted(record["scores"], reverse=True)
            assert len(record["model_sha256"]) == 64
    assert None not in by_unit and len(records) == 40


async def test_clicks_come_back_and_refusals_store_nothing(
    tmp_path: Path, valkey: tuple[str, redis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANKGATE_TOKEN_KEY", TOKEN_KEY)
    url, client = valkey
    cfg, runner = await proxy_for(tmp_path, url, exposures_conf())
    async with running_proxy(cfg) as proxy:
        headers, ids = await get_feed(proxy, "u1")
        token = headers["X-Rankgate-Id"]
        click = {"id": token, "item": ids[2], "type": "click"}
        assert await post(proxy, click) == (202, {"accepted": 1})
        # What sendBeacon sends: text/plain, an array.
        beacon = [{"id": token, "item": ids[0], "type": "conversion", "value": 9.5}]
        status, _ = await post(proxy, beacon, headers={"Content-Type": "text/plain"})
        assert status == 202
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        refusals = [
            ({**click, "id": forged}, {}, 401),
            ({**click, "id": "not-a-token"}, {}, 401),
            ({**click, "type": "like"}, {}, 422),
            ({"id": token, "type": "click"}, {}, 422),
            (b"{not json", {}, 400),
            (b"x" * 5000, {}, 413),
            (click, {"headers": {"Content-Type": "text/html"}}, 415),
            (click, {"method": "PUT"}, 405),
            ([click, click], {}, 429),  # 2 so far + 2 > max_per_id 3: all refused
        ]
        for body, kw, status in refusals:
            got, answer = await post(proxy, body, **kw)
            assert got == status, (body, answer)
            assert set(answer) == {"error"}
        old = TokenSigner(TOKEN_KEY.encode()).sign("ab" * 12, 1000, "feed", "default")
        assert (await post(proxy, {**click, "id": old}))[0] == 410
        await until(lambda: len(stream(client)) == 3)
        samples = parse_metrics((await proxy_metrics(proxy)).decode())
    await runner.cleanup()
    exposure, *events = stream(client)
    assert [e["kind"] for e in events] == ["click", "conversion"]
    for event in events:
        jsonschema.validate(event, SCHEMA)
        assert (event["id"], event["route"], event["arm"]) == (
            exposure["id"],
            "feed",
            exposure["arm"],
        )
    assert events[0]["item"] == ids[2] and events[1]["value"] == 9.5
    assert samples[("rankgate_events_total", frozenset({("result", "accepted")}))] == 2
    assert samples[("rankgate_events_total", frozenset({("result", "401")}))] == 2
    assert samples[("rankgate_exposures_total", frozenset({("result", "written")}))] == 3


async def proxy_metrics(proxy: ProxyServer) -> bytes:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{proxy.admin_port}/metrics") as resp,
    ):
        return await resp.read()


async def test_a_sink_outage_loses_records_not_responses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_db: redis.Redis
) -> None:
    """The embeddings on one Redis, the exposure stream on another that goes away."""
    monkeypatch.setenv("RANKGATE_TOKEN_KEY", TOKEN_KEY)
    seed(redis_db)
    sink = start_valkey()
    cfg, runner = await proxy_for(tmp_path, redis_url, exposures_conf())
    text = cfg.read_text().replace(
        '"sink": "redis"', f'"sink": "redis", "redis_url": "{sink.connection_url}"'
    )
    cfg.write_text(text)
    async with running_proxy(cfg) as proxy:
        await get_feed(proxy, "u1")
        sink_client = redis.Redis.from_url(sink.connection_url)
        await until(lambda: len(stream(sink_client)) == 1)
        sink_client.close()
        sink.stop()
        for k in range(20):
            headers, _ = await get_feed(proxy, f"u{k}")
            assert headers["X-Rerank"].startswith(("applied", "skipped; reason=control"))
        await until(lambda: proxy.runtime.exposures.dropped == 20)  # type: ignore[union-attr]
        samples = parse_metrics((await proxy_metrics(proxy)).decode())
    await runner.cleanup()
    assert samples[("rankgate_exposures_total", frozenset({("result", "dropped")}))] == 20


async def test_jsonl_sink_rotates(
    tmp_path: Path, valkey: tuple[str, redis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANKGATE_TOKEN_KEY", TOKEN_KEY)
    url, _ = valkey
    cfg, runner = await proxy_for(
        tmp_path, url, exposures_conf("jsonl", path="log", max_file_bytes=4096, keep_files=3)
    )
    async with running_proxy(cfg) as proxy:
        for k in range(60):
            await get_feed(proxy, f"u{k}")
    await runner.cleanup()
    files = sorted((tmp_path / "log").glob("exposures-*.jsonl"))
    assert len(files) == 3  # rotated at 4 KiB, the newest three kept
    lines = [orjson.loads(line) for f in files for line in f.read_bytes().splitlines()]
    assert all(f.stat().st_size <= 4096 for f in files)
    for record in lines:
        jsonschema.validate(record, SCHEMA)
    units = [r["unit"] for r in lines]
    assert units == [f"u{k}" for k in range(60 - len(units), 60)]  # in order, the last ones


async def test_a_missing_key_stops_the_start(
    tmp_path: Path, valkey: tuple[str, redis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RANKGATE_TOKEN_KEY", raising=False)
    url, _ = valkey
    cfg, runner = await proxy_for(tmp_path, url, exposures_conf())
    from proxy.config.yamlload import ConfigError

    with pytest.raises(ConfigError, match="RANKGATE_TOKEN_KEY is not set"):
        async with running_proxy(cfg):
            pass
    await runner.cleanup()


AB_ROUTES = """\
models: {dot: {path: dot.onnx}, dot2: {path: dot2.onnx}}
routes:
  - name: feed
    match: {path: /api/feed}
    model: dot
    budget_ms: 2000
    experiments:
      - {name: b, when: {percent: 50, salt: s1}, model: dot2}
"""


async def test_the_loop_names_the_arm_that_gets_more_clicks(
    tmp_path: Path,
    valkey: tuple[str, redis.Redis],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two arms at 50%, real traffic, clicks posted with the responses' tokens: the
    report joins them and names the arm users click more; the live view agrees on the
    split."""
    from proxy.cli.main import main

    monkeypatch.setenv("RANKGATE_TOKEN_KEY", TOKEN_KEY)
    url, client = valkey
    dot_model(tmp_path / "dot.onnx")
    dot_model(tmp_path / "dot2.onnx", sign=-1.0)
    runner, origin = await start_app(origin_app())
    # 200 users: a test planned at that size, read once (--fixed-horizon below).
    extra = exposures_conf() + "readout: {min_units: 20, expected_units: 200}\n"
    cfg = write_config(tmp_path, origin, url, AB_ROUTES, extra)
    rng = np.random.default_rng(7)
    posted = {"default": 0, "b": 0}
    async with running_proxy(cfg) as proxy:
        for k in range(200):
            headers, ids = await get_feed(proxy, f"u{k}")
            arm = headers["X-Rerank"].split("arm=")[1]
            if rng.random() < (0.45 if arm == "b" else 0.15):
                click = {"id": headers["X-Rankgate-Id"], "item": ids[0], "type": "click"}
                assert (await post(proxy, click))[0] == 202
                posted[arm] += 1
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{proxy.admin_port}/admin/experiments") as resp,
        ):
            live = (await resp.json())["routes"][0]
        await until(lambda: len(stream(client)) == 200 + sum(posted.values()))
    await runner.cleanup()
    units = {a["arm"]: a["units"] for a in live["arms"]}
    assert sum(units.values()) == 200 and min(units.values()) > 70
    assert live["split"] == {"b": 0.5, "default": 0.5} and not live["srm"]["alarm"]

    assert main(["experiments", "report", "--config", str(cfg), "--json", "--fixed-horizon"]) == 0
    report = json.loads(capsys.readouterr().out)
    (route,) = report["routes"]
    arms = {a["arm"]: a for a in route["arms"]}
    assert {arm: arms[arm]["clicks"] for arm in posted} == posted  # every click joined
    assert arms["b"]["exposures"] + arms["default"]["exposures"] == 200
    assert arms["b"]["lift"] > 0 and arms["b"]["p_value"] < 0.05
    assert arms["b"]["decision"] == "better"
    assert route["srm"]["p_value"] > 0.001 and not route["srm"]["alarm"]
    assert report["records"]["orphan_events"] == 0
