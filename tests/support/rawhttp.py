"""Raw HTTP/1.1 over real sockets, for clients that must misbehave (stall, never read,
send odd request lines) and for origins that send what aiohttp's server will not (1xx,
a body cut short)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes = b""
    # 1xx answers that came before this one, as (status, headers).
    informational: list[tuple[int, dict[str, str]]] = field(default_factory=list)


async def read_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    line = await reader.readline()
    if not line:
        raise EOFError("connection closed before a status line")
    _, status, *reason = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        name, _, value = h.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status), reason[0] if reason else "", headers


async def read_response(reader: asyncio.StreamReader, head_request: bool = False) -> Response:
    """One response (with the 1xx before it); the body by Content-Length, or to EOF."""
    informational: list[tuple[int, dict[str, str]]] = []
    while True:
        status, reason, headers = await read_head(reader)
        if 100 <= status < 200:
            informational.append((status, headers))
            continue
        break
    if head_request or status in (204, 304):
        body = b""
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read()
    return Response(status, reason, headers, body, informational)


@contextlib.asynccontextmanager
async def connect(
    port: int, rcvbuf: int | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A client connection; ``rcvbuf`` shrinks its receive buffer (a slow reader)."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def exchange(port: int, raw: bytes, limit_s: float = 5.0) -> Response:
    """Send ``raw`` on a fresh connection and read one response."""
    async with connect(port) as (reader, writer), asyncio.timeout(limit_s):
        writer.write(raw)
        await writer.drain()
        return await read_response(reader, raw.startswith(b"HEAD "))


async def closed_within(reader: asyncio.StreamReader, limit_s: float) -> bytes:
    """Everything the peer sends until it closes; fails if it is still open after
    ``limit_s``."""
    async with asyncio.timeout(limit_s):
        return await reader.read()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 port 0 running ``handler`` per connection; its port."""

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(run, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    """One request an origin receives: (request line, headers, body by Content-Length)."""
    line = (await reader.readline()).decode("latin-1").rstrip("\r\n")
    headers: dict[str, str] = {}
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        name, _, value = h.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    n = int(headers.get("content-length", "0"))
    body = await reader.readexactly(n) if n else b""
    return line, headers, body
