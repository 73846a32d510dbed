"""What a record says was served, and the check of each event against it: ids beyond
max_items hashed (schema version 2), long ids stored hashed on both sides, version 1
records still read, and events on items never served counted apart, never credited."""

from __future__ import annotations

import base64
import hashlib
import io
import random
import zlib

import orjson
import pytest

from proxy.cli.experiments import render_text
from proxy.readout.logreader import LogStats, Malformed, parse_record
from proxy.readout.served import item_hash, pack_hashes, stored_id, unpack
from tests.support.exposure_logs import T0, event, exposure, readout, request_id, route_of

RNG = random.Random(17)


def test_the_hash_any_reader_can_compute() -> None:
    # CRC-32 (zlib's) of the stored id, 4 bytes big-endian, base64 (standard, padded).
    assert item_hash("i42") == zlib.crc32(b"i42").to_bytes(4, "big")
    packed = pack_hashes(["i8", "i9"])
    raw = zlib.crc32(b"i8").to_bytes(4, "big") + zlib.crc32(b"i9").to_bytes(4, "big")
    assert packed == base64.b64encode(raw).decode()
    assert unpack(packed) == {raw[:4], raw[4:]}
    assert unpack("not base64!") is None and unpack(base64.b64encode(b"abc").decode()) is None
    assert pack_hashes([]) == "" and unpack("") == frozenset()


def test_long_ids_are_stored_hashed() -> None:
    url = "https://shop.example/p/" + "x" * 200
    assert stored_id("i1") == "i1" and stored_id("y" * 128) == "y" * 128
    assert stored_id(url) == "sha256:" + hashlib.sha256(url.encode()).hexdigest()[:32]


def v2(rec: dict[str, object], rest: list[str]) -> dict[str, object]:
    out = {**rec, "v": 2}
    if rest:
        out["item_hashes"] = pack_hashes(rest)
    return out


def test_clicks_beyond_max_items_are_credited_and_never_served_ones_are_not() -> None:
    served = [f"i{k}" for k in range(12)]
    a = v2(exposure(request_id(RNG), "default", "u1", served[:8], T0), served[8:])
    b = v2(exposure(request_id(RNG), "default", "u2", served[:8], T0 + 1), served[8:])
    c = exposure(request_id(RNG), "default", "u3", served[:8], T0 + 2)  # version 1
    records = [
        a,
        b,
        c,
        {**event(a, "i10"), "v": 2},  # beyond max_items: in item_hashes
        {**event(a, "never-served-1"), "v": 2},
        {**event(b, "never-served-2"), "v": 2},
        {**event(b, "never-served-3", kind="conversion", value=5.0), "v": 2},
        event(c, "i3"),
        event(c, "i10"),  # a version 1 record lists only the first max_items: unverifiable
    ]
    report = readout(records)
    assert report.unserved_events == 4 and report.to_json()["records"]["unserved_events"] == 4
    (arm,) = route_of(report).arms
    assert (arm.clicks, arm.clicked_exposures, arm.conversions) == (2, 2, 0)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"item_hashes": "%%%"}, "item_hashes: want base64 of 4-byte hashes"),
        ({"item_hashes": 7}, "item_hashes: want base64 of 4-byte hashes"),
    ],
)
def test_bad_item_hashes_are_malformed(change: dict[str, object], reason: str) -> None:
    rec = v2(exposure(request_id(RNG), "default", "u1", ["i1"], T0), [])
    with pytest.raises(Malformed, match=reason):
        parse_record(orjson.dumps({**rec, **change}))


def test_values_that_would_break_a_sum_are_malformed() -> None:
    of = exposure(request_id(RNG), "default", "u1", ["i1"], T0)
    huge = event(of, "i1", kind="conversion", value=1e308)
    with pytest.raises(Malformed, match="value: beyond 1e"):
        parse_record(orjson.dumps(huge))
    fine = event(of, "i1", kind="conversion", value=-1e15)
    assert parse_record(orjson.dumps(fine)).value == -1e15  # type: ignore[union-attr]


def test_the_text_report_says_how_many_events_were_not_credited() -> None:
    rec = exposure(request_id(RNG), "default", "u1", ["i1"], T0)
    report = readout([rec, event(rec, "i1"), event(rec, "i2"), event(rec, "i3")])
    out = io.StringIO()
    render_text(report, LogStats(), "test.jsonl", out)
    assert "2 events name an item their exposure did not serve: not credited" in out.getvalue()
