"""Explain end to end: a route with pin, filter, boost, diversify and annotate, a real
origin, Valkey and ONNX model. The explanation (CLI, admin port, request header) gives
the order the proxy really served, and each rule's effect matches the response: pinned
items in their origin slots, filtered ones gone, boosts of weight * field, final scores
equal to those annotate wrote; the model's scores are checked against <user, item>."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
import redis
from aiohttp import web

from proxy.cli.explain import render, run
from proxy.config.settings import load_settings
from proxy.serve.server import ProxyServer
from tests.e2e.test_shadow_interleave_e2e import mid_model
from tests.support.common import (
    DIM,
    dot_model,
    proxy_get,
    running_proxy,
    start_app,
    store_vectors,
    write_config,
)

RNG = np.random.default_rng(5)
N = 12
ITEM_VECS = {f"i{k}": RNG.standard_normal(DIM).astype("<f4") for k in range(N)}
USER_VECS = {f"u{k}": RNG.standard_normal(DIM).astype("<f4") for k in range(2)}
TOKEN = "admin-token-" + "x" * 20
WEIGHT = 3.0
ROUTES = f"""\
models:
  dot: {{path: dot.onnx}}
  neg: {{path: neg.onnx}}
  mid: {{path: mid.onnx}}
routes:
  - name: duel
    match: {{path: /api/duel}}
    model: dot
    budget_ms: 500
    user: [header:X-User-Id]
    experiments:
      - {{name: duel, when: {{percent: 100, salt: s}}, interleave: [dot, neg]}}
    plugins: [{{use: pin, field: sponsored}}]
  - name: trio
    match: {{path: /api/trio}}
    model: dot
    budget_ms: 500
    user: [header:X-User-Id]
    experiments:
      - {{name: trio, when: {{percent: 100, salt: s}}, interleave: [dot, neg, mid]}}
    plugins: [{{use: pin, field: sponsored}}, {{use: boost, field: fresh, weight: {WEIGHT}}}]
  - name: rules
    match: {{path: /api/rules}}
    model: dot
    budget_ms: 500
    user: [header:X-User-Id]
    plugins:
      - {{use: pin, field: sponsored}}
      - {{use: filter, field: status, equals: hidden}}
      - {{use: boost, field: fresh, weight: {WEIGHT}}}
      - {{use: diversify, lambda: 0.5}}
      - {{use: annotate, round: 6}}
