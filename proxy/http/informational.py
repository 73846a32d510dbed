"""1xx answers from the origin (``103 Early Hints``, ``102 Processing``) relayed to the
client before the final response.

aiohttp's client reads and drops 1xx messages inside ``ClientResponse.start()`` and has
no hook for them, so the response class given to the client session wraps its
connection's ``read()`` for the duration of ``start()``: each message read is looked at,
and a 1xx is written to the client that asked (known through a context variable set
around the origin request, which runs in the client's handler task). ``100 Continue``
is not relayed (rankgate answers ``Expect`` itself, see upload.py) nor ``101`` (an
upgrade is not forwarded); HTTP/1.0 clients get no 1xx (RFC 9110 15.2).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import aiohttp
from aiohttp import HttpVersion11, web
from aiohttp.connector import Connection
from aiohttp.http_parser import RawResponseMessage

from proxy.http.headers import HOP_BY_HOP, connection_listed

CLIENT: ContextVar[web.BaseRequest | None] = ContextVar("rankgate_1xx_client", default=None)


def relay(request: web.BaseRequest, message: RawResponseMessage) -> bool:
    """Write the 1xx ``message`` to ``request``'s client; False when it may not go."""
    code = message.code
    if code in (100, 101) or request.version < HttpVersion11:
        return False
    transport = request.transport
    if transport is None or transport.is_closing() or request.writer.output_size:
        return False
    skip = HOP_BY_HOP | connection_listed(message.headers)
    reason = (message.reason or "").encode("latin-1", "replace")
    parts = [b"HTTP/1.1 %d %s\r\n" % (code, reason)]
    for name, value in message.raw_headers:
        lname = name.decode("latin-1").lower()
        if lname in skip or lname.startswith("proxy-"):
            continue
        parts.append(b"%s: %s\r\n" % (name, value))
    parts.append(b"\r\n")
    transport.write(b"".join(parts))
    return True


class RelayingResponse(aiohttp.ClientResponse):
    async def start(self, connection: Connection) -> aiohttp.ClientResponse:
        request = CLIENT.get()
        protocol: Any = connection.protocol
        if request is None or protocol is None:
            return await super().start(connection)
        read: Callable[[], Awaitable[Any]] = protocol.read

        async def read_relaying() -> Any:
            message, payload = await read()
            if 100 <= message.code < 200:
                relay(request, message)
            return message, payload

        protocol.read = read_relaying  # this connection's, for this response only
        try:
            return await super().start(connection)
        finally:
            del protocol.read
