"""Request targets: absolute-form served from its path and never from the host it names
(no SSRF), CONNECT refused, and no request line the parser accepts ends in a 500 or a
traceback."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from proxy.outcome.record import RequestRecord
from proxy.serve.server import ProxyServer
from tests.support.common import running_proxy, start_app, write_config
from tests.support.rawhttp import exchange


def recording_app(seen: list[str]) -> web.Application:
    async def any_path(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.Response(text=request.raw_path)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", any_path)
    return app


@pytest.fixture
async def env(
    tmp_path: Path, redis_url: str
) -> AsyncIterator[tuple[ProxyServer, list[str], list[str], str, list[RequestRecord]]]:
    origin_seen: list[str] = []
    other_seen: list[str] = []
    origin_runner, origin = await start_app(recording_app(origin_seen))
    other_runner, other = await start_app(recording_app(other_seen))
    cfg = write_config(tmp_path, origin, redis_url, "models: {}\nroutes: []\n")
    async with running_proxy(cfg) as proxy:
        records: list[RequestRecord] = []
        proxy.runtime.observers.append(records.append)
        yield proxy, origin_seen, other_seen, other.removeprefix("http://"), records
    await origin_runner.cleanup()
    await other_runner.cleanup()


def request(line: str) -> bytes:
    return f"{line}\r\nHost: front.example\r\nConnection: close\r\n\r\n".encode("latin-1")


@pytest.mark.parametrize(
    ("target", "upstream"),
    [
        ("/secret?x=1", "/secret?x=1"),
        ("http://{other}/secret?x=1", "/secret?x=1"),
        ("https://{other}/a/b", "/a/b"),
        ("HTTP://{other}/Upper", "/Upper"),
        ("http://{other}", "/"),
        ("http://{other}?q=1", "/?q=1"),
        ("http://user:pw@{other}/creds", "/creds"),
        ("http://[::1]:1/v6", "/v6"),
        ("http://{other}//double", "//double"),
    ],
)
async def test_absolute_form_is_served_from_its_path_only(env, target: str, upstream: str) -> None:
    proxy, origin_seen, other_seen, other, records = env
    resp = await exchange(proxy.port, request(f"GET {target.format(other=other)} HTTP/1.1"))
    assert resp.status == 200
    assert origin_seen == [upstream] and resp.body == upstream.encode()
    assert other_seen == [], "the host named in the target was contacted"
    assert records[0].outcome == "passthrough"


async def test_connect_is_refused(env) -> None:
    proxy, origin_seen, other_seen, other, records = env
    resp = await exchange(proxy.port, request(f"CONNECT {other} HTTP/1.1"))
    assert resp.status == 405
    assert "CONNECT" not in resp.headers["allow"] and "GET" in resp.headers["allow"]
    assert resp.headers["connection"] == "close"
    assert b"no tunnels" in resp.body
    assert origin_seen == [] and other_seen == []
    assert (records[0].outcome, records[0].reason, records[0].status) == ("local", "connect", 405)


async def test_asterisk_form(env) -> None:
    proxy, origin_seen, *_ = env
    resp = await exchange(proxy.port, request("OPTIONS * HTTP/1.1"))
    assert resp.status == 200 and resp.body == b""
    assert (await exchange(proxy.port, request("GET * HTTP/1.1"))).status == 400
    assert origin_seen == []


async def test_other_schemes_are_400(env) -> None:
    proxy, origin_seen, *_ = env
    resp = await exchange(proxy.port, request("GET ftp://x/y HTTP/1.1"))
    assert resp.status == 400 and b"http(s) URL" in resp.body
    assert origin_seen == []


METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "PROPFIND"]
TARGETS = [
    "/",
    "/a?b=c&d",
    "//x//y",
    "/%zz/%00",
    "/a#frag",
    "/;p?q#f",
    "*",
    "http://h/x",
    "https://h:1/x?y",
    "http://h",
    "http://h?q",
    "http://h#f",
    "ftp://h/x",
    "mailto:x@y",
    "http://u:p@h/x",
    "http://[::1]/v6",
    "http:///x",
    "h:443",
    "/" + "a" * 8000,  # under the test origin's own line limit
    "/caf\u00e9",
    "/\x7f",
]


async def test_no_request_line_the_parser_accepts_ends_in_500(
    env, caplog: pytest.LogCaptureFixture
) -> None:
    proxy, origin_seen, other_seen, *_ = env
    caplog.set_level(logging.DEBUG)
    statuses = set()
    for method in [*METHODS, "CONNECT"]:
        for target in TARGETS:
            for version in ("HTTP/1.1", "HTTP/1.0"):
                line = f"{method} {target} {version}"
                resp = await exchange(proxy.port, request(line))
                assert resp.status < 500, (line[:80], resp.status, resp.body[:200])
                statuses.add(resp.status)
    assert {200, 400, 405} <= statuses
    assert all(path.startswith("/") for path in origin_seen)
    assert other_seen == []
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not loud, [r.getMessage() for r in loud[:5]]
