"""The edge Worker in workerd (miniflare, a real process) beside the Python proxy, both in
front of one real origin, with the same routes, committed models and vectors (Valkey for
the proxy, Workers KV for the Worker): the same order and scores, the same arms for
1,000 users, and the origin's bytes for every reason not to re-rank."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import math
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import brotli
import numpy as np
import pytest
import pytest_asyncio
from aiohttp import web

from proxy.routing.arms import bucket
from proxy.serve.server import ProxyServer
from tests.support.common import (
    dot_model,
    running_proxy,
    start_app,
    store_vectors,
    vec,
    wait_until,
)
from tests.support.edge import EdgeProcess, rankgate, running_edge, skip_without_node

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
DIM = 32
USERS = [f"u{k}" for k in range(1000)]
N_ITEMS = 60
MISSING = {f"i{k}" for k in range(50, 60)}  # no vector anywhere
INVALID = {"i48": vec([math.nan] * DIM), "i49": vec([1.0] * (DIM - 1))}  # count as missing
# User vectors that are there but unusable: reason bad-vector, not unknown-user.
# (Both named to land in the default arm: pct-control would answer control first.)
BAD_USERS = {"short": vec([1.0] * (DIM - 1)), "inf": vec([math.inf] * DIM)}
MAX_BODY = 64 * 1024

V1_SHA256 = "d171aceb62e9203fe457a66d66466a1dfe3bcbc85584e077130c9d5435639725"
ROUTES = f"""\
models:
  v1: {{path: {MODELS / "ranker_v1.onnx"}, sha256: "{V1_SHA256}"}}
  v2: {{path: {MODELS / "ranker_v2.onnx"}}}
  nan: {{path: nan.onnx}}
routes:
  - name: feed
    match: {{path: /feed}}
    user: [cookie:uid, header:X-User-Id, query:uid]
    budget_ms: 10000
    model: v1
    experiments:
      - {{name: beta-header, when: {{header: {{X-Beta: "true"}}}}, model: v2}}
      - {{name: beta-cookie, when: {{cookie: {{beta: 1}}}}, model: v2}}
      - {{name: holdout, when: {{query: {{arm: control}}}}, model: none}}
      - {{name: pct, when: {{percent: 30}}, model: v2}}
      - {{name: pct-control, when: {{percent: 50, salt: s2}}, model: none}}
  - name: rules
    match: {{path: "/u/{{name}}/feed", methods: [GET, HEAD]}}
    budget_ms: 10000
    model: v2
    plugins:
      - {{use: sources, from: [header:X-User-Id]}}
      - {{use: pin, field: sponsored}}
      - {{use: filter, field: status, in: [hidden, gone]}}
      - {{use: boost, field: fresh, weight: 0.75}}
      - {{use: annotate, round: 12}}
  - name: nested
    match: {{prefix: /nested/}}
    items: data.children
    item_id: data.id
    user: [header:X-User-Id]
    budget_ms: 10000
    model: v1
  - name: huge-boost
    match: {{path: /huge}}
    budget_ms: 10000
    model: v1
    plugins: [{{use: boost, field: k, weight: 1.0e308}}]
  - {{name: broken, match: {{path: /broken}}, model: nan, budget_ms: 10000}}
  - {{name: tight, match: {{path: /tight}}, model: v1, budget_ms: 0.001}}
  - {{name: kvkey, match: {{path: /kvkey}}, user: [query:uid], model: v1, budget_ms: 10000}}
  - {{name: fail, match: {{prefix: /fail/}}, user: [header:X-User-Id], model: v1, budget_ms: 10000}}
