"""One exposure record per feed decision: what a request was served, by which arm.

The schema is docs/exposures.schema.json (documented in docs/exposures.md). The feed
path asks ``token()`` for the response's ``X-Rankgate-Id`` (only when the request has a
user: an anonymous response may be cached and shared) and calls ``emit()`` once the
response is on its way; ``emit`` defers the record's assembly to the next turn of the
event loop, after the response's bytes are handed to the transport, and only appends it
to the sink's bounded queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from proxy.config.settings import Exposures
from proxy.experiments.sink import RecordQueue
from proxy.experiments.tokens import TokenSigner
from proxy.feed.state import FeedRequest, new_request_id
from proxy.outcome.errors import Outcome

SCHEMA_VERSION = 1


class ExposureLog:
    def __init__(
        self,
        cfg: Exposures,
        queue: RecordQueue,
        signer: TokenSigner,
        unit_key: bytes | None,
    ) -> None:
        self.cfg = cfg
        self.queue = queue
        self.signer = signer
        self.unit_key = unit_key
        self._units: dict[str, str] = {}

    def start(self, st: FeedRequest) -> None:
        st.request_id = new_request_id()

    def token(self, st: FeedRequest) -> str | None:
        """The response's X-Rankgate-Id, for a request with a user."""
        if st.ctx.user_id is None:
            return None
        st.ts_ms = int(time.time() * 1000)
        return self.signer.sign(st.request_id, st.ts_ms, st.route.name, st.ctx.arm or "")

    def emit(self, st: FeedRequest) -> None:
        asyncio.get_running_loop().call_soon(self._put, st)

    def _put(self, st: FeedRequest) -> None:
        self.queue.put(self.record(st))

    def unit(self, user_id: str | None) -> str | None:
        if user_id is None or self.unit_key is None:
            return user_id
        hashed = self._units.get(user_id)
        if hashed is None:
            if len(self._units) >= 65_536:
                self._units.clear()
            digest = hmac.new(self.unit_key, user_id.encode(), hashlib.sha256).hexdigest()
            hashed = self._units[user_id] = digest
        return hashed

    def record(self, st: FeedRequest) -> dict[str, Any]:
        rec = st.record
        timings = rec.timings
        ours = timings.get("total", 0.0) - timings.get("origin", 0.0)
        served = served_items(st, self.cfg.max_items, self.cfg.scores)
        out: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "type": "exposure",
            "ts": st.ts_ms or int(time.time() * 1000),
            "id": st.request_id,
            "route": st.route.name,
            "unit": self.unit(st.ctx.user_id),
            "arm": st.ctx.arm,
            "model": st.ctx.model,
            "model_sha256": st.model.sha256 if st.model is not None else None,
            "outcome": rec.outcome.value,
            "reason": rec.reason.value if rec.reason is not None else None,
            "items": served.items,
            "origin_pos": served.origin_pos,
            "ms": round(max(ours, 0.0) * 1000, 3),
        }
        if served.scores is not None:
            out["scores"] = served.scores
        if served.teams is not None:
            out["teams"] = served.teams
        if st.model_b is not None:
            out["model_b_sha256"] = st.model_b.sha256
        if st.shadow is not None:
            out["shadow"] = st.shadow
        if st.moved_from is not None:  # a guardrail sent this request to the default arm
            out["guardrail"] = st.moved_from
        return out


@dataclass(slots=True)
class Served:
    """The first served items that have an id, as the record lists them."""

    items: list[str]
    origin_pos: list[int]
    scores: list[float | None] | None  # with exposures.scores
    teams: list[str | None] | None  # an interleaved arm's


def served_items(st: FeedRequest, limit: int, with_scores: bool) -> Served:
    """The first ``limit`` served items that have an id: their ids, their index in the
    origin's order, each one's score (with_scores; the first model's on an interleaved
    arm) and team. Before re-ranking (a skip after the items were found) the served
    order is the origin's; before the items were found, nothing is known."""
    ids = st.ids
    applied = bool(st.record.outcome is Outcome.APPLIED and st.served)
    if applied and len(st.served) == 1 and st.positions.size == len(ids):
        # The common case, in C: one array, every item scored (so every item has an id).
        pos_out = st.served[0][:limit].tolist()
        picked = list(range(len(pos_out)))
        slot_teams = st.teams[0] if st.teams is not None else []
    else:
        source, slot_teams = _source(st, applied)
        picked = [k for k, i in enumerate(source) if ids[i] is not None][:limit]
        pos_out = [source[k] for k in picked]
    items = [ids[i] for i in pos_out]
    teams = [slot_teams[k] for k in picked] if applied and st.teams is not None else None
    scores: list[float | None] | None = None
    if with_scores:
        score_of: dict[int, float] = {}
        if applied and st.scores.size:
            score_of = dict(zip(st.positions.tolist(), np.asarray(st.scores).tolist(), strict=True))
        scores = [score_of.get(i) for i in pos_out]
    return Served(items, pos_out, scores, teams)  # type: ignore[arg-type]


def _source(st: FeedRequest, applied: bool) -> tuple[list[int], list[str | None]]:
    """The origin index of the item in each served slot, all arrays end to end (and each
    slot's team); the origin's order when nothing was re-ranked."""
    if not applied:
        return list(range(len(st.ids))), []
    source: list[int] = []
    slot_teams: list[str | None] = []
    offset = 0
    for k, (arr, order) in enumerate(zip(st.arrays, st.served, strict=True)):
        source.extend((order + offset).tolist())
        if st.teams is not None:
            slot_teams.extend(st.teams[k])
        offset += len(arr.items)
    return source, slot_teams
