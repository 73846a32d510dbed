"""Forwarding to the origin: one pooled client session, bodies streamed both ways.

The pass-through path never decodes a body: aiohttp's auto-decompression is off and
the client's Accept-Encoding is sent as it came, so compressed bytes go through as-is.
A failure is put where it belongs: a client that leaves or stalls ends the request as a
client abort (proxy/outcome/ending.py), never as an origin failure; all origin connections busy
for ``origin.pool_timeout_s`` is a 503 with Retry-After.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy.config.settings import Listen, Origin
from proxy.http import informational
from proxy.http.client import OriginRequest
from proxy.http.headers import EXPLAIN_HEADER, VIA, HeaderFilter, add_forwarded, end_to_end
from proxy.http.pool import PoolConnector, PoolTimeout
from proxy.http.target import upstream_target
from proxy.http.upload import Upload, expects_continue
from proxy.outcome.ending import Answered, OriginBrokeOff, client_connected, client_gone
from proxy.outcome.errors import OriginError, Reason

log = logging.getLogger("rankgate.forward")

# Statuses whose responses never carry a body (RFC 9110 6.4.1).
NO_BODY_STATUSES = frozenset({204, 304})
# Read and written 16 KiB at a time, with the origin read buffer as small: a client that
# reads nothing until listen.send_timeout_s cuts it pins ~250 KiB (bench/abuse.py), most
# of it one socket read from the origin (asyncio and uvloop read up to 256 KiB at once),
# against ~540 KiB with 64 KiB and aiohttp's defaults (800 such clients: ~215 MB/worker).
CHUNK = 16 * 1024
READ_BUFSIZE = 16 * 1024
# Targets whose URLs are kept (up to ~2 MB of them, parts computed), and their longest.
MAX_URLS = 1024
MAX_URL_KEY = 256
# The origin's response headers, hop-by-hop ones left out.
RESPONSE = HeaderFilter()
# The request headers upstream_headers appends to or replaces: a request without any of
# them (nearly all) gets its forwarding headers appended instead.
NOTED = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Via", "traceparent")


class Forwarder:
    """Owns the client session to the origin; created at start-up, closed at shutdown."""

    def __init__(self, origin: Origin, listen: Listen | None = None) -> None:
        self.origin = origin
        self.base = URL(origin.url)
        self._base = str(self.base)
        self.body_timeout_s = (listen or Listen()).body_timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._connector: PoolConnector | None = None
        # One filter per set of dropped names (a few: the callers' fixed tuples).
        self._filters: dict[tuple[str, ...], HeaderFilter] = {}
        # Upstream URLs of recent targets: a URL is immutable, and aiohttp's client reads
        # a dozen of its parts per request, each computed once per URL object.
        self._urls: dict[str, URL] = {}

    @property
    def pool_timeouts(self) -> int:
        return self._connector.pool_timeouts if self._connector is not None else 0

    async def start(self) -> None:
        self._connector = PoolConnector(
            pool_timeout_s=self.origin.pool_timeout_s,
            limit=self.origin.max_connections,
            ttl_dns_cache=60,
            enable_cleanup_closed=True,
        )
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.origin.connect_timeout_s, sock_read=self.origin.timeout_s
        )
        self._session = aiohttp.ClientSession(
            connector=self._connector,
            timeout=timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            # Send the client's headers, not aiohttp's defaults (no Accept-Encoding we
            # would then have to decode, no User-Agent the client did not send).
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            read_bufsize=READ_BUFSIZE,
            response_class=informational.RelayingResponse,  # 103 Early Hints reach the client
            request_class=OriginRequest,  # the same headers, copied once
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Forwarder.start() was not awaited")
        return self._session

    def upstream_headers(
        self, request: web.BaseRequest, drop: Iterable[str] = (), traceparent: str | None = None
    ) -> CIMultiDict[str]:
        """The client's end-to-end headers (its W3C trace context included, untouched)
        with the forwarding ones; ``traceparent``, on a traced request, names our span
        as the origin's parent instead of the client's."""
        drop = tuple(drop)
        kept = self._filters.get(drop)
        if kept is None:
            kept = self._filters[drop] = HeaderFilter(("Host", EXPLAIN_HEADER, *drop), NOTED)
        pairs = kept.pairs(request.headers)
        peer = request.remote
        if pairs is not None:
            # No Connection header, nothing to replace or append to: the headers the
            # general case below gives, in its order, without its lookups per header.
            if traceparent is not None:
                pairs.append(("traceparent", traceparent))
            if peer:
                pairs.append(("X-Forwarded-For", peer))
            pairs.append(("X-Forwarded-Proto", request.scheme))
            host = request.host
            if host:
                pairs.append(("X-Forwarded-Host", host))
            pairs.append(("Via", VIA))
            headers = CIMultiDict(pairs)
        else:
            headers = end_to_end(request.headers, kept.drop)
            if traceparent is not None:
                headers["traceparent"] = traceparent
            add_forwarded(headers, peer, request.scheme, request.host)
        if self.origin.host_header == "preserve":
            headers["Host"] = request.host
        elif self.origin.host_header:
            headers["Host"] = self.origin.host_header
        return headers

    def _url(self, target: str) -> URL:
        try:
            url = URL(self._base + target, encoded=True)
        except ValueError:
            raise Answered(
                400, Reason.BAD_TARGET, "the request target is not a valid path"
            ) from None
        if len(target) <= MAX_URL_KEY:
            if len(self._urls) >= MAX_URLS:
                self._urls.clear()
            self._urls[target] = url
        return url

    async def open(
        self,
        request: web.BaseRequest,
        drop_headers: Iterable[str] = (),
        traceparent: str | None = None,
    ) -> aiohttp.ClientResponse:
        """Send the request upstream (body streamed) and return once headers arrive.

        Raises OriginError (the origin failed or is busy), ClientGone (the client left or
        stalled its upload) or Answered (a target rankgate does not forward)."""
        # The path and query exactly as the client encoded them (absolute-form: its path).
        target = upstream_target(request)
        url = self._urls.get(target)
        if url is None:
            url = self._url(target)
        upload: Upload | None = None
        data: object = None
        send_continue = "Expect" in request.headers and expects_continue(request)
        if send_continue:
            # Answered here; upstream, aiohttp's client would wait for the origin's 100.
            drop_headers = ("Expect", *drop_headers)
        if request.body_exists:
            content = request.content
            if content.is_eof() and not send_continue:
                data = content  # all of it is here: nothing left to wait for
            else:
                upload = Upload(request, self.body_timeout_s, send_continue)
                data = upload.chunks()
        # No asyncio.timeout around this: the session's sock_connect and sock_read bound
        # the connect and the wait for headers, and a timer per request costs CPU.
        token = informational.CLIENT.set(request)
        try:
            return await self.session.request(
                request.method,
                url,
                headers=self.upstream_headers(request, drop_headers, traceparent),
                data=data,
                allow_redirects=False,
                compress=None,
                chunked=None,
            )
        except PoolTimeout:
            raise OriginError(
                Reason.ORIGIN_BUSY,
                "every origin connection stayed busy for origin.pool_timeout_s",
            ) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            ended = upload.ended() if upload is not None else None
            if ended is not None:
                raise ended from None
            if not client_connected(request):
                raise client_gone(request, None) from None
            raise _origin_error(exc) from None
        finally:
            informational.CLIENT.reset(token)

    async def stream_back(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        headers: CIMultiDict[str] | list[tuple[str, str]] | None = None,
        first: bytes = b"",
    ) -> web.StreamResponse:
        """Send the origin's response to the client as it arrives.

        ``first`` is body already read from ``upstream`` (the feed path peeks at it).
        """
        if headers is None:
            headers = RESPONSE.copy(upstream.headers)
        no_body = (
            request.method == "HEAD"
            or upstream.status in NO_BODY_STATUSES
            or (100 <= upstream.status < 200)
        )
        if not first and not no_body:
            first = _at_hand(upstream)
        response = _response(upstream, headers, first)
        started = False
        try:
            if not client_connected(request):
                raise client_gone(request, None)
            await response.prepare(request)
            started = True
            if not no_body:
                await _relay_body(request, response, upstream, first)
            await response.write_eof()
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
            # Which side failed: a write to a client that left (or that we cut for not
            # reading) raises too, and must not be blamed on the origin.
            if not client_connected(request):
                raise client_gone(request, response if started else None) from None
            # The origin broke off after our headers went out: the only honest signal
            # left is to cut the connection, so the client sees a truncated transfer
            # instead of a short "complete" body.
            upstream.close()
            if request.transport is not None:
                request.transport.close()
            raise OriginBrokeOff(
                Reason.ORIGIN_BROKE_OFF, response, f"origin failed mid-body: {type(exc).__name__}"
            ) from None
        finally:
            # A client that went away (or any error) must not leave the upstream
            # connection half-read in the pool.
            if not upstream.content.at_eof():
                upstream.close()
            upstream.release()
        return response


def _at_hand(upstream: aiohttp.ClientResponse) -> bytes:
    """Body bytes that came in with the headers, taken without waiting (a failed stream
    raises again where the relay reads it)."""
    try:  # not contextlib.suppress: this runs per request, a try costs nothing unraised
        return upstream.content.read_nowait(CHUNK)
    except (aiohttp.ClientError, ConnectionError, TimeoutError):
        return b""


def _response(
    upstream: aiohttp.ClientResponse,
    headers: CIMultiDict[str] | list[tuple[str, str]],
    first: bytes,
) -> web.StreamResponse:
    # With body bytes at hand, the headers go out with them in one write (one packet,
    # one syscall); without, at once, so a slow or streaming origin's client sees the
    # headers as soon as they came.
    kind = WithBody if first else web.StreamResponse
    response = kind(status=upstream.status, reason=upstream.reason)
    response.headers.extend(headers)
    length = upstream.headers.get("Content-Length")
    if length is not None and length.isdigit():
        # Declared length: keep it, so the client sees exactly what the origin sent
        # (also for HEAD, where no body follows).
        response.content_length = int(length)
    return response


async def _relay_body(
    request: web.BaseRequest,
    response: web.StreamResponse,
    upstream: aiohttp.ClientResponse,
    first: bytes,
) -> None:
    """``first``, then the rest of the origin's body as it arrives, chunk by chunk; a
    failure on either side propagates to ``stream_back``, which tells them apart."""
    if first:
        await response.write(first)
    protocol, writer = request.protocol, request.writer
    async for chunk in upstream.content.iter_chunked(CHUNK):
        await response.write(chunk)
        if protocol.writing_paused:
            # aiohttp waits only every 64 KiB written; a client that does not read
            # waits here, with one chunk more in its buffer.
            await writer.drain()


class WithBody(web.StreamResponse):
    """A streamed response whose headers wait for the first body write, as aiohttp's
    own ``web.Response`` does (its class attribute of the same name)."""

    _send_headers_immediately = False


def _origin_error(exc: BaseException) -> OriginError:
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError is one too
        return OriginError(Reason.ORIGIN_TIMEOUT, "the origin did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return OriginError(
            Reason.ORIGIN_UNREACHABLE, f"cannot connect to the origin: {exc.os_error}"
        )
    return OriginError(Reason.ORIGIN_ERROR, f"bad answer from the origin: {type(exc).__name__}")
