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
from typing import Any

import numpy as np

from proxy.config import Exposures
from proxy.errors import Outcome
from proxy.feedstate import FeedRequest
from proxy.sink import RecordQueue
from proxy.tokens import TokenSigner, new_request_id

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
        items, origin_pos, scores = served_items(st, self.cfg.max_items, self.cfg.scores)
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
            "items": items,
            "origin_pos": origin_pos,
            "ms": round(max(ours, 0.0) * 1000, 3),
        }
        if scores is not None:
            out["scores"] = scores
        return out


def served_items(
    st: FeedRequest, limit: int, with_scores: bool
) -> tuple[list[str], list[int], list[float | None] | None]:
    """The first ``limit`` served items that have an id: their ids, their index in the
    origin's order, and (with_scores) each one's score. Before re-ranking (a skip after
    the items were found) the served order is the origin's; before the items were found,
    nothing is known."""
    ids = st.ids
    if not ids:
        return [], [], ([] if with_scores else None)
    applied = st.record.outcome is Outcome.APPLIED and st.served
    if applied:
        source, offset = [], 0
        for arr, order in zip(st.arrays, st.served, strict=True):
            source.extend((order + offset).tolist())
            offset += len(arr.items)
    else:
        source = range(len(ids))
    pos_out: list[int] = []
    for i in source:
        if ids[i] is not None:
            pos_out.append(i)
            if len(pos_out) == limit:
                break
    items = [ids[i] for i in pos_out]  # type: ignore[misc]
    if not with_scores:
        return items, pos_out, None  # type: ignore[return-value]
    score_of: dict[int, float] = {}
    if applied and st.scores.size:
        score_of = dict(zip(st.positions.tolist(), np.asarray(st.scores).tolist(), strict=True))
    return items, pos_out, [score_of.get(i) for i in pos_out]  # type: ignore[return-value]
