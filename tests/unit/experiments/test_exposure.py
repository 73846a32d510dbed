"""The exposure record's unit: the user id, or the HMAC an app can compute itself; a
record built from a pending exposure in the flusher's batch; the ids pending exposures
and remembered pages may hold, bounded."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pytest

from proxy.config.settings import Exposures, Settings
from proxy.experiments import exposure
from proxy.experiments.exposure import SCHEMA_VERSION, ExposureLog, Pages, Pending
from proxy.experiments.sink import RecordQueue
from proxy.experiments.tokens import TokenSigner
from proxy.outcome.errors import Outcome
from proxy.readout.served import pack_hashes, stored_id
from proxy.serve.runtime import _keys

KEY = b"unit-key-of-32-bytes-for-the-app"
SIGNER = TokenSigner(b"t" * 32)


def log_with(unit_key: bytes | None) -> ExposureLog:
    cfg = Exposures(enabled=True, unit="hmac-sha256" if unit_key else "raw")
    return ExposureLog(cfg, RecordQueue(10, 10), TokenSigner(b"t" * 32), unit_key)


def test_units() -> None:
    assert log_with(None).unit("u1") == "u1"
    hashed = log_with(KEY)
    expected = hmac.new(KEY, b"u1", hashlib.sha256).hexdigest()  # what the app computes
    assert hashed.unit("u1") == expected and hashed.unit("u1") == expected  # cached
    assert hashed.unit("u2") != expected and hashed.unit(None) is None


def test_units_are_keyed_by_default_with_a_key_of_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No unit_key_env: the key is derived from the token key with its own label, so the
    unit never is the raw id, and knowing it tells nothing of the token key."""
    token_key = "the-token-key-of-at-least-32-byt"
    monkeypatch.setenv("RANKGATE_TOKEN_KEY", token_key)
    settings = Settings(origin={"url": "http://127.0.0.1:1"}, exposures={"enabled": True})
    assert settings.exposures.unit == "hmac-sha256"
    signer, unit_key = _keys(settings)
    assert (
        unit_key
        == hmac.new(token_key.encode(), b"rankgate exposure unit v1", hashlib.sha256).digest()
    )
    assert unit_key != token_key.encode()
    log = ExposureLog(settings.exposures, RecordQueue(10, 10), signer, unit_key)
    assert log.unit("42") == hmac.new(unit_key, b"42", hashlib.sha256).hexdigest()
    raw = Settings(origin={"url": "http://127.0.0.1:1"}, exposures={"enabled": True, "unit": "raw"})
    assert _keys(raw)[1] is None
    raw_log = ExposureLog(raw.exposures, RecordQueue(10, 10), signer, None)
    assert raw_log.unit("42") == "42" and raw_log.unit("u" * 300).startswith("sha256:")


def pending(
    log: ExposureLog,
    ids: list[str | None],
    served: list[np.ndarray],
    lengths: list[int] | None = None,
    outcome: Outcome = Outcome.APPLIED,
) -> Pending:
    positions = np.array([k for k, i in enumerate(ids) if i is not None], dtype=np.intp)
    return Pending(
        log, "ab" * 12, 1_764_480_000_000, "feed", "u1", "default", "ranker", "f" * 64,
        outcome, None, 0.0012, ids, served, positions,
        np.arange(len(positions), dtype=np.float32), None, lengths, None, None, None,
    )  # fmt: skip


def served_order(ids: list[str | None], served: list[np.ndarray], lengths: list[int]) -> list[str]:
    """The ids in the order served, every array end to end, those without an id left out
    (what the record describes)."""
    out, offset = [], 0
    for order, n in zip(served, lengths, strict=True):
        out += [ids[offset + i] for i in order.tolist() if ids[offset + i] is not None]
        offset += n
    return out  # type: ignore[return-value]


@pytest.mark.parametrize("shape", ["one array", "two arrays, ids missing, long ids"])
def test_a_record_built_in_the_batch_names_what_was_served(shape: str) -> None:
    """``items`` the first max_items served ids (stored form), ``item_hashes`` the rest's
    CRC-32s as pack_hashes makes them, ``origin_pos`` their origin indices: the same
    from the page remembered as from a page seen for the first time."""
    log = ExposureLog(Exposures(enabled=True, max_items=5), RecordQueue(10, 10), SIGNER, None)
    rng = np.random.default_rng(7)
    if shape == "one array":
        ids: list[str | None] = [f"i{k}" for k in range(12)]
        lengths = [12]
    else:
        ids = [f"i{k}" if k % 4 else None for k in range(9)]
        ids += ["https://shop.example/" + "p" * 200, "\ud800lone", "j2", None, "j4"]
        lengths = [9, 5]
    served = [rng.permutation(n).astype(np.intp) for n in lengths]
    p = pending(log, ids, served, lengths if len(lengths) > 1 else None)
    expected = [stored_id(i) for i in served_order(ids, served, lengths)]
    for _ in range(2):  # a new page, then the same page remembered
        rec = log.record(p, held=False)
        assert rec["items"] == expected[:5]
        assert rec["item_hashes"] == pack_hashes(expected[5:])
        assert [stored_id(ids[k]) for k in rec["origin_pos"]] == expected[:5]  # type: ignore[arg-type]
    assert len(log.pages.pages) == 1


def test_pending_exposures_are_built_by_the_flusher_and_bounded_in_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue = RecordQueue(10, 10)
    log = ExposureLog(Exposures(enabled=True, max_items=3), queue, SIGNER, None)
    ids: list[str | None] = [f"i{k}" for k in range(8)]
    monkeypatch.setattr(exposure, "MAX_HELD_IDS", 10)
    log.put(pending(log, ids, [np.arange(8)]))
    log.put(pending(log, ids, [np.arange(8)]))  # 16 ids held now
    log.put(pending(log, ids, [np.arange(8)]))  # past the bound: built at once
    assert [type(e) for e in queue.records] == [Pending, Pending, dict]
    assert log.held_ids == 16
    built = [e if isinstance(e, dict) else e.build() for e in queue.take(3)]
    assert log.held_ids == 0
    assert all(r["items"] == ["i0", "i1", "i2"] and r["v"] == SCHEMA_VERSION for r in built)


def test_remembered_pages_are_bounded() -> None:
    pages = Pages(max_ids=10)
    a: list[str | None] = [f"a{k}" for k in range(6)]
    pages.get(a)
    assert pages.held == 6
    pages.get([f"b{k}" for k in range(6)])  # would pass the bound: the others forgotten
    assert pages.held == 6 and len(pages.pages) == 1
    pages.get([f"c{k}" for k in range(20)])  # larger than the bound: used, not kept
    assert pages.held == 6 and len(pages.pages) == 1
