"""``POST /_rankgate/events``: clicks and conversions back, each naming its response.

    {"id": TOKEN, "item": ID, "type": "click" | "conversion", "value": NUMBER?}

or an array of them, as ``application/json`` or ``text/plain`` (what
``navigator.sendBeacon`` sends). TOKEN is the feed response's ``X-Rankgate-Id``. A POST
is taken whole or refused whole, with a status and a one-line JSON error, nothing stored:

    405  another method                     413  a body over events.max_body_bytes
    415  neither JSON nor text/plain        400  not JSON
    422  an unknown type, a missing field   401  a forged or malformed token
    410  a token older than max_age_s       429  more than max_per_id events for a token

Accepted events (202) go to the exposure sink as records of type ``event``. The path is
never forwarded to the origin while events are on. The count per token is kept per
process (bounded), so with N workers a replay can reach N * max_per_id at most.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from proxy.config.settings import Events
from proxy.experiments.sink import RecordQueue
from proxy.experiments.tokens import Claims, TokenError, TokenSigner

KINDS = frozenset({"click", "conversion"})
MAX_ITEM = 256  # an id longer than this is not an item id
MAX_TRACKED = 100_000  # tokens whose event counts are kept (least recent dropped)
_TYPES = frozenset({"application/json", "text/plain"})


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class EventsEndpoint:
    def __init__(self, cfg: Events, signer: TokenSigner, queue: RecordQueue) -> None:
        self.cfg = cfg
        self.path = cfg.path
        self.signer = signer
        self.queue = queue
        self.counts: dict[str, int] = {}  # result -> events or POSTs, for metrics
        # (route, arm, kind) -> accepted events: live click-through by arm on a dashboard
        self.feedback: dict[tuple[str, str, str], int] = {}
        self._per_id: OrderedDict[str, int] = OrderedDict()
        self.listeners: list[Callable[[list[dict[str, Any]]], None]] = []  # e.g. guardrails

    async def handle(self, request: web.BaseRequest) -> web.Response:
        try:
            events = parse(await self._body(request))
            records = self._verify(events)
        except Refused as exc:
            key = str(exc.status)
            self.counts[key] = self.counts.get(key, 0) + 1
            response = _json(exc.status, {"error": exc.message})
            if exc.status == 405:
                response.headers["Allow"] = "POST"
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
        body = await request.content.read(limit + 1)
        if len(body) > limit:
            raise Refused(413, f"body over {limit} bytes")
        return body

    def _verify(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        now = int(time.time() * 1000)
        claims: list[Claims] = []
        for event in events:
            try:
                claims.append(self.signer.verify(event["id"], now, self.cfg.max_age_s))
            except TokenError as exc:
                raise Refused(exc.status, exc.message) from None
        wanted: dict[str, int] = {}
        for claim in claims:
            wanted[claim.id] = wanted.get(claim.id, 0) + 1
        for request_id, n in wanted.items():
            if self._per_id.get(request_id, 0) + n > self.cfg.max_per_id:
                raise Refused(429, f"more than {self.cfg.max_per_id} events for one response")
        for request_id, n in wanted.items():
            self._per_id[request_id] = self._per_id.get(request_id, 0) + n
            self._per_id.move_to_end(request_id)
        while len(self._per_id) > MAX_TRACKED:
            self._per_id.popitem(last=False)
        return [_record(e, c, now) for e, c in zip(events, claims, strict=True)]


def parse(body: bytes) -> list[dict[str, Any]]:
    """The events of a body, each checked for its fields (the token is checked later)."""
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
        value = event.get("value")
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if value is not None and not (number and math.isfinite(value)):
            raise Refused(422, f"{where}.value: want a finite number")
    return events


def _record(event: dict[str, Any], claim: Claims, now: int) -> dict[str, Any]:
    record: dict[str, Any] = {
        "v": 1,
        "type": "event",
        "ts": now,
        "id": claim.id,
        "route": claim.route,
        "arm": claim.arm,
        "item": str(event["item"]),
        "kind": event["type"],
        "exposed_ts": claim.ts,
    }
    if event.get("value") is not None:
        record["value"] = event["value"]
    return record


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
