"""1xx answers from the origin (``103 Early Hints``, ``102 Processing``) relayed to the
client before the final response.

aiohttp's client reads and drops 1xx messages inside ``ClientResponse.start()`` and has
no hook for them, so the response class given to the client session wraps each origin
connection's ``read()`` (which only ``start()`` calls): each message read is looked at,
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
        protocol: Any = connection.protocol
        if protocol is not None and "read" not in protocol.__dict__:
            # Once per connection, not per response: the protocol's read() is called
            # only by start(), and the wrapper relays for the request whose task runs it.
            protocol.read = _relaying(protocol.read)
        return await super().start(connection)


def _relaying(
    read: Callable[[], Awaitable[tuple[RawResponseMessage, Any]]],
) -> Callable[[], Awaitable[tuple[RawResponseMessage, Any]]]:
    async def read_relaying() -> tuple[RawResponseMessage, Any]:
        message, payload = await read()
        if 100 <= message.code < 200:
            request = CLIENT.get()
            if request is not None:
                relay(request, message)
        return message, payload

    return read_relaying
