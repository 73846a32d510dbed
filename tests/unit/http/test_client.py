"""The origin request's cheap header steps send what aiohttp's own request sends: the
same header lines, byte for byte and in order, read off a real socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from multidict import CIMultiDict

from proxy.http.client import OriginRequest

SKIP = ("User-Agent", "Accept-Encoding", "Content-Type")


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A raw HTTP/1.1 server on 127.0.0.1: keeps each request's head, answers 204."""
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            heads.append(head)
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", heads
    finally:
        server.close()
        await server.wait_closed()


async def _head(
    url: str, heads: list[bytes], request_class: type[aiohttp.ClientRequest], headers: object
) -> bytes:
    async with (
        aiohttp.ClientSession(
            skip_auto_headers=SKIP, request_class=request_class, auto_decompress=False
        ) as session,
        session.get(url + "/p?q=1", headers=headers, data=None) as response,
    ):
        assert response.status == 204
    return heads.pop()


@pytest.mark.parametrize(
    "headers",
    [
        [("X-User-Id", "u1"), ("Via", "1.1 rankgate")],
        [("Accept", "text/html"), ("Cookie", "a=1"), ("Cookie", "b=2"), ("x-lower", "v")],
        [("X-A", "1"), ("Host", "shop.example"), ("X-B", "2")],  # origin.host_header set
        [("User-Agent", "curl/8"), ("Accept-Encoding", "br"), ("Content-Type", "a/b")],
        [],
    ],
)
async def test_origin_request_sends_what_aiohttp_sends(
    recorder: tuple[str, list[bytes]], headers: list[tuple[str, str]]
) -> None:
    url, heads = recorder
    ours = await _head(url, heads, OriginRequest, CIMultiDict(headers))
    theirs = await _head(url, heads, aiohttp.ClientRequest, CIMultiDict(headers))
    assert ours == theirs
    assert ours.startswith(b"GET /p?q=1 HTTP/1.1\r\nHost: ")
    for name, value in headers:
        assert f"\r\n{name}: {value}\r\n".encode() in ours
