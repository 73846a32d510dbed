"""One exposure record per feed decision: what a request was served, by which arm.

The schema is docs/exposures.schema.json (documented in docs/exposures.md). The feed
path asks ``token()`` for the response's ``X-Rankgate-Id`` and calls ``emit()`` once the
response is on its way. ``emit`` keeps only a ``Pending`` exposure (references to what
the request already holds: its ids, the served orders, scores, arm, model, timings) in
the sink's bounded queue; the flusher builds the records (stored ids, item hashes, the
unit's HMAC) and serializes them in its batch, off the request's turn.

A token is issued, and a record written, exactly when a list was served to a known user:
a GET whose origin answered 200 and whose items were found (re-ranked, a control arm, or
skipped after the items were found). Nothing for HEAD, a 304 or 206, another status, a
body whose items were not found, or an anonymous request (whose response may be cached
and shared). The record lists the first ``max_items`` served ids and, hashed, every one
after them, so that any click can be checked against what was served.

A field of the record is added in three places: a field of ``Pending`` (what the request
holds, by reference: no work on the request's turn), its value in ``pending()``, and the
key in ``record()``.
"""

from __future__ import annotations

import hashlib
import hmac
from binascii import b2a_base64
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from proxy.config.settings import Exposures
from proxy.experiments.sink import RecordQueue
from proxy.experiments.tokens import TokenSigner
from proxy.feed.state import FeedRequest, new_request_id
from proxy.outcome.errors import Outcome, Reason
from proxy.readout.served import item_crcs, stored_id, stored_ids

SCHEMA_VERSION = 2
MAX_MEMO_UNITS = 65_536  # hashed units remembered (a user makes many requests)
# Ids that pending exposures may hold before the flusher builds them: past it, put()
# builds the record at once (the compact form), so a sink that hangs under big feeds
# holds no more memory than records would.
MAX_HELD_IDS = 250_000
MAX_PAGE_IDS = 50_000  # ids of the recent pages whose stored ids and hashes are kept


def list_served(st: FeedRequest) -> bool:
    """A GET answered 200 whose items were found: a list a click can follow."""
    upstream = st.upstream
    return (
        st.request.method == "GET"
        and upstream is not None
        and upstream.status == 200
        and st.body_complete
        and bool(ids := st.ids)
        and (ids[0] is not None or any(i is not None for i in ids))  # the first, usually
    )


class Pending(NamedTuple):
    """One exposure as the request left it: references, no work. The flusher calls
    ``build()`` in its batch."""

    log: ExposureLog
    request_id: str
    ts: int
    route: str
    user_id: str | None
    arm: str | None
    model: str | None
    model_sha256: str | None
    outcome: Outcome
    reason: Reason | None
    ms: float  # rankgate's own time, in seconds
    ids: list[str | None]
    served: list[np.ndarray]
    positions: np.ndarray
    scores: np.ndarray
    teams: list[list[str | None]] | None
    lengths: list[int] | None  # each item array's length, when there are several
    others_sha256: list[str] | None  # an interleaved arm's models after the first
    shadow: dict[str, object] | None
    moved_from: str | None
    bandit: dict[str, object] | None = None  # a bandit arm's period and weights

    def build(self) -> dict[str, Any]:
        return self.log.record(self)


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
        self.held_ids = 0  # in pending exposures not built yet
        self.pages = Pages(MAX_PAGE_IDS)

    def start(self, st: FeedRequest) -> None:
        st.request_id = new_request_id()

    def token(self, st: FeedRequest) -> str | None:
        """The response's X-Rankgate-Id: for a list served to a known user, else None."""
        if st.ctx.user_id is None or not list_served(st):
            return None
        token, st.ts_ms = self.signer.sign_now(st.request_id, st.route.name, st.ctx.arm or "")
        return token

    def emit(self, st: FeedRequest) -> None:
        if not st.ts_ms:  # no token was issued: that is what makes an exposure
            return
        self.put(self.pending(st))

    def put(self, pending: Pending) -> None:
        """Queued for the flusher to build; built now past ``MAX_HELD_IDS`` held ids."""
        if self.held_ids > MAX_HELD_IDS:
            self.queue.put(self.record(pending, held=False))
        elif self.queue.put(pending):
            self.held_ids += len(pending.ids)

    def pending(self, st: FeedRequest) -> Pending:
        rec = st.record
        timings = rec.timings
        arrays = st.arrays
        return Pending(
            self,
            st.request_id,
            st.ts_ms,
            st.route.name,
            st.ctx.user_id,
            st.ctx.arm,
            st.ctx.model,
            st.model.sha256 if st.model is not None else None,
            rec.outcome,
            rec.reason,
            timings.get("total", 0.0) - timings.get("origin", 0.0),
            st.ids,
            st.served,
            st.positions,
            st.scores,
            st.teams,
            [len(a.items) for a in arrays] if len(arrays) > 1 else None,
            [m.sha256 for m in st.others] if st.others else None,
            st.shadow,
            st.moved_from,
            st.bandit,
        )

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

    def record(self, p: Pending, held: bool = True) -> dict[str, Any]:
        """The record of a pending exposure (``held``: counted in ``held_ids``)."""
        if held:
            self.held_ids -= len(p.ids)
        cfg = self.cfg
        # Outcome and Reason are StrEnums: orjson writes them as their values, and they
        # compare equal to them (``.value`` is a Python-level property).
        out: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "type": "exposure",
            "ts": p.ts,
            "id": p.request_id,
            "route": p.route,
            "unit": self.unit(p.user_id),
            "arm": p.arm,
            "model": p.model,
            "model_sha256": p.model_sha256,
            "outcome": p.outcome,
            "reason": p.reason,
            "ms": round(max(p.ms, 0.0) * 1000, 3),
        }
        served_items(out, p, self.pages.get(p.ids), cfg.max_items, cfg.scores)
        if p.others_sha256:
            out["model_b_sha256"] = p.others_sha256[0]
            if len(p.others_sha256) > 1:  # multileaved: every model's, in team order
                out["models_sha256"] = [m for m in (p.model_sha256, *p.others_sha256) if m]
        if p.shadow is not None:
            shadow_items: Sequence[str] = p.shadow["items"]  # type: ignore[assignment]
            out["shadow"] = {**p.shadow, "items": [stored_id(i) for i in shadow_items]}
        if p.moved_from is not None:  # a guardrail sent this request to the default arm
            out["guardrail"] = p.moved_from
        if p.bandit is not None:  # the period the model was picked in, and its weights
            out["bandit"] = p.bandit
        return out