"""
ITEMS = [
    {"id": f"i{k}", "sponsored": k == 2, "fresh": round(k / N, 3), "status": "ok"} for k in range(N)
]
ITEMS[9]["status"] = "hidden"


def origin_app(seen: list[dict[str, str]]) -> web.Application:
    async def feed(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"items": ITEMS})

    app = web.Application()
    app.router.add_get("/api/rules", feed)
    app.router.add_get("/api/duel", feed)
    app.router.add_get("/api/trio", feed)
    return app


Env = tuple[ProxyServer, Path, list[dict[str, str]]]


@pytest.fixture
async def env(tmp_path: Path, redis_url: str, redis_db: redis.Redis) -> AsyncIterator[Env]:
    store_vectors(redis_db, USER_VECS, ITEM_VECS)
    dot_model(tmp_path / "dot.onnx")
    dot_model(tmp_path / "neg.onnx", sign=-1.0)
    mid_model(tmp_path / "mid.onnx")
    seen: list[dict[str, str]] = []
    runner, origin = await start_app(origin_app(seen))
    cfg = write_config(tmp_path, origin, redis_url, ROUTES)
    line = "admin: {host: 127.0.0.1, port: 0}"
    cfg.write_text(cfg.read_text().replace(line, line[:-1] + f", token: {TOKEN}}}"))
    try:
        async with running_proxy(cfg) as proxy:
            yield proxy, cfg, seen
    finally:
        await runner.cleanup()


def served(body: bytes) -> list[dict[str, Any]]:
    return orjson.loads(body)["items"]


def check_against_response(report: dict[str, Any], items: list[dict[str, Any]], user: str) -> None:
    """The explanation against what the proxy served to ``user``."""
    assert report["outcome"] == "applied" and report["model"] == "dot"
    assert report["rules"] == ["pin", "filter", "boost", "diversify", "annotate"]
    (arr,) = report["arrays"]
    assert [it["id"] for it in arr["items"]] == [it["id"] for it in items]
    by_id = {it["id"]: it for it in arr["items"]}
    for slot, item in enumerate(items):
        explained = by_id[item["id"]]
        assert explained["slot"] == slot
        assert explained["origin"] == int(item["id"][1:])
        # The model's own score, computed here: <user, item>.
        dot = float(USER_VECS[user] @ ITEM_VECS[item["id"]])
        assert explained["score"] == pytest.approx(dot, abs=1e-4)
        # annotate wrote the final score (after boost) into the item.
        assert explained["final_score"] == pytest.approx(item["_score"], abs=1e-5)
        boost = [e for e in explained["effects"] if e.startswith("boost: score ")]
        if item["fresh"]:
            shown = float(boost[0].split()[2])
            assert shown == pytest.approx(WEIGHT * item["fresh"], rel=1e-3)
            assert explained["final_score"] - explained["score"] == pytest.approx(
                WEIGHT * item["fresh"], abs=1e-4
            )
        else:
            assert not boost
    # The pin: i2 in its origin slot, said so; the filter: i9 gone, said so.
    assert items[2]["id"] == "i2" and "pin: pinned at 2" in by_id["i2"]["effects"]
    assert "i9" not in by_id
    assert [(f["id"], f["effects"]) for f in arr["filtered"]] == [("i9", ["filter: filtered"])]
    # Diversify moved some items away from the boosted score order.
    assert any(e.startswith("diversify: moved ") for it in arr["items"] for e in it["effects"])


async def test_cli_admin_and_header_explain_what_the_proxy_served(env: Env) -> None:
    proxy, cfg, seen = env
    resp, body = await proxy_get(proxy, "/api/rules", user="u0")
    assert resp.headers["X-Rerank"].startswith("applied")
    assert "X-Rankgate-Explanation" not in resp.headers
    items = served(body)

    # The command's work, in this loop (the CLI's output is tested on the demo).
    report = await run(load_settings(cfg), "/api/rules", "u0", {}, {})
    check_against_response(report, items, "u0")
    table = render(report).splitlines()
    rows = [line.split() for line in table[3:]]
    assert [r[2] for r in rows] == [it["id"] for it in items] + ["i9"]

    # The admin port: with the token only.
    admin = f"http://127.0.0.1:{proxy.admin_port}/admin/explain?user=u0&path=/api/rules"
    async with aiohttp.ClientSession() as s:
        async with s.get(admin) as r:
            assert r.status == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with s.get(admin, headers=auth) as r:
            assert r.status == 200
            check_against_response(await r.json(), items, "u0")
        async with s.get(admin.replace("path=/api/rules", "path=api"), headers=auth) as r:
            assert r.status == 400

    # The header: the same JSON in one response header, the body as without it.
    n = len(seen)
    resp, explained_body = await proxy_get(
        proxy, "/api/rules", user="u0", headers={"X-Rankgate-Explain": TOKEN}
    )
    assert explained_body == body
    check_against_response(orjson.loads(resp.headers["X-Rankgate-Explanation"]), items, "u0")
    assert "no-store" in resp.headers["Cache-Control"]
    assert "X-Rankgate-Explain" not in seen[n]  # the token never reaches the origin
    for wrong in ("nope", TOKEN + "x", ""):
        resp, again = await proxy_get(
            proxy, "/api/rules", user="u0", headers={"X-Rankgate-Explain": wrong}
        )
        assert "X-Rankgate-Explanation" not in resp.headers and again == body
        assert "X-Rankgate-Explain" not in seen[-1]


async def test_header_on_a_skipped_request_says_why(env: Env) -> None:
    proxy, _, _ = env
    resp, body = await proxy_get(
        proxy, "/api/rules", user="stranger", headers={"X-Rankgate-Explain": TOKEN}
    )
    assert resp.headers["X-Rerank"] == "skipped; reason=unknown-user"
    report = orjson.loads(resp.headers["X-Rankgate-Explanation"])
    assert report["outcome"] == "skipped" and report["reason"] == "unknown-user"
    assert [it["id"] for it in report["arrays"][0]["items"]] == [it["id"] for it in ITEMS]
    assert [it["id"] for it in served(body)] == [it["id"] for it in ITEMS]
    # No user at all: the origin's answer streams on, the header still says why.
    resp, _ = await proxy_get(proxy, "/api/rules", user=None, headers={"X-Rankgate-Explain": TOKEN})
    assert orjson.loads(resp.headers["X-Rankgate-Explanation"])["reason"] == "no-user"


async def test_an_interleaved_arm_shows_each_slots_team(env: Env) -> None:
    proxy, _, _ = env
    hdrs = {"X-Rankgate-Explain": TOKEN}
    resp, body = await proxy_get(proxy, "/api/duel", user="u1", headers=hdrs)
    assert resp.headers["X-Rerank"].startswith("applied; model=dot")
    report = orjson.loads(resp.headers["X-Rankgate-Explanation"])
    assert report["arm"] == "duel" and report["interleaved_with"] == "neg"
    (arr,) = report["arrays"]
    assert [it["id"] for it in arr["items"]] == [it["id"] for it in served(body)]
    teams = {it["id"]: it["team"] for it in arr["items"]}
    assert teams["i2"] is None and "pin: pinned at 2" in arr["items"][2]["effects"]
    assert {t for i, t in teams.items() if i != "i2"} == {"A", "B"}


async def test_a_multileaved_arm_explains_the_first_models_rules(env: Env) -> None:
    """Three models, each arranged by the rules (pin, boost) on its own scores, A's last:
    the explanation shows A's (dot's) scores and boosts, and each slot's team."""
    proxy, _, _ = env
    hdrs = {"X-Rankgate-Explain": TOKEN}
    resp, body = await proxy_get(proxy, "/api/trio", user="u1", headers=hdrs)
    assert resp.headers["X-Rerank"] == "applied; model=dot+neg+mid; arm=trio"
    report = orjson.loads(resp.headers["X-Rankgate-Explanation"])
    assert report["arm"] == "trio" and report["interleaved_with"] == "neg+mid"
    (arr,) = report["arrays"]
    assert [it["id"] for it in arr["items"]] == [it["id"] for it in served(body)]
    teams = {it["id"]: it["team"] for it in arr["items"]}
    assert teams["i2"] is None and "pin: pinned at 2" in arr["items"][2]["effects"]
    assert {t for i, t in teams.items() if i != "i2"} == {"A", "B", "C"}
    fresh = {it["id"]: it["fresh"] for it in ITEMS}
    for it in arr["items"]:
        if it["id"] == "i2":
            continue
        dot = float(USER_VECS["u1"] @ ITEM_VECS[it["id"]])
        assert it["score"] == pytest.approx(dot, abs=1e-4)
        assert it["final_score"] == pytest.approx(dot + WEIGHT * fresh[it["id"]], abs=1e-4)