"""


def item(k: int) -> dict[str, Any]:
    return {
        "id": f"i{k}",
        "k": k,
        "title": f"item {k} \u00e9",
        "sponsored": k % 9 == 4,
        "status": "hidden" if k % 13 == 6 else "ok",
        "fresh": (k % 5) / 4,
    }


def feed(n: int = N_ITEMS) -> dict[str, Any]:
    return {"items": [item(k) for k in range(n)], "page": 1}


FEED_HEADERS = {
    "ETag": '"feed-v1"',
    "Cache-Control": "public, max-age=10, s-maxage=60",
    "Vary": "Accept-Encoding",
}

# Bodies that the proxy and the Worker must both pass through, by /fail/NAME.
FAIL: dict[str, tuple[int, dict[str, str], bytes]] = {
    "status": (500, {"Content-Type": "application/json"}, json.dumps(feed(3)).encode()),
    "not-json": (200, {"Content-Type": "text/plain"}, b"plain text"),
    "bad-json": (200, {"Content-Type": "application/json"}, b'{"items": [1, 2'),
    "too-large": (
        200,
        {"Content-Type": "application/json"},
        json.dumps(feed(3) | {"pad": "x" * (MAX_BODY + 10)}).encode(),
    ),
    "encoding": (
        200,
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        b"\x1f\x8b\x08\x00not gzip at all",
    ),
    "zstd": (
        200,
        {"Content-Type": "application/json", "Content-Encoding": "zstd"},
        b"\x28\xb5\x2f\xfdnot json",
    ),
    "items-not-found": (200, {"Content-Type": "application/json"}, b'{"things": []}'),
    "items-not-array": (200, {"Content-Type": "application/json"}, b'{"items": {"a": 1}}'),
    "no-items": (200, {"Content-Type": "application/json"}, b'{"items": []}'),
    "no-item-vectors": (
        200,
        {"Content-Type": "application/json"},
        b'{"items": [{"id": "i55"}, {"id": "nope"}, {"x": 1}]}',
    ),
    "no-ids": (200, {"Content-Type": "application/json"}, b'{"items": [{"x": 1}, {"id": 1.5}]}'),
    "unsafe-number": (
        200,
        {"Content-Type": "application/json"},
        b'{"items": [{"id": "i1", "n": 123456789012345678901234}, {"id": "i2"}]}',
    ),
    "js-unsafe": (
        200,
        {"Content-Type": "application/json"},
        b'{"items": [{"id": "i1", "n": 9007199254740993}, {"id": "i2"}]}',
    ),
    "float-ids": (
        200,
        {"Content-Type": "application/json"},
        b'{"items": [{"id": 1.0}, {"id": "i2"}, {"id": 3}, {"id": "i4"}, {"id": 1e1}]}',
    ),
    "infinite": (
        200,
        {"Content-Type": "application/json"},
        b'{"items": [{"id": "i1", "n": 1e999}]}',
    ),
}


async def origin_handler(request: web.Request) -> web.StreamResponse:
    path = request.path
    query = request.query
    if path.startswith("/fail/"):
        name = path.removeprefix("/fail/")
        status, headers, body = FAIL[name]
        if name == "too-large" and query.get("stream"):
            # No Content-Length: the limit is found while reading.
            resp = web.StreamResponse(status=status, headers=headers)
            await resp.prepare(request)
            for start in range(0, len(body), 8192):
                await resp.write(body[start : start + 8192])
            await resp.write_eof()
            return resp
        return web.Response(status=status, headers=headers, body=body)
    if path == "/redirect":
        raise web.HTTPFound("/feed")
    if path == "/echo":
        return web.json_response(
            {
                "method": request.method,
                "body": (await request.read()).decode(),
                "if_none_match": request.headers.get("If-None-Match"),
                "forwarded_host": request.headers.get("X-Forwarded-Host"),
            }
        )
    if path.startswith("/nested/"):
        children = [{"data": {"id": f"i{k}", "k": k}} for k in range(20)]
        return web.json_response({"data": {"children": children}, "kind": "listing"})
    if request.headers.get("If-None-Match") == FEED_HEADERS["ETag"]:
        return web.Response(status=304, headers={"ETag": FEED_HEADERS["ETag"]})
    n = int(query.get("n", N_ITEMS))
    doc = feed(n)
    if path == "/huge":
        doc["items"][0]["k"] = 1e300
    body = json.dumps(doc).encode()
    headers = {"Content-Type": "application/json; charset=utf-8", **FEED_HEADERS}
    encoding = query.get("enc")
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    elif encoding == "br":
        body = brotli.compress(body)
    if encoding:
        headers["Content-Encoding"] = encoding
    return web.Response(body=body, headers=headers)


@dataclass
class Stack:
    origin: str
    proxy: ProxyServer
    edge: EdgeProcess
    proxy_url: str
    session: aiohttp.ClientSession


def vectors() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(20)
    users = {u: rng.standard_normal(DIM).astype("<f4") for u in USERS}
    items = {f"i{k}": rng.standard_normal(DIM).astype("<f4") for k in range(N_ITEMS)}
    for k in (*MISSING, *INVALID):
        items.pop(k)
    return users, items


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> AsyncIterator[Stack]:
    skip_without_node()
    tmp = tmp_path_factory.mktemp("edge")
    dot_model(tmp / "nan.onnx", dim=DIM, sign=math.nan)
    users, items = vectors()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", origin_handler)
    runner, origin = await start_app(app)
    try:
        import redis

        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        store_vectors(client, users, items)
        for k, raw in INVALID.items():
            client.set(f"emb:item:{k}", raw)
        for u, raw in BAD_USERS.items():
            client.set(f"emb:user:{u}", raw)
        client.close()
        (tmp / "routes.yaml").write_text(ROUTES)
        config = tmp / "rankgate.yaml"
        # A patient Redis timeout: the parity checks must not meet a slow moment of a
        # shared machine (the timeouts have tests of their own).
        config.write_text(
            "listen: {host: 127.0.0.1, port: 0}\n"
            "admin: {host: 127.0.0.1, port: 0}\n"
            f'origin: {{url: "{origin}", connect_timeout_s: 2, timeout_s: 10}}\n'
            f'redis: {{url: "{redis_url}", timeout_ms: 2000}}\n'
            # Absent vectors are not cached, so each request asks the store for them:
            # I/O that a budget of 0.001 ms (route "tight") cannot wait for, in both.
            f"embeddings: {{dim: {DIM}, item_cache: {{missing_ttl_s: 0}}}}\n"
            f"feed: {{max_body_bytes: {MAX_BODY}}}\n"
            "logging: {access_log: false}\n"
            "routes: routes.yaml\n"
        )
        npz = tmp / "vectors.npz"
        np.savez(
            npz,
            user_ids=np.array(list(users)),
            user_vectors=np.stack(list(users.values())),
            item_ids=np.array(list(items)),
            item_vectors=np.stack(list(items.values())),
        )
        built = rankgate("edge", "build", "--config", str(config), "--out", str(tmp / "worker"))
        assert built.returncode == 0, built.stderr
        kv = rankgate("edge", "kv", str(npz), "--config", str(config), "--out", str(tmp / "kv"))
        assert kv.returncode == 0, kv.stderr
        # What `rankgate edge kv` refuses to write, written by hand: invalid values.
        invalid = [
            {"key": f"emb:item:{k}", "value": base64.b64encode(raw).decode()}
            for k, raw in INVALID.items()
        ] + [
            {"key": f"emb:user:{u}", "value": base64.b64encode(raw).decode()}
            for u, raw in BAD_USERS.items()
        ]
        (tmp / "kv" / "zz-invalid.json").write_text(json.dumps(invalid))
        async with (
            running_proxy(config) as proxy,
            running_edge(str(tmp / "worker"), "--kv", str(tmp / "kv"), "--port", "0") as edge,
            # No Accept-Encoding unless a test sends one: workerd's HTTP server (like
            # Cloudflare's edge) re-encodes a response for the client's Accept-Encoding,
            # which would hide the bytes the Worker answered with.
            aiohttp.ClientSession(
                auto_decompress=False, skip_auto_headers=("Accept-Encoding",)
            ) as session,
        ):
            yield Stack(origin, proxy, edge, f"http://127.0.0.1:{proxy.port}", session)
    finally:
        await runner.cleanup()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def ids(self) -> list[str]:
        return [it["id"] for it in self.json()["items"]]


async def get(stack: Stack, base: str, path: str, **kw: Any) -> Answer:
    headers = kw.pop("headers", {})
    method = kw.pop("method", "GET")
    async with stack.session.request(method, base + path, headers=headers, **kw) as resp:
        return Answer(resp.status, dict(resp.headers), await resp.read())


async def both(stack: Stack, path: str, **kw: Any) -> tuple[Answer, Answer]:
    proxy = await get(stack, stack.proxy_url, path, **kw)
    edge = await get(stack, stack.edge.url, path, **kw)
    return proxy, edge


def same_headers(proxy: Answer, edge: Answer) -> None:
    for name in ("X-Rerank", "Vary", "Cache-Control", "ETag", "Content-Type"):
        assert proxy.headers.get(name) == edge.headers.get(name), name


# -- the same answers ------------------------------------------------------------------


async def test_same_order_as_the_proxy_for_every_arm(stack: Stack) -> None:
    variants: list[dict[str, Any]] = [
        {},
        {"headers": {"X-Beta": "true"}},
        {"cookies": {"beta": "1"}},
    ]
    applied = 0
    for user in USERS[:40]:
        for variant in variants:
            kw = {**variant, "headers": {"X-User-Id": user, **variant.get("headers", {})}}
            proxy, edge = await both(stack, "/feed", **kw)
            assert proxy.status == edge.status == 200
            same_headers(proxy, edge)
            assert edge.ids == proxy.ids, (user, variant, proxy.headers["X-Rerank"])
            applied += proxy.headers["X-Rerank"].startswith("applied")
            assert "ETag" not in edge.headers or not edge.headers["X-Rerank"].startswith("applied")
    assert applied > 60  # most requests were re-ranked, by v1 and v2


async def test_scores_and_rules_match_within_1e_5(stack: Stack) -> None:
    for user in USERS[:25]:
        proxy, edge = await both(stack, f"/u/{user}/feed", headers={"X-User-Id": user})
        assert (
            proxy.headers["X-Rerank"]
            == edge.headers["X-Rerank"]
            == ("applied; model=v2; arm=default")
        )
        same_headers(proxy, edge)
        assert edge.ids == proxy.ids
        p_items, e_items = proxy.json()["items"], edge.json()["items"]
        assert len(e_items) < N_ITEMS  # filter dropped the hidden ones
        for p, e in zip(p_items, e_items, strict=True):
            assert ("_score" in p) == ("_score" in e)
            if "_score" in p:
                assert abs(p["_score"] - e["_score"]) <= 1e-5
            assert {k: v for k, v in p.items() if k != "_score"} == {
                k: v for k, v in e.items() if k != "_score"
            }
        # pinned items kept their index, or one at the end when drops made it too short
        # (fixed: pinned by the rule, or unscored: no vector)
        fixed = [
            (slot, it["k"])
            for slot, it in enumerate(e_items)
            if it["sponsored"] or "_score" not in it
        ]
        slots = [slot for slot, _ in fixed]
        pinned = [k for _, k in fixed]
        n = len(e_items)
        assert slots == [min(k, n - len(pinned) + j) for j, k in enumerate(pinned)]


async def test_nested_items_and_path_kinds(stack: Stack) -> None:
    for user in USERS[:10]:
        proxy, edge = await both(stack, "/nested/anything", headers={"X-User-Id": user})
        assert edge.headers["X-Rerank"] == proxy.headers["X-Rerank"]
        assert edge.json() == proxy.json()
        assert edge.json()["kind"] == "listing"


async def test_arms_match_the_proxy_for_1000_users(stack: Stack) -> None:
    limit = asyncio.Semaphore(16)

    async def arm(base: str, user: str) -> str:
        async with limit:
            answer = await get(stack, base, f"/feed?n=4&uid={user}")
        return answer.headers["X-Rerank"]

    proxy = await asyncio.gather(*(arm(stack.proxy_url, u) for u in USERS))
    edge = await asyncio.gather(*(arm(stack.edge.url, u) for u in USERS))
    assert edge == proxy
    # And both are the documented hash: salt "feed:pct" (route:arm), then "s2".
    expected = []
    for user in USERS:
        if bucket("feed:pct", user) < 30:
            expected.append("applied; model=v2; arm=pct")
        elif bucket("s2", user) < 50:
            expected.append("skipped; reason=control; model=none; arm=pct-control")
        else:
            expected.append("applied; model=v1; arm=default")
    assert edge == expected
    assert len(set(edge)) == 3


# -- the origin's bytes ----------------------------------------------------------------


FAIL_CASES = [
    ("/fail/status", "status"),
    ("/fail/not-json", "not-json"),
    ("/fail/bad-json", "bad-json"),
    ("/fail/too-large", "too-large"),
    ("/fail/too-large?stream=1", "too-large"),
    ("/fail/encoding", "encoding"),
    ("/fail/zstd", "encoding"),
    ("/fail/items-not-found", "items-not-found"),
    ("/fail/items-not-array", "items-not-found"),
    ("/fail/no-items", "no-items"),
    ("/fail/no-item-vectors", "no-item-vectors"),
    ("/fail/no-ids", "no-item-ids"),
    ("/feed", "no-user"),
    ("/feed?uid=nobody", "unknown-user"),
    ("/feed?uid=short", "bad-vector"),
    ("/feed?uid=inf", "bad-vector"),
    ("/feed?uid=u1&arm=control", "control; model=none; arm=holdout"),
    ("/broken?X=1", "model-error"),
    ("/huge", "plugin-error; plugin=boost"),
    ("/tight", "budget"),
]


def user_for(path: str) -> dict[str, str]:
    # A user by header, unless the case is about the user.
    return {} if path.startswith("/feed") else {"X-User-Id": "u1"}


@pytest.mark.parametrize(("path", "reason"), FAIL_CASES)
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # /huge, in numpy
async def test_fail_open_serves_the_origin_bytes(stack: Stack, path: str, reason: str) -> None:
    headers = user_for(path)
    origin = await get(stack, stack.origin, path, headers=headers)
    proxy, edge = await both(stack, path, headers=headers)
    label = f"skipped; reason={reason}"
    assert proxy.headers["X-Rerank"] == edge.headers.get("X-Rerank") == label, edge
    assert edge.status == origin.status
    assert edge.body == origin.body
    assert edge.headers.get("Content-Encoding") == origin.headers.get("Content-Encoding")
    assert edge.headers.get("ETag") == origin.headers.get("ETag")  # not re-ranked: kept
    assert edge.headers["Vary"] == proxy.headers["Vary"]


@pytest.mark.parametrize(
    ("name", "reason"), [("infinite", "bad-json"), ("unsafe-number", "unsafe-number")]
)
async def test_numbers_the_worker_cannot_keep_are_spliced_by_the_proxy(
    stack: Stack, name: str, reason: str
) -> None:
    # The proxy splices the items' own bytes (a route whose rules read no fields): every
    # number is served as the origin wrote it. The Worker re-serializes, so it must skip.
    body = FAIL[name][2]
    proxy, edge = await both(stack, f"/fail/{name}", headers={"X-User-Id": "u1"})
    assert proxy.headers["X-Rerank"].startswith("applied")
    first = body[body.index(b"[") + 1 : body.index(b"}") + 1]
    assert first in proxy.body
    assert edge.headers["X-Rerank"] == f"skipped; reason={reason}"
    assert edge.body == body


async def test_head_is_passed_with_the_origin_headers(stack: Stack) -> None:
    headers = {"X-User-Id": "u1"}
    origin = await get(stack, stack.origin, "/u/u1/feed", method="HEAD", headers=headers)
    proxy, edge = await both(stack, "/u/u1/feed", method="HEAD", headers=headers)
    assert proxy.headers["X-Rerank"] == edge.headers["X-Rerank"] == "skipped; reason=method"
    assert edge.body == b"" and edge.status == 200
    assert edge.headers["Content-Length"] == origin.headers["Content-Length"]


async def test_edge_only_reasons_still_serve_the_origin_bytes(stack: Stack) -> None:
    # A KV key over KV's 512-byte limit: KV fails (the proxy's Redis just has no such key).
    uid = "%E2%82%AC" * 200
    origin = await get(stack, stack.origin, f"/kvkey?uid={uid}")
    proxy, edge = await both(stack, f"/kvkey?uid={uid}")
    assert proxy.headers["X-Rerank"] == "skipped; reason=unknown-user"
    assert edge.headers["X-Rerank"] == "skipped; reason=kv-error"
    assert edge.body == origin.body
    await wait_until(lambda: stack.edge.events("kv-error"))  # logged, with KV's words
    # An integer JavaScript cannot hold (2^53 < n < 2^64): the proxy keeps it exactly.
    body = FAIL["js-unsafe"][2]
    proxy, edge = await both(stack, "/fail/js-unsafe", headers={"X-User-Id": "u1"})
    assert proxy.headers["X-Rerank"].startswith("applied")
    assert b"9007199254740993" in proxy.body
    assert edge.headers["X-Rerank"] == "skipped; reason=unsafe-number"
    assert edge.body == body


async def test_ids_written_as_floats_are_not_ids_in_both(stack: Stack) -> None:
    # orjson reads 1.0 and 1e1 as floats, not ids: unscored, they keep their slots
    proxy, edge = await both(stack, "/fail/float-ids", headers={"X-User-Id": "u5"})
    assert proxy.headers["X-Rerank"] == edge.headers["X-Rerank"] == "applied; model=v1; arm=default"
    assert edge.json() == proxy.json()
    assert edge.json()["items"][0]["id"] == 1.0


# -- encodings, pass-through -----------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
async def test_compressed_feeds_are_reranked_and_encoded_back(stack: Stack, encoding: str) -> None:
    decode = {"gzip": gzip.decompress, "deflate": zlib.decompress, "br": brotli.decompress}[
        encoding
    ]
    headers = {"X-User-Id": "u3"}
    proxy, edge = await both(stack, f"/feed?enc={encoding}", headers=headers)
    assert edge.headers["X-Rerank"] == proxy.headers["X-Rerank"] == "applied; model=v1; arm=default"
    assert edge.headers["Content-Encoding"] == encoding
    assert json.loads(decode(edge.body)) == json.loads(decode(proxy.body))


async def test_conditional_request_with_a_user_gets_a_full_answer(stack: Stack) -> None:
    headers = {"If-None-Match": FEED_HEADERS["ETag"]}
    anonymous = await get(stack, stack.edge.url, "/feed", headers=headers)
    assert anonymous.status == 304  # no user: passed through as it is
    proxy, edge = await both(stack, "/feed", headers={**headers, "X-User-Id": "u2"})
    assert proxy.status == edge.status == 200
    assert edge.ids == proxy.ids


async def test_other_paths_pass_through_untouched(stack: Stack) -> None:
    origin = await get(stack, stack.origin, "/echo?x=1")
    edge = await get(stack, stack.edge.url, "/echo?x=1")
    assert edge.status == origin.status == 200
    assert edge.json() | {"forwarded_host": None} == origin.json()
    redirect = await get(stack, stack.edge.url, "/redirect", allow_redirects=False)
    assert redirect.status == 302 and redirect.headers["Location"] == "/feed"
    echo = await get(stack, stack.edge.url, "/echo", method="POST", data=b"hello")
    assert echo.json()["method"] == "POST" and echo.json()["body"] == "hello"
    # the host the client asked for, now that the request goes to another one
    assert echo.json()["forwarded_host"] == stack.edge.url.removeprefix("http://")
    assert "X-Rerank" not in echo.headers and "X-Rerank" not in edge.headers
