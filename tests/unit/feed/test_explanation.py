"""The explanation's pieces that need no server: the header's size bound and the token
check (the whole path is tested end to end in tests/e2e/test_explain_e2e.py)."""

from __future__ import annotations

import json

import numpy as np
from multidict import CIMultiDict, CIMultiDictProxy

from plugins.run import RuleState
from proxy.feed.explanation import MAX_HEADER_BYTES, _array, header_value, wanted


def report(n: int) -> dict[str, object]:
    items = [
        {"slot": k, "id": f"item-{k:05d}", "origin": n - k, "score": 1.0 / (k + 1),
         "final_score": 1.0, "effects": ["boost: score +0.5 (slot 9 -> 1)"]}
        for k in range(n)
    ]  # fmt: skip
    filtered = [{"id": "gone", "origin": 0, "effects": ["filter: filtered"]}]
    return {"route": "feed", "user": "ü-1", "arrays": [{"items": items, "filtered": filtered}]}


def test_header_value_is_ascii_json_within_the_bound() -> None:
    small = header_value(report(3))
    assert json.loads(small) == report(3) and small.isascii()
    big = header_value(report(500))
    assert len(big) <= MAX_HEADER_BYTES and big.isascii()
    cut = json.loads(big)
    assert cut["truncated"] is True and "filtered" not in cut["arrays"][0]
    kept = cut["arrays"][0]["items"]
    # The first items, in order: the top of the feed is what one looks at.
    assert 10 < len(kept) < 500 and kept == report(500)["arrays"][0]["items"][: len(kept)]


def test_wanted_only_with_the_exact_token() -> None:
    token = b"s3cret-token"

    def asks(value: str | None) -> bool:
        headers: CIMultiDict[str] = CIMultiDict()
        if value is not None:
            headers["X-Rankgate-Explain"] = value
        return wanted(CIMultiDictProxy(headers), token)

    assert asks("s3cret-token")
    for value in (None, "", "s3cret-toke", "s3cret-token ", "S3CRET-TOKEN", "é"):
        assert not asks(value)


def _state(scores: list[float], fixed: list[int] = (), dropped: list[int] = (),
           order: list[int] | None = None, n: int = 4) -> RuleState:  # fmt: skip
    f, d = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    f[list(fixed)], d[list(dropped)] = True, True
    return RuleState(np.array(scores), f, d, None if order is None else np.array(order))


def test_each_rule_effect_is_named() -> None:
    # Four scored items; the model ranks 0,1,2,3. pin fixes 3 at its slot; boost lifts
    # 2 by 5; filter drops 1; an order rule then swaps the two movable ones left.
    pos = np.arange(4)
    start = _state([4.0, 3.0, 2.0, 1.0])
    pinned = _state([4.0, 3.0, 2.0, 1.0], fixed=[3])
    boosted = _state([4.0, 3.0, 7.0, 1.0], fixed=[3])
    filtered = _state([4.0, 3.0, 7.0, 1.0], fixed=[3], dropped=[1])
    ordered = _state([4.0, 3.0, 7.0, 1.0], fixed=[3], dropped=[1], order=[0, 2, 1, 3])
    watch = [
        ("pin", start, pinned),
        ("boost", pinned, boosted),
        ("filter", boosted, filtered),
        ("diversify", filtered, ordered),
    ]
    served = np.array([0, 2, 3])  # what the pipeline served (arrangement of the last state)
    out = _array(["a", "b", "c", "d"], pos, np.array([4.0, 3.0, 2.0, 1.0]), watch, served, None)
    effects = {it["id"]: it["effects"] for it in out["items"]}
    assert effects["d"] == ["pin: pinned at 3"]
    assert effects["c"] == ["boost: score +5 (slot 2 -> 0)", "diversify: moved 0 -> 1"]
    assert effects["a"] == ["diversify: moved 1 -> 0"]
    assert [it["slot"] for it in out["items"]] == [0, 1, 2]
    assert out["filtered"] == [
        {"id": "b", "origin": 1, "score": 3.0, "final_score": 3.0, "effects": ["filter: filtered"]}
    ]