async def test_no_token_configured_never_explains(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    store_vectors(redis_db, USER_VECS, ITEM_VECS)
    dot_model(tmp_path / "dot.onnx")
    dot_model(tmp_path / "neg.onnx", sign=-1.0)
    mid_model(tmp_path / "mid.onnx")
    seen: list[dict[str, str]] = []
    runner, origin = await start_app(origin_app(seen))
    cfg = write_config(tmp_path, origin, redis_url, ROUTES)
    try:
        async with running_proxy(cfg) as proxy:
            for value in ("", "None", TOKEN):
                resp, _ = await proxy_get(
                    proxy, "/api/rules", user="u0", headers={"X-Rankgate-Explain": value}
                )
                assert resp.headers["X-Rerank"].startswith("applied")
                assert "X-Rankgate-Explanation" not in resp.headers
                assert "X-Rankgate-Explain" not in seen[-1]
    finally:
        await runner.cleanup()


def test_cli_exit_codes(env: Env) -> None:
    _, cfg, _ = env
    args = [sys.executable, "-m", "proxy", "explain", "--config", str(cfg), "--user", "u0"]
    miss = subprocess.run([*args, "/nothing/here"], capture_output=True, text=True, timeout=60)
    assert miss.returncode == 1 and "no route matches /nothing/here" in miss.stdout
    bad = subprocess.run(
        [*args, "--header", "nocolon", "/api/rules"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode != 0 and "want NAME:VALUE" in bad.stderr
