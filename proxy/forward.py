"""Forwarding to the origin: one pooled client session, bodies streamed both ways.

The pass-through path never decodes a body: aiohttp's auto-decompression is off and
the client's Accept-Encoding is sent as it came, so compressed bytes go through as-is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy.config import Origin
from proxy.errors import OriginError, Reason
from proxy.headers import add_forwarded, end_to_end

log = logging.getLogger("rankgate.forward")

# Statuses whose responses never carry a body (RFC 9110 6.4.1).
NO_BODY_STATUSES = frozenset({204, 304})
CHUNK = 64 * 1024


class Forwarder:
    """Owns the client session to the origin; created at start-up, closed at shutdown."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.base = URL(origin.url)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.origin.max_connections, ttl_dns_cache=60, enable_cleanup_closed=True
        )
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.origin.connect_timeout_s, sock_read=self.origin.timeout_s
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            # Send the client's headers, not aiohttp's defaults (no Accept-Encoding we
            # would then have to decode, no User-Agent the client did not send).
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
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
        self, request: web.BaseRequest, drop: Iterable[str] = ()
    ) -> CIMultiDict[str]:
        headers = end_to_end(request.headers, drop=("Host", *drop))
        peer = request.remote
        add_forwarded(headers, peer, request.scheme, request.host)
        if self.origin.host_header == "preserve":
            headers["Host"] = request.host
        elif self.origin.host_header:
            headers["Host"] = self.origin.host_header
        return headers

    async def open(
        self, request: web.BaseRequest, drop_headers: Iterable[str] = ()
    ) -> aiohttp.ClientResponse:
        """Send the request upstream (body streamed) and return once headers arrive."""
        # The path and query exactly as the client encoded them.
        url = URL(str(self.base) + request.raw_path, encoded=True)
        data = request.content if request.body_exists else None
        # No asyncio.timeout around this: the session's sock_connect and sock_read bound
        # the connect and the wait for headers, and a timer per request costs CPU.
        try:
            return await self.session.request(
                request.method,
                url,
                headers=self.upstream_headers(request, drop_headers),
                data=data,
                allow_redirects=False,
                compress=None,
                chunked=None,
            )
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise OriginError(Reason.ORIGIN_TIMEOUT, "the origin did not answer in time") from None
        except aiohttp.ClientConnectorError as exc:
            raise OriginError(
                Reason.ORIGIN_UNREACHABLE, f"cannot connect to the origin: {exc.os_error}"
            ) from None
        except aiohttp.ClientError as exc:
            raise OriginError(
                Reason.ORIGIN_ERROR, f"bad answer from the origin: {type(exc).__name__}"
            ) from None

    @staticmethod
    def response_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict[str]:
        return end_to_end(upstream.headers)

    async def stream_back(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        headers: CIMultiDict[str] | None = None,
        first: bytes = b"",
    ) -> web.StreamResponse:
        """Send the origin's response to the client as it arrives.

        ``first`` is body already read from ``upstream`` (the feed path peeks at it).
        """
        if headers is None:
            headers = self.response_headers(upstream)
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        response.headers.extend(headers)
        no_body = (
            request.method == "HEAD"
            or upstream.status in NO_BODY_STATUSES
            or (100 <= upstream.status < 200)
        )
        length = upstream.headers.get("Content-Length")
        if length is not None and length.isdigit():
            # Declared length: keep it, so the client sees exactly what the origin sent
            # (also for HEAD, where no body follows).
            response.content_length = int(length)
        try:
            await response.prepare(request)
            if not no_body:
                if first:
                    await response.write(first)
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    await response.write(chunk)
            await response.write_eof()
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Headers are out: the only honest signal left is to cut the connection, so
            # the client sees a truncated transfer instead of a short "complete" body.
            log.warning("origin failed mid-body: %s", type(exc).__name__)
            upstream.close()
            if request.transport is not None:
                request.transport.close()
            return response
        finally:
            # A client that went away (or any error) must not leave the upstream
            # connection half-read in the pool.
            if not upstream.content.at_eof():
                upstream.close()
            upstream.release()
        return response
