"""1xx from the origin: ``103 Early Hints`` reaches an HTTP/1.1 client before the final
response (hop-by-hop headers removed); HTTP/1.0 clients get none. The origin is a raw
server: aiohttp's own cannot send a 1xx."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.serve.server import ProxyServer
from tests.support.common import running_proxy, write_config
from tests.support.rawhttp import exchange, raw_server, read_request

EARLY = (
    b"HTTP/1.1 103 Early Hints\r\n"
    b"Link: </style.css>; rel=preload; as=style\r\n"
    b"Connection: X-Hop\r\nX-Hop: 1\r\n\r\n"
)
FINAL = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


async def hinting_origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        line, _, _ = await read_request(reader)
        if not line:
            return
        writer.write(EARLY)
        await writer.drain()
        await asyncio.sleep(0.05)  # the hints go out first, as an origin would send them
        writer.write(FINAL)
        await writer.drain()


@pytest.fixture
async def proxy(tmp_path: Path, redis_url: str) -> AsyncIterator[ProxyServer]:
    async with raw_server(hinting_origin) as port:
        cfg = write_config(tmp_path, f"http://127.0.0.1:{port}", redis_url, "routes: []\n")
        async with running_proxy(cfg) as server:
            yield server


async def test_early_hints_are_relayed(proxy: ProxyServer) -> None:
    for _ in range(2):  # and again on the pooled connection
        resp = await exchange(proxy.port, b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n")
        assert resp.status == 200 and resp.body == b"ok"
        assert len(resp.informational) == 1
        status, headers = resp.informational[0]
        assert status == 103
        assert headers["link"] == "</style.css>; rel=preload; as=style"
        assert "x-hop" not in headers and "connection" not in headers


async def test_http10_clients_get_no_1xx(proxy: ProxyServer) -> None:
    resp = await exchange(proxy.port, b"GET /page HTTP/1.0\r\nHost: x\r\n\r\n")
    assert resp.status == 200 and resp.body == b"ok"
    assert resp.informational == []
