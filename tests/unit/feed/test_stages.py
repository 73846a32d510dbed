"""The feed path's stages one by one, on a real Valkey and a real ONNX model, without a
server: each stage reads and fills one ``FeedRequest`` and raises the reason it gives up.

The request is aiohttp's own ``make_mocked_request`` (a parsed request object; the stages
never touch its transport), so each stage runs exactly as the server runs it.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import redis
import redis.asyncio as aioredis
from aiohttp.test_utils import make_mocked_request

from proxy.config.settings import Embeddings
from proxy.feed import rerank, stages
from proxy.feed.state import FeedRequest, FeedServices
from proxy.outcome.errors import BodyError, ItemsError, RankgateError, Reason, Skip
from proxy.outcome.record import RequestRecord
from proxy.routing.snapshot import Snapshot, build_snapshot
from proxy.store.embeddings import EmbeddingStore
from tests.support.common import DIM, dot_model, dot_order, seed_vectors

ROUTES = """\
models: {m: {path: m.onnx}}
routes:
  - {name: feed, match: {path: /feed}, model: m, items: data.items, item_id: id,
     user: [header:X-User-Id]}
"""
N_ITEMS = 8


@pytest.fixture
def snapshot(tmp_path: Path) -> Snapshot:
    dot_model(tmp_path / "m.onnx")
    (tmp_path / "routes.yaml").write_text(textwrap.dedent(ROUTES))
    return build_snapshot(tmp_path / "routes.yaml", DIM, 1, None)


@pytest.fixture
async def services(redis_url: str) -> AsyncIterator[FeedServices]:
    client = aioredis.Redis.from_url(redis_url)
    store = EmbeddingStore(client, Embeddings(dim=DIM))
    try:
        # The forwarder is not used by the stages after the origin's body is in.
        yield FeedServices(None, store, 8 << 20, 2048)  # type: ignore[arg-type]
    finally:
        await client.aclose()


def feed_request(
    services: FeedServices, snapshot: Snapshot, headers: dict[str, str] | None = None
) -> FeedRequest:
    request = make_mocked_request("GET", "/feed", headers=headers or {})
    record = RequestRecord("GET", "/feed")
    route = snapshot.match("GET", "/feed")
    assert route is not None
    ctx = stages._context(services, request, route, record)
    st = FeedRequest(services, request, route, snapshot, record, ctx)
    st.deadline = asyncio.get_running_loop().time() + 5.0
    return st


def body(ids: list[str]) -> bytes:
    items = [{"id": i, "title": f"t{i}", "n": 1.50} for i in ids]
    return orjson.dumps({"meta": {"page": 1}, "data": {"items": items}})


async def before_origin(st: FeedRequest) -> None:
    stages.resolve_user(st)
    stages.choose_arm(st)
    stages.check_request(st, None)
    stages.start_user_lookup(st)


async def test_a_request_without_a_user_id_is_no_user(
    services: FeedServices, snapshot: Snapshot
) -> None:
    st = feed_request(services, snapshot)
    stages.resolve_user(st)
    assert st.ctx.user_id is None
    stages.choose_arm(st)  # the arm is chosen all the same (the default, for the record)
    with pytest.raises(Skip) as caught:
        stages.check_request(st, None)
    assert caught.value.reason is Reason.NO_USER
    st = feed_request(services, snapshot, {"X-User-Id": "u1"})
    stages.resolve_user(st)
    assert st.ctx.user_id == "u1"


async def test_choose_arm_takes_the_default_model(
    services: FeedServices, snapshot: Snapshot
) -> None:
    st = feed_request(services, snapshot, {"X-User-Id": "u1"})
    stages.resolve_user(st)
    stages.choose_arm(st)
    assert st.arm is not None and st.arm.model == "m" and st.record.model == "m"


@pytest.mark.parametrize(
    ("raw", "encoding", "reason"),
    [(b"{not json", "", Reason.BAD_JSON), (b"\x1f\x8b garbage", "gzip", Reason.ENCODING)],
)
async def test_decode_names_what_is_wrong_with_the_body(
    services: FeedServices, snapshot: Snapshot, raw: bytes, encoding: str, reason: Reason
) -> None:
    st = feed_request(services, snapshot, {"X-User-Id": "u1"})
    st.body, st.encoding = raw, encoding
    with pytest.raises(BodyError) as caught:
        rerank.decode(st)
    assert caught.value.reason is reason


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"data": {"things": []}}, Reason.ITEMS_NOT_FOUND),
        ({"data": {"items": []}}, Reason.NO_ITEMS),
        ({"data": {"items": [{"name": "a"}, {"name": "b"}]}}, Reason.NO_ITEM_IDS),
    ],
)
async def test_find_items_names_what_is_missing(
    services: FeedServices, snapshot: Snapshot, doc: dict[str, Any], reason: Reason
) -> None:
    st = feed_request(services, snapshot, {"X-User-Id": "u1"})
    st.body, st.encoding = orjson.dumps(doc), ""
    rerank.decode(st)
    with pytest.raises(ItemsError) as caught:
        rerank.find_items(st)
    assert caught.value.reason is reason


async def test_a_user_without_a_vector_is_unknown(
    services: FeedServices, snapshot: Snapshot, redis_db: redis.Redis
) -> None:
    st = feed_request(services, snapshot, {"X-User-Id": "nobody"})
    await before_origin(st)
    with pytest.raises(Skip) as caught:
        await rerank.user_vector(st)
    assert caught.value.reason is Reason.UNKNOWN_USER


async def test_the_stages_reorder_by_score_and_keep_every_other_byte(
    services: FeedServices, snapshot: Snapshot, redis_db: redis.Redis
) -> None:
    users, items = seed_vectors(redis_db, ["u1"], N_ITEMS)
    ids = [f"i{k}" for k in range(N_ITEMS)]
    st = feed_request(services, snapshot, {"X-User-Id": "u1"})
    await before_origin(st)
    st.body, st.encoding = body(ids), ""
    rerank.decode(st)
    rerank.find_items(st)
    await rerank.user_vector(st)
    await rerank.item_vectors(st)
    await rerank.score(st)
    rerank.arrange(st)
    rerank.encode(st)
    out = orjson.loads(st.out)
    served = [item["id"] for item in out["data"]["items"]]
    assert served == dot_order(users["u1"], items)
    assert served != ids  # the order did change
    original = {i["id"]: i for i in orjson.loads(body(ids))["data"]["items"]}
    assert all(item == original[item["id"]] for item in out["data"]["items"])
    assert out["meta"] == {"page": 1}
    assert b'"n":1.5' in st.out


async def test_items_without_vectors_are_no_item_vectors(
    services: FeedServices, snapshot: Snapshot, redis_db: redis.Redis
) -> None:
    seed_vectors(redis_db, ["u1"], 0)
    st = feed_request(services, snapshot, {"X-User-Id": "u1"})
    await before_origin(st)
    st.body, st.encoding = body(["x1", "x2"]), ""
    rerank.decode(st)
    rerank.find_items(st)
    await rerank.user_vector(st)
    with pytest.raises(RankgateError) as caught:
        await rerank.item_vectors(st)
    assert caught.value.reason is Reason.NO_ITEM_VECTORS
    assert np.asarray(st.user).shape == (DIM,)


BANDIT_ROUTES = """\
models: {m: {path: m.onnx}, m2: {path: m.onnx}}
routes:
  - name: feed
    match: {path: /feed}
    model: m
    items: data.items
    item_id: id
    user: [header:X-User-Id]
    experiments:
      - {name: versions, when: {percent: 100}, bandit: {models: [m, m2]}}
