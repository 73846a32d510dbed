"""Why did this user get this order: one feed request described, item by item.

For each served item: its origin position, the model's score, the score after the rules,
and what each rules plugin did to it (pinned, score changed by how much, filtered, moved
by an order rule such as diversify); the arm and model; or why the page was not
re-ranked. Positions and slots count from 0 (array indices).

Three ways in, one description (``describe``):
- ``rankgate explain --config FILE --user ID URL`` and ``GET /admin/explain?user=ID&path=P``
  call ``proxy.feed.explain.explain``, which asks the origin for the page as the proxy
  would (the user placed where the route's ``user:`` reads it) and runs the same stages,
  with the rules watched.
- a public request with ``X-Rankgate-Explain: <admin.token>`` (``wanted``) gets the same
  JSON in one ``X-Rankgate-Explanation`` header (``header_value``, size-bounded), never in
  the body; rankgate never forwards that request header to the origin.
Watching the rules copies their state before and after each one: only when explaining.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

import numpy as np
from multidict import CIMultiDictProxy

from plugins.arrange import arrangement
from plugins.run import RuleState, Watch
from proxy.feed.rerank import split
from proxy.feed.state import FeedRequest
from proxy.http.headers import EXPLAIN_HEADER
from proxy.outcome.errors import RankgateError

EXPLANATION_HEADER = "X-Rankgate-Explanation"  # response: the JSON
MAX_HEADER_BYTES = 8192  # proxies and clients commonly refuse header lines past 8-16 KiB

Report = dict[str, Any]


def wanted(headers: CIMultiDictProxy[str], token: bytes) -> bool:
    """Whether a request asks for its explanation with the right token (constant time)."""
    given = headers.get(EXPLAIN_HEADER)
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), token)


def describe(st: FeedRequest, error: RankgateError | None, took_s: float) -> Report:
    """The request's explanation: route, user, arm, model, outcome and reason, and per
    item array the served items in order (or the origin's, when not re-ranked)."""
    record = st.record
    rules = [p.name for p in st.route.plugins.rules]
    report: Report = {
        "route": st.route.name,
        "user": st.ctx.user_id,
        "arm": record.arm,
        "model": record.model,
        "outcome": "skipped" if error is not None else "applied",
        "reason": None if error is None else str(error.reason),
        "rules": rules,
        "took_ms": round(took_s * 1000, 3),
        "budget_ms": st.route.spec.budget_ms,
    }
    if st.others:
        report["interleaved_with"] = "+".join(m.name for m in st.others)
    if error is None and st.served:
        parts = split(st.arrays, st.positions, st.scores, st.vectors)
        watches = st.explains or []
        step = 1 + len(st.others)  # interleaved: B's (C's...) rules ran, then A's
        arrays = []
        for k, (arr, pos, scores, _) in enumerate(parts):
            watch = watches[k * step + step - 1] if rules else []
            teams = st.teams[k] if st.teams is not None else None
            arrays.append(_array(arr.ids, pos, scores, watch, st.served[k], teams))
        report["arrays"] = arrays
    else:  # served as the origin sent it
        report["arrays"] = [
            {"items": [{"slot": i, "id": ident, "origin": i} for i, ident in enumerate(arr.ids)]}
            for arr in st.arrays
        ]
    return report


def _array(
    ids: list[str | None],
    pos: np.ndarray,
    scores: np.ndarray,
    watch: Watch,
    served: np.ndarray,
    teams: list[str | None] | None,
) -> Report:
    """One array: each served item with what happened to it, and the filtered ones."""
    n = len(ids)
    unscored = np.ones(n, dtype=bool)
    unscored[pos] = False
    model = {int(p): float(s) for p, s in zip(pos.tolist(), scores.tolist(), strict=True)}
    final = model
    if watch:  # the scores as the last rule left them
        final = dict(zip(pos.tolist(), watch[-1][2].scores.tolist(), strict=True))
    effects: dict[int, list[str]] = {i: [] for i in range(n)}
    for name, before, after in watch:
        _effects(name, before, after, pos, unscored, effects)
    items = []
    for slot, i in enumerate(served.tolist()):
        entry = _item(i, ids, model, final, effects)
        entry = {"slot": slot, **entry}
        if teams is not None:
            entry["team"] = teams[slot]
        items.append(entry)
    gone = sorted(set(range(n)) - set(served.tolist()))
    return {"items": items, "filtered": [_item(i, ids, model, final, effects) for i in gone]}


def _item(
    i: int,
    ids: list[str | None],
    model: dict[int, float],
    final: dict[int, float],
    effects: dict[int, list[str]],
) -> Report:
    score = model.get(i)
    return {
        "id": ids[i],
        "origin": i,
        "score": None if score is None else round(score, 6),
        "final_score": None if i not in final else round(final[i], 6),
        "effects": effects[i] or (["unscored: keeps its slot"] if score is None else []),
    }


def _effects(
    name: str,
    before: RuleState,
    after: RuleState,
    pos: np.ndarray,
    unscored: np.ndarray,
    effects: dict[int, list[str]],
) -> None:
    """What one rule did to each item, from its state before and after."""
    slot_b = _slots(pos, before, unscored)
    slot_a = _slots(pos, after, unscored)
    delta = after.scores - before.scores
    ordered = after.order is not None and (
        before.order is None or not np.array_equal(after.order, before.order)
    )
    gone = before.dropped  # what an earlier rule filtered: later rules do not matter to it
    for k, i in enumerate(pos.tolist()):
        if delta[k] != 0 and not gone[i]:
            effects[i].append(f"{name}: score {delta[k]:+.4g}" + _move(i, slot_b, slot_a))
    for i in np.flatnonzero(after.fixed & ~before.fixed).tolist():
        effects[i].append(f"{name}: pinned at {i}")
    for i in np.flatnonzero(after.dropped & ~before.dropped).tolist():
        effects[i].append(f"{name}: filtered")
    if ordered:
        for i in pos.tolist():
            if i in slot_b and i in slot_a and slot_b[i] != slot_a[i]:
                effects[i].append(f"{name}: moved {slot_b[i]} -> {slot_a[i]}")


def _slots(pos: np.ndarray, state: RuleState, unscored: np.ndarray) -> dict[int, int]:
    source = arrangement(pos, state.scores, state.fixed | unscored, state.dropped, state.order)
    return {int(i): slot for slot, i in enumerate(source.tolist())}


def _move(i: int, slot_b: dict[int, int], slot_a: dict[int, int]) -> str:
    if i in slot_b and i in slot_a and slot_b[i] != slot_a[i]:
        return f" (slot {slot_b[i]} -> {slot_a[i]})"
    return ""


def header_value(report: Report) -> str:
    """The report as one header value: ASCII JSON of at most MAX_HEADER_BYTES, items cut
    from the end (and ``"truncated": true``) when it would be longer."""
    text = json.dumps(report, separators=(",", ":"))
    if len(text) <= MAX_HEADER_BYTES:
        return text
    cut = json.loads(text)
    cut["truncated"] = True
    for arr in cut.get("arrays", []):
        arr.pop("filtered", None)
    while len(text := json.dumps(cut, separators=(",", ":"))) > MAX_HEADER_BYTES:
        longest = max(cut["arrays"], key=lambda a: len(a["items"]), default=None)
        if longest is None or not longest["items"]:
            return json.dumps({"route": report.get("route"), "truncated": True})
        del longest["items"][max(1, len(longest["items"]) * 3 // 4) :]
        if len(longest["items"]) == 1:
            longest["items"].clear()
    return text
