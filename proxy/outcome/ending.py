"""How a response is sent, and how a request ends when it cannot end normally.

``send`` writes a response the handler built whole (the normal path ends here too), so
that a client that left while it was built is seen as such. The ways a request ends off
the normal path are decided where they happen and recorded once: the forwarding code
raises one of these; the request handler turns it into the record's
outcome and reason, a log line at the right level, and the response aiohttp is handed
back (already sent in part, or a short answer of our own):

  client-abort  the client left or stalled (reason ``client-closed``, ``send-timeout``,
                ``body-timeout``, ``bad-body``): debug level, never blamed on the origin
                (nginx logs these as 499 or 408)
  origin-error  the origin broke off a response whose headers were already sent
                (``origin-broke-off``): warning, the client's connection is cut
  local         rankgate answered itself, without the origin (``connect``,
                ``bad-target``, ``options-asterisk``)

They are the branch ``Ended`` of the one error tree (``proxy.outcome.errors``): each carries a
``Reason`` whose outcome is one of the three above.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping

import orjson
from aiohttp import web

from proxy.outcome.errors import Outcome, RankgateError, Reason
from proxy.outcome.record import RequestRecord

log = logging.getLogger("rankgate.ending")

# Logged for a client that left before any status was sent (nginx's convention).
CLIENT_CLOSED_STATUS = 499


class Ended(RankgateError):
    reasons = frozenset(r for r in Reason if r.outcome in (Outcome.CLIENT_ABORT, Outcome.LOCAL))
    level = logging.DEBUG
    # Close the connection once the response is out (the client's body is not read).
    close_after = False

    def __init__(self, reason: Reason, response: web.StreamResponse | None, detail: str) -> None:
        super().__init__(reason, detail)
        self.response = response

    async def finish(self, request: web.BaseRequest, record: RequestRecord) -> web.StreamResponse:
        """Fill ``record`` in, log, and return what aiohttp should (finish) sending."""
        record.outcome, record.reason = self.reason.outcome, self.reason
        response = self.response
        if response is None:
            # No status was sent and nobody is left to read: aiohttp's write of this
            # fails quietly (it ignores a ConnectionError at that point).
            response = web.Response(status=CLIENT_CLOSED_STATUS)
            response.force_close()
        record.status = response.status
        log.log(self.level, "%s %s: %s", record.method, record.path[:200], self.detail)
        if self.close_after and not response.prepared and client_connected(request):
            # Sent here, then the connection closed: aiohttp would otherwise linger up
            # to 10 s reading a body that this client has stopped sending.
            with contextlib.suppress(ConnectionError):
                await response.prepare(request)
                await response.write_eof()
            request.protocol.force_close()
        return response


class ClientGone(Ended):
    reasons = frozenset(r for r in Reason if r.outcome is Outcome.CLIENT_ABORT)

    def __init__(
        self,
        reason: Reason,
        response: web.StreamResponse | None,
        detail: str,
        close_after: bool = False,
    ) -> None:
        super().__init__(reason, response, detail)
        self.close_after = close_after


class OriginBrokeOff(Ended):
    reasons = frozenset({Reason.ORIGIN_BROKE_OFF})
    level = logging.WARNING


class Answered(Ended):
    """rankgate's own answer to a request it does not forward."""

    reasons = frozenset(r for r in Reason if r.outcome is Outcome.LOCAL)

    def __init__(
        self,
        status: int,
        reason: Reason,
        detail: str,
        headers: Mapping[str, str] | None = None,
        body: bool = True,
        close: bool = False,
    ) -> None:
        response = own_answer(status, reason, detail, headers, body, close)
        super().__init__(reason, response, detail)


def own_answer(
    status: int,
    reason: Reason,
    detail: str,
    headers: Mapping[str, str] | None = None,
    body: bool = True,
    close: bool = False,
) -> web.Response:
    """A short answer of rankgate's own: a one-line JSON error, or no body."""
    payload = orjson.dumps({"error": reason.value, "detail": detail}) if body else b""
    response = web.Response(
        status=status,
        body=payload,
        headers=headers,
        content_type="application/json" if body else None,
    )
    if close:
        response.force_close()
    return response


def client_reason(request: web.BaseRequest) -> Reason:
    """Why the client's connection ended: our send timeout, or the client itself."""
    ended_by = getattr(request.protocol, "ended_by", None)
    return Reason(ended_by) if ended_by else Reason.CLIENT_CLOSED


def client_connected(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is not None and not transport.is_closing()


def client_gone(request: web.BaseRequest, response: web.StreamResponse | None) -> ClientGone:
    reason = client_reason(request)
    what = "stopped reading (send timeout)" if reason is Reason.SEND_TIMEOUT else "went away"
    return ClientGone(reason, response, f"client {what}")


async def send(request: web.BaseRequest, response: web.StreamResponse) -> web.StreamResponse:
    """Write a response the handler built whole, here rather than after the handler
    returns, so that a client that is gone is seen (and counted) as such."""
    if not response.prepared:
        if not client_connected(request):
            raise client_gone(request, None)
        started = False
        try:
            await response.prepare(request)
            started = True
            await response.write_eof()
        except ConnectionError:
            raise client_gone(request, response if started else None) from None
    return response
