"""Shadow scoring and team-draft interleaving over real sockets: a shadow changes no byte
served and its agreement reaches metrics and records; an interleaved list (two models, or
three multileaved) can be rebuilt from its record, and clicks that favour one model's
items make the report name it."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import numpy as np
import onnx
import onnxruntime as ort
import orjson
import pytest
import redis
from onnx import TensorProto, helper

from proxy.feed.interleave import multileave, seed_of, team_draft
from tests.e2e.test_exposures_e2e import (
    SCHEMA,
    TOKEN_KEY,
    exposures_conf,
    get_feed,
    origin_app,
    post,
    seed,
    stream,
    until,
)
from tests.support.common import (
    DIM,
    dot_model,
    metric,
    parse_metrics,
    running_proxy,
    start_app,
    write_config,
)

N_ITEMS = 12


def routes(extra: str) -> str:
    return (
        "models: {dot: {path: dot.onnx}, neg: {path: neg.onnx}}\n"
        "routes:\n"
        "  - name: feed\n"
        "    match: {path: /api/feed}\n"
        "    model: dot\n"
        "    budget_ms: 2000\n" + extra
    )


def order(model: Path, client: redis.Redis, user: str) -> list[str]:
    """A model's own order of the feed for a user: onnxruntime directly, stable."""
    vectors = np.stack([np.frombuffer(client.get(f"emb:item:i{k}"), "<f4") for k in range(N_ITEMS)])
    mine = np.frombuffer(client.get(f"emb:user:{user}"), "<f4")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    inputs = {"user_embedding": np.tile(mine, (N_ITEMS, 1)), "item_embedding": vectors}
    scores = session.run(None, inputs)[0].reshape(-1)
    return [f"i{k}" for k in np.argsort(-scores, kind="stable").tolist()]


@dataclass(frozen=True)
class Liking:
    """Simulated users: one click, with probability ``rate``, on the first of the top four
    served items that ``model`` ranks in its own ``top`` for the user."""

    model: Path
    top: int
    rate: float
    seed: int


async def serve_and_click(
    cfg: Path, client: redis.Redis, users: int, arm: str, liking: Liking
) -> dict[str, list[str]]:
    """One feed per user through rankgate (each ``applied; model=ARM``), clicks posted as
    ``liking`` says; the ids served per user, once every exposure is in the stream."""
    rng = np.random.default_rng(liking.seed)
    served: dict[str, list[str]] = {}
    async with running_proxy(cfg) as proxy:
        for k in range(users):
            headers, ids = await get_feed(proxy, f"u{k}")
            assert headers["X-Rerank"] == f"applied; model={arm}"
            served[f"u{k}"] = ids
            liked = set(order(liking.model, client, f"u{k}")[: liking.top])
            for item in ids[:4]:
                if item in liked and rng.random() < liking.rate:
                    click = {"id": headers["X-Rankgate-Id"], "item": item, "type": "click"}
                    assert (await post(proxy, click))[0] == 202
                    break
        await until(lambda: sum(r["type"] == "exposure" for r in stream(client)) == users)
        await asyncio.sleep(0.2)
    return served


async def metrics_of(port: int) -> dict[Any, float]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
        return parse_metrics(await r.text())


@pytest.fixture
def valkey(own_valkey: tuple[str, redis.Redis]) -> tuple[str, redis.Redis]:
    seed(own_valkey[1])
    return own_valkey


def dot_and_neg(directory: Path) -> None:
    """The two models the routes name: ``dot`` and ``neg``, which ranks in reverse."""
    dot_model(directory / "dot.onnx")
    dot_model(directory / "neg.onnx", sign=-1.0)


