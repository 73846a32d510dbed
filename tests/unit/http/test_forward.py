"""Pass-through is faithful: a real origin, the proxy, and real sockets in between."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from yarl import URL

from proxy.serve.server import ProxyServer
from tests.support.common import running_proxy, start_app, write_config

BIG = os.urandom(10 * 1024 * 1024)


def origin_app(state: dict[str, object]) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.raw_path,
                "headers": {k: v for k, v in request.headers.items()},
                "body_sha": hashlib.sha256(body).hexdigest(),
                "body_len": len(body),
            }
        )

    async def upload(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        chunks = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
            chunks += 1
        return web.json_response({"sha": digest.hexdigest(), "size": size, "chunks": chunks})

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_type = "text/plain"
        await resp.prepare(request)
        for i in range(3):
            await resp.write(f"part{i}\n".encode())
            await asyncio.sleep(0.3 if i == 0 else 0.05)
        await resp.write_eof()
        return resp

    async def late_body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_type = "text/plain"
        await resp.prepare(request)
        await asyncio.sleep(0.5)  # the headers went out with prepare(); the body waits
        await resp.write(b"late")
        await resp.write_eof()
        return resp

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            while True:
                await resp.write(b"x" * 65536)
                await asyncio.sleep(0.01)
        except (ConnectionResetError, asyncio.CancelledError):
            state["endless_closed"] = True
            raise
        return resp

    async def gz(request: web.Request) -> web.Response:
        payload = gzip.compress(b'{"hello": "world"}' * 100)
        return web.Response(
            body=payload,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        if code in (204, 304):
            return web.Response(status=code, headers={"X-Status": str(code)})
        return web.Response(status=code, text=f"status {code}")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    async def etag(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"'})
        return web.Response(text="fresh", headers={"ETag": '"v1"'})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def hop(request: web.Request) -> web.Response:
        return web.Response(
            text="ok",
            headers={
                "Connection": "X-Secret",
                "X-Secret": "1",
                "Keep-Alive": "timeout=5",
                "Proxy-Authenticate": "Basic",
                "X-Kept": "yes",
                "Set-Cookie": "a=1",
            },
        )

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=BIG, content_type="application/octet-stream")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/echo{tail:.*}", echo)
    app.router.add_post("/upload", upload)
    app.router.add_get("/stream", stream)
    app.router.add_get("/late-body", late_body)
    app.router.add_get("/endless", endless)
    app.router.add_get("/gzip", gz)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/etag", etag)
    app.router.add_get("/slow", slow)
    app.router.add_get("/hop", hop)
    app.router.add_get("/big", big)
    return app


@pytest.fixture
async def env(
    tmp_path: Path, redis_url: str
) -> AsyncIterator[tuple[ProxyServer, dict[str, object]]]:
    state: dict[str, object] = {}
    runner, origin = await start_app(origin_app(state))
    cfg = write_config(tmp_path, origin, redis_url, "models: {}\nroutes: []\n")
    async with running_proxy(cfg) as proxy:
        yield proxy, state
    await runner.cleanup()


def url(proxy: ProxyServer, path: str) -> str:
    return f"http://127.0.0.1:{proxy.port}{path}"


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_methods_query_and_body(env, client, method: str) -> None:
    proxy, _ = env
    body = b"payload" if method not in ("GET", "OPTIONS") else b""
    target = URL(url(proxy, "/echo/a%20b?x=1&y=%2F"), encoded=True)
    async with client.request(method, target, data=body) as resp:
        assert resp.status == 200
        got = await resp.json()
    assert got["method"] == method
    assert got["path"] == "/echo/a%20b?x=1&y=%2F"
    assert got["body_len"] == len(body)


async def test_forwarding_headers(env, client) -> None:
    proxy, _ = env
    headers = {
        "X-Forwarded-For": "10.0.0.1",
        "X-Custom": "v",
        "Connection": "X-Drop",
        "X-Drop": "1",
        "TE": "trailers",
        "Upgrade": "h2c",
        "Proxy-Authorization": "secret",
    }
    async with client.get(url(proxy, "/echo"), headers=headers) as resp:
        got = (await resp.json())["headers"]
    assert got["X-Forwarded-For"] == "10.0.0.1, 127.0.0.1"
    assert got["X-Forwarded-Proto"] == "http"
    assert got["X-Forwarded-Host"] == f"127.0.0.1:{proxy.port}"
    assert got["Via"] == "1.1 rankgate"
    assert got["X-Custom"] == "v"
    # The origin's own host by default.
    assert got["Host"] == proxy.settings.origin.url.split("//", 1)[1]
    for hop in ("X-Drop", "TE", "Upgrade", "Proxy-Authorization"):
        assert hop not in got
    # No defaults of our own: the client sent no Accept-Encoding or User-Agent... aiohttp's
    # test client does send them, so check they are the client's values, unchanged.
    assert got.get("Accept-Encoding") == "gzip, deflate" or "Accept-Encoding" in got


async def test_no_accept_encoding_added(env) -> None:
    proxy, _ = env
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    raw = await reader.read()
    writer.close()
    body = raw.split(b"\r\n\r\n", 1)[1]
    got = orjson.loads(body)["headers"]
    assert "Accept-Encoding" not in got
    assert "User-Agent" not in got


async def _raw_echo(proxy: ProxyServer, head: bytes) -> list[tuple[str, str]]:
    """The headers the origin saw, in order, for a request sent as ``head`` (kept alive:
    no Connection header of the client's)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(head)
    await writer.drain()
    status = await reader.readuntil(b"\r\n\r\n")
    length = int(status.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    body = await reader.readexactly(length)
    writer.close()
    return list(orjson.loads(body)["headers"].items())


async def test_forwarding_headers_in_order(env) -> None:
    """Without forwarding headers of the client's, ours are appended; with them, the
    ones that came are replaced where they stand (and Via, X-Forwarded-For appended to)."""
    proxy, _ = env
    origin_host = proxy.settings.origin.url.split("//", 1)[1]
    plain = b"GET /echo HTTP/1.1\r\nHost: h\r\nX-B: 2\r\nAccept: a\r\nX-A: 1\r\n\r\n"
    assert await _raw_echo(proxy, plain) == [
        ("Host", origin_host),
        ("X-B", "2"),
        ("Accept", "a"),
        ("X-A", "1"),
        ("X-Forwarded-For", "127.0.0.1"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "h"),
        ("Via", "1.1 rankgate"),
    ]
    relayed = (
        b"GET /echo HTTP/1.1\r\nHost: h\r\nX-B: 2\r\nvia: 1.0 cdn\r\nAccept: a\r\n"
        b"X-Forwarded-Proto: https\r\nX-A: 1\r\n\r\n"
    )
    assert await _raw_echo(proxy, relayed) == [
        ("Host", origin_host),
        ("X-B", "2"),
        ("Via", "1.0 cdn, 1.1 rankgate"),
        ("Accept", "a"),
        ("X-Forwarded-Proto", "http"),
        ("X-A", "1"),
        ("X-Forwarded-For", "127.0.0.1"),
        ("X-Forwarded-Host", "h"),
    ]


async def test_upload_10mib_streamed(env, client) -> None:
    proxy, _ = env

    async def gen() -> AsyncIterator[bytes]:
        for i in range(0, len(BIG), 256 * 1024):
            yield BIG[i : i + 256 * 1024]

    async with client.post(url(proxy, "/upload"), data=gen()) as resp:
        got = await resp.json()
    assert got["size"] == len(BIG)
    assert got["sha"] == hashlib.sha256(BIG).hexdigest()
    assert got["chunks"] > 1  # arrived in pieces, not as one buffered blob


async def test_download_big_byte_for_byte(env, client) -> None:
    proxy, _ = env
    async with client.get(url(proxy, "/big")) as resp:
        data = await resp.read()
        assert resp.headers["Content-Length"] == str(len(BIG))
    assert data == BIG


async def test_streamed_response_arrives_as_sent(env, client) -> None:
    proxy, _ = env
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with client.get(url(proxy, "/stream")) as resp:
        first = await resp.content.readline()
        first_at = loop.time() - start
        rest = await resp.read()
        total = loop.time() - start
    assert first == b"part0\n"
    assert rest == b"part1\npart2\n"
    # The first chunk is delivered before the origin has finished (it pauses 0.3 s).
    assert first_at < total - 0.2


async def test_headers_do_not_wait_for_a_late_body(env, client) -> None:
    """Headers are held back to go out with body bytes only when those are already
    here: an origin that sends its headers and then thinks has them passed on at once."""
    proxy, _ = env
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with client.get(url(proxy, "/late-body")) as resp:
        headers_at = loop.time() - start
        body = await resp.read()
        total = loop.time() - start
    assert resp.status == 200 and body == b"late"
    assert headers_at < total - 0.3, (headers_at, total)


async def test_gzip_passed_compressed(env, client) -> None:
    proxy, _ = env
    async with client.get(url(proxy, "/gzip"), headers={"Accept-Encoding": "gzip"}) as resp:
        raw = await resp.read()
        assert resp.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(raw) == b'{"hello": "world"}' * 100


@pytest.mark.parametrize("code", [200, 201, 204, 304, 400, 404, 418, 500, 503])
async def test_status_codes(env, client, code: int) -> None:
    proxy, _ = env
    async with client.get(url(proxy, f"/status/{code}")) as resp:
        assert resp.status == code
        body = await resp.read()
    if code in (204, 304):
        assert body == b""
    else:
        assert body == f"status {code}".encode()


async def test_head(env, client) -> None:
    proxy, _ = env
    async with client.head(url(proxy, "/big")) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(BIG))
        assert await resp.read() == b""


async def test_conditional_304(env, client) -> None:
    proxy, _ = env
    async with client.get(url(proxy, "/etag"), headers={"If-None-Match": '"v1"'}) as resp:
        assert resp.status == 304
        assert resp.headers["ETag"] == '"v1"'


async def test_redirect_passed_not_followed(env, client) -> None:
    proxy, _ = env
    async with client.get(url(proxy, "/redirect"), allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "/elsewhere"


async def test_hop_by_hop_removed_from_response(env, client) -> None:
    proxy, _ = env
    async with client.get(url(proxy, "/hop")) as resp:
        assert resp.headers["X-Kept"] == "yes"
        assert resp.headers["Set-Cookie"] == "a=1"
        assert "X-Secret" not in resp.headers
        assert "Keep-Alive" not in resp.headers
        assert "Proxy-Authenticate" not in resp.headers


async def test_origin_down_is_502(tmp_path: Path, redis_url: str, client) -> None:
    cfg = write_config(tmp_path, "http://127.0.0.1:9", redis_url, "routes: []\n")
    async with running_proxy(cfg) as proxy, client.get(url(proxy, "/x")) as resp:
        assert resp.status == 502
        assert (await resp.json())["error"] == "origin-unreachable"


async def test_origin_slow_is_504(env, client) -> None:
    proxy, _ = env
    async with client.get(url(proxy, "/slow")) as resp:
        assert resp.status == 504
        assert (await resp.json())["error"] == "origin-timeout"


async def test_client_disconnect_frees_upstream(env) -> None:
    proxy, state = env
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await reader.read(200_000)
    writer.close()
    for _ in range(100):
        if state.get("endless_closed"):
            break
        await asyncio.sleep(0.05)
    assert state.get("endless_closed"), "the origin kept sending to a client that left"
