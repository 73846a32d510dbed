"""rankgate against a real three-node Valkey cluster, beside the same data on one node:
the same served order, and plugins' Redis calls (``ctx.command``, ``ctx.redis``) working
on the cluster. The class below is loaded by the proxy as ``tests.e2e.test_cluster_e2e:NAME``.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pytest
import redis

from plugins import FeedContext
from proxy.config.keys import KeyTemplate
from proxy.serve.server import ProxyServer
from tests.support.clusters import ValkeyCluster
from tests.support.common import (
    DIM,
    dot_model,
    dot_order,
    feed_origin,
    proxy_get,
    running_proxy,
    start_app,
)

N_ITEMS = 40
RNG = np.random.default_rng(5)
USERS = {f"u{k}": RNG.standard_normal(DIM).astype("<f4") for k in range(12)}
ITEMS = {f"i{k}": RNG.standard_normal(DIM).astype("<f4") for k in range(N_ITEMS)}
ITEM_KEY = "emb:item:{b{bucket}}:{id}"
HERE = "tests.e2e.test_cluster_e2e"

ROUTES = f"""\
models:
  dot: {{path: dot.onnx}}
routes:
  - {{name: feed, match: {{path: /api/feed}}, model: dot, budget_ms: 500}}
  - name: seen
    match: {{path: /api/seen}}
    model: dot
    budget_ms: 500
    plugins: [{{use: filter, redis_set: "seen:{{user}}"}}]
  - name: seen-client
    match: {{path: /api/seen-client}}
    model: dot
    budget_ms: 500
    plugins: [{{use: "{HERE}:SeenViaClient"}}]
"""


class SeenViaClient:
    """Drops the user's seen items, read with redis-py's full API (``ctx.redis``)."""

    async def prefetch(self, ctx: FeedContext) -> None:
        assert ctx.redis is not None
        members = await ctx.redis.smembers(f"seen:{ctx.user_id}")  # type: ignore[misc]
        ctx.state[self] = {m.decode() for m in members}

    def rerank(self, ctx: FeedContext) -> None:
        seen = ctx.state.get(self, set())
        ctx.dropped |= np.array([i in seen for i in ctx.ids], dtype=bool)


REPO = Path(__file__).resolve().parents[2]


def write_cluster_config(tmp: Path, origin: str, redis_url: str, extra: str = "") -> Path:
    (tmp / "routes.yaml").write_text(ROUTES)
    dot_model(tmp / "dot.onnx")
    cfg = tmp / "rankgate.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""\
            listen: {{host: 127.0.0.1, port: 0}}
            admin: {{host: 127.0.0.1, port: 0}}
            origin: {{url: "{origin}", connect_timeout_s: 1, timeout_s: 2}}
            redis: {{url: "{redis_url}", timeout_ms: 200}}
            embeddings:
              dim: {DIM}
              item_key: "{ITEM_KEY}"
              item_buckets: 16
              item_cache: {{max_items: 0}}
            routes: routes.yaml
            routes_watch: false
            plugins: {{paths: ['{REPO}']}}  # this module's plugin classes
            """
        )
        + extra
    )
    return cfg


def seed(client: redis.Redis | redis.RedisCluster) -> None:
    template = KeyTemplate(ITEM_KEY, 16)
    pipe = client.pipeline(transaction=False)
    for user, v in USERS.items():
        pipe.set(f"emb:user:{user}", v.tobytes())
    for item, v in ITEMS.items():
        pipe.set(template.key(item), v.tobytes())
    pipe.set("emb:user:nobody-items", USERS["u0"].tobytes())
    pipe.execute()


@dataclass
class Pair:
    single: ProxyServer
    cluster: ProxyServer
    valkey: ValkeyCluster


@pytest.fixture
async def pair(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis, cluster: ValkeyCluster
) -> AsyncIterator[Pair]:
    runner, origin = await start_app(feed_origin(N_ITEMS))
    seed(redis_db)
    with cluster.client() as client:
        seed(client)
    (tmp_path / "one").mkdir()
    (tmp_path / "three").mkdir()
    one = write_cluster_config(tmp_path / "one", origin, redis_url)
    three = write_cluster_config(tmp_path / "three", origin, cluster.url)
    try:
        async with running_proxy(one) as single, running_proxy(three) as clustered:
            yield Pair(single, clustered, cluster)
    finally:
        await runner.cleanup()


async def served(proxy: ProxyServer, path: str, user: str) -> tuple[str, list[str]]:
    resp, body = await proxy_get(proxy, path, user=user)
    return resp.headers["X-Rerank"], [it["id"] for it in orjson.loads(body)["items"]]


async def test_same_order_as_one_node(pair: Pair) -> None:
    users = [user for user in USERS]
    homes = {pair.valkey.primary_for(f"emb:user:{u}").port for u in users}
    assert len(homes) == 3  # the users live on every node
    for user in users:
        one = await served(pair.single, "/api/feed", user)
        three = await served(pair.cluster, "/api/feed", user)
        assert one[0].startswith("applied") and three[0].startswith("applied")
        assert three[1] == one[1] == dot_order(USERS[user], ITEMS)
    link = pair.cluster.runtime.embeddings.link
    assert type(link).__name__ == "ClusterLink"


async def test_unknown_user_on_a_cluster(pair: Pair) -> None:
    header, ids = await served(pair.cluster, "/api/feed", "no-such-user")
    assert header == "skipped; reason=unknown-user"
    assert ids == list(ITEMS)


@pytest.mark.parametrize("path", ["/api/seen", "/api/seen-client"])
async def test_seen_set_filter_on_a_cluster(pair: Pair, path: str) -> None:
    """The filter plugin's SMISMEMBER (ctx.command) and a plugin using ctx.redis, with
    the users' sets on every node of the cluster."""
    seen = {user: {f"i{k}" for k in range(n, N_ITEMS, 7)} for n, user in enumerate(USERS)}
    with pair.valkey.client() as client:
        for user, items in seen.items():
            client.sadd(f"seen:{user}", *items)
    for user, items in seen.items():
        header, ids = await served(pair.cluster, path, user)
        assert header.startswith("applied"), header
        assert ids == [i for i in dot_order(USERS[user], ITEMS) if i not in items]
