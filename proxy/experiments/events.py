"""``POST /_rankgate/events``: clicks and conversions back, each naming its response.

    {"id": TOKEN, "item": ID, "type": "click" | "conversion", "value": NUMBER?}

or an array of them, as ``application/json`` or ``text/plain`` (what
``navigator.sendBeacon`` sends). TOKEN is the feed response's ``X-Rankgate-Id``. A POST
is taken whole or refused whole, with a status and a one-line JSON error, nothing stored:

    405  another method                     413  a body over events.max_body_bytes
    415  neither JSON nor text/plain        408  a body not all in within the timeouts
    400  not JSON                           422  an unknown type, a missing field, a value
    401  a forged or malformed token             out of [min_value, max_value]
    410  a token older than max_age_s       429  more than max_per_id events for a token

The body is read whole before anything is decided: a beacon on a slow link arrives in
pieces. It must be all in within ``events.body_timeout_s``, with no pause longer than
``listen.body_timeout_s``; past ``max_body_bytes`` it is refused at once, with or without
a Content-Length (chunked too). A refused body's connection is closed (its rest unread).

Accepted events (202) go to the exposure sink as records of type ``event``; an item id
longer than 128 characters is stored hashed (proxy/readout/served.py), as the exposure
stores it. The path is never forwarded to the origin while events are on. The count per
token is exact while the token is valid, fleet-wide through Redis
(proxy/experiments/limiter.py).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from proxy.config.settings import Events, Listen
from proxy.experiments.limiter import TokenCounts
from proxy.experiments.sink import RecordQueue
from proxy.experiments.tokens import Claims, TokenError, TokenSigner
from proxy.http.upload import CONTINUE, expects_continue
from proxy.readout.served import stored_id

KINDS = frozenset({"click", "conversion"})
MAX_ITEM = 2048  # an id longer than this is not an item id (longer than 128: stored hashed)
_TYPES = frozenset({"application/json", "text/plain"})


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# Refusals after which the body's rest is left unread: the connection is closed.
_CLOSE = frozenset({408, 413})


class EventsEndpoint:
    def __init__(
        self,
        cfg: Events,
        signer: TokenSigner,
        queue: RecordQueue,
        listen: Listen | None = None,
        counts: TokenCounts | None = None,
    ) -> None:
        self.cfg = cfg
        self.path = cfg.path
        self.signer = signer
        self.queue = queue
        self.pause_s = (listen or Listen()).body_timeout_s
        self.counts: dict[str, int] = {}  # result -> events or POSTs, for metrics
        # (route, arm, kind) -> accepted events: live click-through by arm on a dashboard
        self.feedback: dict[tuple[str, str, str], int] = {}
        self.per_id = counts if counts is not None else TokenCounts(cfg.max_per_id, cfg.max_age_s)
        self.listeners: list[Callable[[list[dict[str, Any]]], None]] = []  # e.g. guardrails

    async def handle(self, request: web.BaseRequest) -> web.Response:
        try:
            events = parse(await self._body(request), self.cfg)
            records = await self._verify(events)
        except Refused as exc:
            key = str(exc.status)
            self.counts[key] = self.counts.get(key, 0) + 1
            response = _json(exc.status, {"error": exc.message})
            if exc.status == 405:
                response.headers["Allow"] = "POST"
            if exc.status in _CLOSE:
                response.force_close()
            return response
        feedback = self.feedback
        for record in records:
            self.queue.put(record)
            key = (record["route"], record["arm"], record["kind"])
            feedback[key] = feedback.get(key, 0) + 1
        self.counts["accepted"] = self.counts.get("accepted", 0) + len(records)
        for listener in self.listeners:
            listener(records)
        return _json(202, {"accepted": len(records)})

    async def _body(self, request: web.BaseRequest) -> bytes:
        if request.method != "POST":
            raise Refused(405, f"method {request.method} not allowed: POST events")
        limit = self.cfg.max_body_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            raise Refused(413, f"body over {limit} bytes")
        mime = request.content_type.lower()
        if mime not in _TYPES:
            raise Refused(415, f"content type {mime!r}: send application/json or text/plain")
        if expects_continue(request) and request.transport is not None:
            request.transport.write(CONTINUE)  # the client then sends at once (curl: 1 s)
        return await read_whole(request, limit, self.pause_s, self.cfg.body_timeout_s)

    async def _verify(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        now = int(time.time() * 1000)
        claims: list[Claims] = []
        for event in events:
            try:
                claims.append(self.signer.verify(event["id"], now, self.cfg.max_age_s))
            except TokenError as exc:
                raise Refused(exc.status, exc.message) from None
        wanted: dict[str, tuple[int, int]] = {}
        for claim in claims:
            n = wanted.get(claim.id, (0, claim.ts))[0]
            wanted[claim.id] = (n + 1, claim.ts)
        if not await self.per_id.take(wanted, now):
            raise Refused(429, f"more than {self.cfg.max_per_id} events for one response")
        return [_record(e, c, now) for e, c in zip(events, claims, strict=True)]


async def read_whole(request: web.BaseRequest, limit: int, pause_s: float, total_s: float) -> bytes:
    """The whole body, up to ``limit`` bytes, all in within ``total_s`` and with no pause
    over ``pause_s``; else Refused (413, 408, or 400 when the client broke it off)."""
    content = request.content
    body = bytearray()
    try:
        async with asyncio.timeout(total_s):
            while True:
                async with asyncio.timeout(pause_s):
                    chunk = await content.readany()
                if not chunk:
                    return bytes(body)
                body += chunk
                if len(body) > limit:
                    raise Refused(413, f"body over {limit} bytes")
    except TimeoutError:
        raise Refused(408, "the body did not arrive in time") from None
    except (ConnectionError, RequestPayloadError) as exc:
        raise Refused(400, f"the body was broken off ({type(exc).__name__})") from None


def parse(body: bytes, cfg: Events | None = None) -> list[dict[str, Any]]:
    """The events of a body, each checked for its fields (the token is checked later)."""
    cfg = cfg or Events()
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Refused(400, "body is not JSON") from None
    events = doc if isinstance(doc, list) else [doc]
    if not events:
        raise Refused(422, "no events")
    for k, event in enumerate(events):
        where = f"events[{k}]" if isinstance(doc, list) else "event"
        if not isinstance(event, dict):
            raise Refused(422, f"{where}: want an object")
        for name in ("id", "item", "type"):
            if name not in event:
                raise Refused(422, f"{where}.{name}: required")
        unknown = set(event) - {"id", "item", "type", "value"}
        if unknown:
            raise Refused(422, f"{where}: unknown field {sorted(unknown)[0]!r}")
        if event["type"] not in KINDS:
            raise Refused(422, f"{where}.type: want click or conversion")
        item = event["item"]
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise Refused(422, f"{where}.item: want a string or an integer")
        if isinstance(item, str) and not 0 < len(item) <= MAX_ITEM:
            raise Refused(422, f"{where}.item: 1 to {MAX_ITEM} characters")
        _check_value(event.get("value"), where, cfg)
    return events


def _check_value(value: Any, where: str, cfg: Events) -> None:
    if value is None:
        return
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and cfg.min_value <= value <= cfg.max_value):
        raise Refused(
            422, f"{where}.value: want a finite number from {cfg.min_value:g} to {cfg.max_value:g}"
        )


def _record(event: dict[str, Any], claim: Claims, now: int) -> dict[str, Any]:
    record: dict[str, Any] = {
        "v": 2,
        "type": "event",
        "ts": now,
        "id": claim.id,
        "route": claim.route,
        "arm": claim.arm,
        "item": stored_id(str(event["item"])),
        "kind": event["type"],
        "exposed_ts": claim.ts,
    }
    if event.get("value") is not None:
        record["value"] = event["value"]
    return record


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
