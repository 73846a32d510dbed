"""A request body on its way to the origin: ``100 Continue`` and a bounded wait per read.

``Expect: 100-continue`` is answered here, like nginx does, when the body is first
pulled, that is once the origin connection is open and the request's headers are on
it: the client starts its upload at once instead of waiting out its own timer (curl: 1 s).
The expectation is not sent upstream (the origin's 100 would come too late to matter).
A body that stops arriving for ``listen.body_timeout_s`` ends the request with 408; one
whose client leaves ends it as a client abort, never as an origin failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import HttpVersion11, web
from aiohttp.web_protocol import RequestPayloadError

from proxy.outcome.ending import ClientGone, client_gone, own_answer
from proxy.outcome.errors import Reason

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def expects_continue(request: web.BaseRequest) -> bool:
    expect = request.headers.get("Expect")
    return (
        expect is not None and expect.lower() == "100-continue" and request.version >= HttpVersion11
    )


class UploadFailed(Exception):
    """Raised into the origin request when the client's body fails (see ``ended``)."""


class Upload:
    """Streams ``request.content`` upstream; ``ended()`` says how the client failed it."""

    __slots__ = ("failed", "request", "send_continue", "timeout_s")

    def __init__(self, request: web.BaseRequest, timeout_s: float, send_continue: bool) -> None:
        self.request = request
        self.timeout_s = timeout_s
        self.send_continue = send_continue
        self.failed: Reason | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        request = self.request
        if self.send_continue:
            transport = request.transport
            # Only before any answer of ours: a 1xx after a final status is invalid.
            if transport is not None and request.writer.output_size == 0:
                transport.write(CONTINUE)
        content = request.content
        timeout_s = self.timeout_s
        while True:
            try:
                async with asyncio.timeout(timeout_s):
                    chunk = await content.readany()
            except TimeoutError:
                self.failed = Reason.BODY_TIMEOUT
                raise UploadFailed from None
            except RequestPayloadError:
                self.failed = Reason.BAD_BODY
                raise UploadFailed from None
            except (ConnectionError, OSError):
                self.failed = Reason.CLIENT_CLOSED
                raise UploadFailed from None
            if not chunk:
                return
            yield chunk

    def ended(self) -> ClientGone | None:
        """The client-side reason the origin request failed, if it was the client's."""
        if self.failed is None:
            return None
        if self.failed is Reason.BODY_TIMEOUT:
            detail = "the request body stopped arriving for listen.body_timeout_s"
            answer = own_answer(408, self.failed, detail, close=True)
            return ClientGone(self.failed, answer, "client stalled its upload", close_after=True)
        if self.failed is Reason.BAD_BODY:
            answer = own_answer(400, self.failed, "the request body is malformed", close=True)
            return ClientGone(self.failed, answer, "client sent a malformed body", close_after=True)
        return client_gone(self.request, None)