async def test_a_shadow_changes_nothing_served_and_reports_its_agreement(
    tmp_path: Path,
    valkey: tuple[str, redis.Redis],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RANKGATE_TOKEN_KEY", TOKEN_KEY)
    url, client = valkey
    dot_and_neg(tmp_path)
    runner, origin = await start_app(origin_app())
    plain = tmp_path / "plain"
    plain.mkdir()
    dot_and_neg(plain)
    without = write_config(plain, origin, url, routes(""), exposures_conf())
    cfg = write_config(
        tmp_path,
        origin,
        url,
        routes("    shadow: {model: neg, sample: 1.0, top: 5}\n"),
        exposures_conf(),
    )
    async with running_proxy(without) as proxy:
        expected = {f"u{k}": (await get_feed(proxy, f"u{k}"))[1] for k in range(20)}
    await until(lambda: len(stream(client)) == 20)
    client.delete("rankgate:exposures")
    async with running_proxy(cfg) as proxy:
        for k in range(20):
            headers, ids = await get_feed(proxy, f"u{k}")
            assert ids == expected[f"u{k}"]  # the same bytes' order as without a shadow
            assert headers["X-Rerank"] == "applied; model=dot; arm=default"
        await until(lambda: len(stream(client)) == 20)
        samples = await metrics_of(proxy.admin_port)
    await runner.cleanup()
    runs = metric(samples, "rankgate_shadow_runs_total", model="neg", result="run")
    assert runs == 20
    tau = "rankgate_shadow_kendall_tau_bucket"
    assert metric(samples, tau, model="neg", le="+Inf") == 20
    # neg scores the reverse of dot: their orders disagree completely (tau -1).
    assert metric(samples, tau, model="neg", le="-0.5") == 20
    assert metric(samples, "rankgate_shadow_overlap_at_10_count", model="neg") == 20
    for record in stream(client):
        assert record["shadow"]["model"] == "neg"
        user = record["unit"]
        assert record["shadow"]["items"] == order(tmp_path / "neg.onnx", client, user)[:5]
        assert record["items"] == expected[user][:8]


async def test_an_interleaved_list_is_rebuilt_from_its_record_and_clicks_name_a_model(
    tmp_path: Path,
    valkey: tuple[str, redis.Redis],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from proxy.cli.main import main

    monkeypatch.setenv("RANKGATE_TOKEN_KEY", TOKEN_KEY)
    url, client = valkey
    dot_and_neg(tmp_path)
    runner, origin = await start_app(origin_app())
    arm = (
        "    experiments:\n"
        "      - {name: duel, when: {percent: 100, salt: s}, interleave: [dot, neg]}\n"
    )
    # 120 users: a test planned at that size, read once (--fixed-horizon below).
    extra = exposures_conf() + "readout: {min_units: 20, expected_units: 120}\n"
    cfg = write_config(tmp_path, origin, url, routes(arm), extra)
    # Users prefer what the second model (neg, team B) ranks first.
    liking = Liking(tmp_path / "neg.onnx", top=3, rate=0.6, seed=3)
    served = await serve_and_click(cfg, client, 120, "dot+neg; arm=duel", liking)
    await runner.cleanup()
    for record in (r for r in stream(client) if r["type"] == "exposure"):
        user = record["unit"]
        a = order(tmp_path / "dot.onnx", client, user)
        b = order(tmp_path / "neg.onnx", client, user)
        rebuilt, teams = team_draft(a, b, seed_of(record["id"]))
        assert served[user] == rebuilt and record["items"] == rebuilt[:8]
        assert record["teams"] == teams[:8] and record["model"] == "dot+neg"
        assert "models_sha256" not in record  # two models: the record as it always was
    assert main(["experiments", "report", "--config", str(cfg), "--json", "--fixed-horizon"]) == 0
    (route,) = json.loads(capsys.readouterr().out)["routes"]
    (duel,) = route["interleaving"]
    assert duel["wins_b"] > duel["wins_a"] and duel["p_value"] < 0.05
    assert duel["winner"] == "neg" and duel["decision"] == "better"
    assert orjson.loads(orjson.dumps(SCHEMA))  # the schema file still parses


def mid_model(path: Path) -> None:
    """score = -<user, item>^2: the items a user is least decided about first, an order
    unlike dot's and neg's (a third model for a multileaved arm)."""
    user = helper.make_tensor_value_info("user_embedding", TensorProto.FLOAT, ["N", DIM])
    item = helper.make_tensor_value_info("item_embedding", TensorProto.FLOAT, ["N", DIM])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Mul", ["user_embedding", "item_embedding"], ["prod"]),
        helper.make_node("ReduceSum", ["prod", "axes"], ["dot"], keepdims=1),
        helper.make_node("Mul", ["dot", "dot"], ["square"]),
        helper.make_node("Neg", ["square"], ["score"]),
    ]
    graph = helper.make_graph(nodes, "mid", [user, item], [score], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


async def test_three_multileaved_models_rebuild_from_records_and_clicks_name_the_third(
    tmp_path: Path,
    valkey: tuple[str, redis.Redis],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from proxy.cli.main import main

    monkeypatch.setenv("RANKGATE_TOKEN_KEY", TOKEN_KEY)
    url, client = valkey
    dot_and_neg(tmp_path)
    mid_model(tmp_path / "mid.onnx")
    runner, origin = await start_app(origin_app())
    arm = (
        "    experiments:\n"
        "      - {name: tri, when: {percent: 100, salt: s}, interleave: [dot, neg, mid]}\n"
    )
    models = "models: {dot: {path: dot.onnx}, neg: {path: neg.onnx}, mid: {path: mid.onnx}}\n"
    text = models + routes(arm).split("\n", 1)[1]
    extra = exposures_conf() + "readout: {min_units: 20, expected_units: 90}\n"
    cfg = write_config(tmp_path, origin, url, text, extra)
    # Users prefer what the third model (mid, team C) ranks first.
    liking = Liking(tmp_path / "mid.onnx", top=2, rate=0.7, seed=4)
    served = await serve_and_click(cfg, client, 90, "dot+neg+mid; arm=tri", liking)
    await runner.cleanup()
    names = ("dot", "neg", "mid")
    sha = {m: hashlib.sha256((tmp_path / f"{m}.onnx").read_bytes()).hexdigest() for m in names}
    for record in (r for r in stream(client) if r["type"] == "exposure"):
        jsonschema.validate(record, SCHEMA)
        user = record["unit"]
        ranks = [order(tmp_path / f"{m}.onnx", client, user) for m in ("dot", "neg", "mid")]
        rebuilt, teams = multileave(ranks, seed_of(record["id"]))
        assert served[user] == rebuilt and record["items"] == rebuilt[:8]
        assert record["teams"] == teams[:8] and set(teams) == {"A", "B", "C"}
        assert record["models_sha256"] == [sha["dot"], sha["neg"], sha["mid"]]
        assert record["model_b_sha256"] == sha["neg"]
    # 90 users: a test planned at that size, read once (--fixed-horizon).
    args = ["experiments", "report", "--config", str(cfg), "--fixed-horizon"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "  multileaved  tri: dot (A), neg (B), mid (C): " in out
    assert "agreement: both name mid; " in out and "  best model: mid\n" in out
    assert main([*args, "--json"]) == 0
    (route,) = json.loads(capsys.readouterr().out)["routes"]
    (tri,) = route["multileaving"]
    assert tri["best_by_exposure"] == tri["best_by_user"] == tri["winner"] == "mid"
    neg, mid = tri["verdicts"]
    assert mid["decision"] == "better" and mid["p_value"] < 0.05
    assert neg["decision"] != "better"