class Page(NamedTuple):
    """A page's ids as records store them, and each one's CRC-32 (big-endian; 0 for an
    item without an id) by origin position: computed once for a page many users get."""

    stored: list[str | None]
    crcs: np.ndarray

    @classmethod
    def of(cls, ids: list[str | None]) -> Page:
        if None in ids:
            stored = [None if i is None else stored_id(i) for i in ids]
        else:
            stored = stored_ids(ids)  # type: ignore[arg-type]
        crcs = np.array(item_crcs(s or "" for s in stored), dtype=np.uint32)
        return cls(stored, crcs.astype(">u4"))


class Pages:
    """Recent pages by their ids, up to ``max_ids`` ids in all (then forgotten)."""

    def __init__(self, max_ids: int) -> None:
        self.max_ids = max_ids
        self.held = 0
        self.pages: dict[tuple[str | None, ...], Page] = {}
        self._last_ids: list[str | None] | None = None
        self._last = Page([], np.zeros(0, dtype=">u4"))

    def get(self, ids: list[str | None]) -> Page:
        # The same list as the last record's: a route's body memo shares one page's ids
        # list between the requests that got that page (read-only).
        if ids is self._last_ids:
            return self._last
        key = tuple(ids)
        page = self.pages.get(key)
        if page is None:
            page = Page.of(ids)
            if len(ids) <= self.max_ids:
                if self.held + len(ids) > self.max_ids:
                    self.pages.clear()
                    self.held = 0
                self.pages[key] = page
                self.held += len(ids)
        self._last_ids, self._last = ids, page
        return page


def served_items(
    out: dict[str, Any], p: Pending, page: Page, limit: int, with_scores: bool
) -> None:
    """Into the record ``out``: ``items``, the first ``limit`` served items that have an
    id (their stored ids), ``origin_pos`` (their index in the origin's order), ``scores``
    (with_scores; the first model's on an interleaved arm), ``teams``, and
    ``item_hashes`` of the ids served after them (when there are any). Before re-ranking
    (a skip after the items were found) the served order is the origin's; before the
    items were found, nothing is known."""
    ids = p.ids
    applied = bool(p.outcome is Outcome.APPLIED and p.served)
    after: Any
    if applied and len(p.served) == 1 and p.positions.size == len(ids):
        # The common case, in C: one array, every item scored (so every item has an id).
        order = p.served[0]
        pos_out = order[:limit].tolist()
        picked: Any = range(len(pos_out))
        slot_teams = p.teams[0] if p.teams is not None else []
        after = order[limit:]
    else:
        source, slot_teams = _source(p, applied)
        with_id = [k for k, i in enumerate(source) if ids[i] is not None]
        picked = with_id[:limit]
        pos_out = [source[k] for k in picked]
        after = np.array([source[k] for k in with_id[limit:]], dtype=np.intp)
    out["items"] = list(map(page.stored.__getitem__, pos_out))
    out["origin_pos"] = pos_out
    if len(after):
        out["item_hashes"] = b2a_base64(page.crcs[after].tobytes(), newline=False).decode()
    if with_scores:
        score_of: dict[int, float] = {}
        if applied and p.scores.size:
            score_of = dict(zip(p.positions.tolist(), np.asarray(p.scores).tolist(), strict=True))
        out["scores"] = [score_of.get(i) for i in pos_out]
    if applied and p.teams is not None:
        out["teams"] = [slot_teams[k] for k in picked]


def _source(p: Pending, applied: bool) -> tuple[list[int], list[str | None]]:
    """The origin index of the item in each served slot, all arrays end to end (and each
    slot's team); the origin's order when nothing was re-ranked."""
    if not applied:
        return list(range(len(p.ids))), []
    source: list[int] = []
    slot_teams: list[str | None] = []
    offset = 0
    lengths = p.lengths or [len(p.ids)]
    for k, (length, order) in enumerate(zip(lengths, p.served, strict=True)):
        source.extend((order + offset).tolist())
        if p.teams is not None:
            slot_teams.extend(p.teams[k])
        offset += length
    return source, slot_teams
