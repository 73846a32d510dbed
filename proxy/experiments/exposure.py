"""One exposure record per feed decision: what a request was served, by which arm.

The schema is docs/exposures.schema.json (documented in docs/exposures.md). The feed
path asks ``token()`` for the response's ``X-Rankgate-Id`` and calls ``emit()`` once the
response is on its way; ``emit`` defers the record's assembly to the next turn of the
event loop, after the response's bytes are handed to the transport, and only appends it
to the sink's bounded queue.

A token is issued, and a record written, exactly when a list was served to a known user:
a GET whose origin answered 200 and whose items were found (re-ranked, a control arm, or
skipped after the items were found). Nothing for HEAD, a 304 or 206, another status, a
body whose items were not found, or an anonymous request (whose response may be cached
and shared). The record lists the first ``max_items`` served ids and, hashed, every one
after them, so that any click can be checked against what was served.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from proxy.config.settings import Exposures
from proxy.experiments.sink import RecordQueue
from proxy.experiments.tokens import TokenSigner
from proxy.feed.state import FeedRequest, new_request_id
from proxy.outcome.errors import Outcome
from proxy.readout.served import pack_hashes, stored_id

SCHEMA_VERSION = 2
MAX_MEMO_UNITS = 65_536  # hashed units remembered (a user makes many requests)


def list_served(st: FeedRequest) -> bool:
    """A GET answered 200 whose items were found: a list a click can follow."""
    upstream = st.upstream
    return (
        st.request.method == "GET"
        and upstream is not None
        and upstream.status == 200
        and st.body_complete
        and any(i is not None for i in st.ids)
    )


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
        """The response's X-Rankgate-Id: for a list served to a known user, else None."""
        if st.ctx.user_id is None or not list_served(st):
            return None
        st.ts_ms = int(time.time() * 1000)
        return self.signer.sign(st.request_id, st.ts_ms, st.route.name, st.ctx.arm or "")

    def emit(self, st: FeedRequest) -> None:
        if st.ts_ms:  # a token was issued: that is what makes an exposure
            asyncio.get_running_loop().call_soon(self._put, st)

    def _put(self, st: FeedRequest) -> None:
        self.queue.put(self.record(st))

    def unit(self, user_id: str | None) -> str | None:
        if user_id is None:
            return None
        if self.unit_key is None:
            return stored_id(user_id)
        hashed = self._units.get(user_id)
        if hashed is None:
            if len(self._units) >= MAX_MEMO_UNITS:
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
        if served.rest:
            out["item_hashes"] = pack_hashes(served.rest)
        if served.scores is not None:
            out["scores"] = served.scores
        if served.teams is not None:
            out["teams"] = served.teams
        if st.others:
            out["model_b_sha256"] = st.others[0].sha256
            if len(st.others) > 1:  # multileaved: every model's, in team order
                out["models_sha256"] = [m.sha256 for m in (st.model, *st.others) if m]
        if st.shadow is not None:
            shadow_items: Sequence[str] = st.shadow["items"]  # type: ignore[assignment]
            out["shadow"] = {**st.shadow, "items": [stored_id(i) for i in shadow_items]}
        if st.moved_from is not None:  # a guardrail sent this request to the default arm
            out["guardrail"] = st.moved_from
        if st.bandit is not None:  # the period the model was picked in, and its weights
            out["bandit"] = st.bandit
        return out


@dataclass(slots=True)
class Served:
    """The first served items that have an id, as the record lists them, and the stored
    ids of the ones after them (for ``item_hashes``)."""

    items: list[str]
    origin_pos: list[int]
    scores: list[float | None] | None  # with exposures.scores
    teams: list[str | None] | None  # an interleaved arm's
    rest: list[str]


def served_items(st: FeedRequest, limit: int, with_scores: bool) -> Served:
    """The first ``limit`` served items that have an id: their ids, their index in the
    origin's order, each one's score (with_scores; the first model's on an interleaved
    arm) and team; and the ids served after them. Before re-ranking (a skip after the
    items were found) the served order is the origin's; before the items were found,
    nothing is known."""
    ids = st.ids
    applied = bool(st.record.outcome is Outcome.APPLIED and st.served)
    if applied and len(st.served) == 1 and st.positions.size == len(ids):
        # The common case, in C: one array, every item scored (so every item has an id).
        pos_out = st.served[0][:limit].tolist()
        picked = list(range(len(pos_out)))
        slot_teams = st.teams[0] if st.teams is not None else []
        after = st.served[0][limit:].tolist() if len(ids) > limit else []
    else:
        source, slot_teams = _source(st, applied)
        with_id = [k for k, i in enumerate(source) if ids[i] is not None]
        picked = with_id[:limit]
        pos_out = [source[k] for k in picked]
        after = [source[k] for k in with_id[limit:]]
    items = [stored_id(ids[i]) for i in pos_out]  # type: ignore[arg-type]
    rest = [stored_id(ids[i]) for i in after]  # type: ignore[arg-type]
    teams = [slot_teams[k] for k in picked] if applied and st.teams is not None else None
    scores: list[float | None] | None = None
    if with_scores:
        score_of: dict[int, float] = {}
        if applied and st.scores.size:
            score_of = dict(zip(st.positions.tolist(), np.asarray(st.scores).tolist(), strict=True))
        scores = [score_of.get(i) for i in pos_out]
    return Served(items, pos_out, scores, teams, rest)


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