"""


async def test_a_bandit_arm_names_its_period_and_weights_for_the_record(
    services: FeedServices, tmp_path: Path
) -> None:
    from proxy.experiments.bandit import assign
    from proxy.experiments.guardrails import Guard
    from proxy.experiments.guardstore import MemoryGuardStore

    dot_model(tmp_path / "m.onnx")
    (tmp_path / "routes.yaml").write_text(BANDIT_ROUTES)
    snap = build_snapshot(tmp_path / "routes.yaml", DIM, 1, None)
    guard = Guard(MemoryGuardStore(), lambda: [r.spec for r in snap.routes])
    guard.bandits.clock = lambda: 600.0  # period 10 of update_s 60
    await guard.tick()
    svc = FeedServices(None, services.embeddings, 8 << 20, 2048, guard=guard)  # type: ignore[arg-type]
    seen = set()
    for k in range(40):
        st = feed_request(svc, snap, {"X-User-Id": f"u{k}"})
        stages.resolve_user(st)
        stages.choose_arm(st)
        tag = st.bandit
        assert tag == {
            "arm": "versions",
            "period": 10,
            "models": ["m", "m2"],
            "weights": [0.5, 0.5],
        }
        model = tag["models"][assign("feed:versions", 10, f"u{k}", tag["weights"])]
        assert st.arm is not None and st.arm.name == f"versions.{model}" == st.ctx.arm
        seen.add(model)
    assert seen == {"m", "m2"}
    plain = feed_request(services, snapshot_of(tmp_path), {"X-User-Id": "u1"})
    stages.resolve_user(plain)
    stages.choose_arm(plain)
    assert plain.bandit is None  # no bandit, no tag


def snapshot_of(tmp_path: Path) -> Snapshot:
    (tmp_path / "plain.yaml").write_text(textwrap.dedent(ROUTES))
    return build_snapshot(tmp_path / "plain.yaml", DIM, 1, None)
