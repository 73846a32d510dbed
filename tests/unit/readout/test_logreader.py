"""proxy/readout/logreader.py: records from JSONL files and a real Redis Stream (Valkey), checked,
malformed ones counted and skipped."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
import redis

from proxy.readout.logreader import (
    Event,
    Exposure,
    LogStats,
    Malformed,
    jsonl_files,
    parse_record,
    read_jsonl,
    read_stream,
)
from tests.support.exposure_logs import (
    T0,
    event,
    exposure,
    request_id,
    schema_problems,
    write_jsonl,
)

RNG = random.Random(3)


def test_generated_records_follow_the_schema() -> None:
    rec = exposure(
        request_id(RNG),
        "v1-vs-v2",
        "u1",
        ["a", "b"],
        T0,
        teams=["A", None],
        shadow=("ranker_v3", ["b", "a"]),
    )
    assert schema_problems(rec) == []
    assert schema_problems(event(rec, "a", value=2.5)) == []
    assert schema_problems({**rec, "extra": 1}) == ["unknown extra"]


def test_parse_exposure_and_event() -> None:
    rec = exposure(
        "a" * 24,
        "v1-vs-v2",
        None,
        ["x", "y"],
        T0,
        outcome="skipped",
        reason="budget",
        teams=["B", "A"],
        shadow=("ranker_v3", ["y"]),
    )
    got = parse_record(orjson.dumps(rec))
    assert got == Exposure(
        ts=T0,
        id="a" * 24,
        route="home-feed",
        unit=None,
        arm="v1-vs-v2",
        model="ranker_v1",
        outcome="skipped",
        reason="budget",
        items=("x", "y"),
        teams=("B", "A"),
        shadow_model="ranker_v3",
        shadow_items=("y",),
    )
    ev = parse_record(orjson.dumps(event(rec, "y", kind="conversion", value=3)))
    assert ev == Event(
        ts=T0 + 1500,
        id="a" * 24,
        route="home-feed",
        arm="v1-vs-v2",
        item="y",
        kind="conversion",
        value=3.0,
    )


GOOD = exposure("b" * 24, "default", "u", ["x", "y"], T0)
BANDIT = {**GOOD, "arm": "versions.v2", "model": "v2"}
WEIGHTS = "bandit.weights: want one share per model, summing to 1"


def tagged(**tag: object) -> dict[str, object]:
    return {
        **BANDIT,
        "bandit": {"arm": "versions", "period": 7, "models": ["v1", "v2"], "weights": [0.3, 0.7]}
        | tag,
    }


def test_a_bandit_record_carries_its_period() -> None:
    rec = tagged()
    assert not schema_problems(rec)
    parsed = parse_record(orjson.dumps(rec))
    assert isinstance(parsed, Exposure) and parsed.bandit is not None
    assert (parsed.bandit.arm, parsed.bandit.period) == ("versions", 7)
    assert parsed.bandit.models == ("v1", "v2") and parsed.bandit.weights == (0.3, 0.7)
    assert parse_record(orjson.dumps(GOOD)).bandit is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (orjson.dumps({**GOOD, "v": 3}), "v: want schema version 1 or 2"),
        (orjson.dumps({**GOOD, "v": True}), "v: want schema version 1 or 2"),
        (orjson.dumps({**GOOD, "type": "other"}), "type: want exposure or event"),
        (orjson.dumps({**GOOD, "ts": "now"}), "ts: want an integer from 0 to 253402300799999"),
        (orjson.dumps({**GOOD, "ts": -1}), "ts: want an integer from 0 to 253402300799999"),
        (orjson.dumps({**GOOD, "ts": 10**18}), "ts: want an integer from 0 to 253402300799999"),
        (orjson.dumps({**GOOD, "id": ""}), "id: want a non-empty string"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "unit"}), "unit: missing"),
        (orjson.dumps({**GOOD, "unit": 7}), "unit: want a string or null"),
        (orjson.dumps({**GOOD, "items": ["x", 1]}), "items: want a list of strings"),
        (orjson.dumps({**GOOD, "outcome": "maybe"}), "outcome: want applied, skipped or control"),
        (orjson.dumps({**GOOD, "teams": ["A"]}), "teams: not one per item"),
        (orjson.dumps({**GOOD, "teams": ["A", "G"]}), 'teams: want a list of "A" to "F" or null'),
        (orjson.dumps({**GOOD, "shadow": {"model": "m"}}), "shadow.items: want a list of strings"),
        (orjson.dumps({**BANDIT, "bandit": [1]}), "bandit: want an object"),
        (orjson.dumps(tagged(weights=[0.5, 0.6])), WEIGHTS),
        (orjson.dumps(tagged(weights=[0.5, 0.5, 0.0])), WEIGHTS),
        (orjson.dumps(tagged(weights=[True, 0.0])), WEIGHTS),
        (orjson.dumps(tagged(models=["v1"], weights=[1.0])), WEIGHTS),
        (orjson.dumps(tagged(period=-1)), "period: want an integer from 0 to 253402300799999"),
        (orjson.dumps(tagged(arm="other")), "bandit: arm is not one of the bandit's models"),
        (orjson.dumps({**event(GOOD, "x"), "kind": "view"}), "kind: want click or conversion"),
        (orjson.dumps({**event(GOOD, "x"), "value": "1"}), "value: want a number"),
    ],
)
def test_malformed_records_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(Malformed) as caught:
        parse_record(raw)
    assert str(caught.value) == reason


def test_read_jsonl_counts_and_skips_bad_lines(tmp_path: Path) -> None:
    good = [exposure(request_id(RNG), "default", f"u{i}", ["x"], T0 + i) for i in range(3)]
    path = tmp_path / "log.jsonl"
    lines = [
        orjson.dumps(good[0]),
        b"garbage",
        b"",
        orjson.dumps(good[1]),
        b'{"v": 1}',
        orjson.dumps(good[2])[:-5],
    ]  # a torn last line, as a writer mid-line leaves it
    path.write_bytes(b"\n".join(lines))
    stats = LogStats()
    got = list(read_jsonl([path], stats))
    assert [r.id for r in got] == [good[0]["id"], good[1]["id"]]
    assert (stats.read, stats.malformed) == (2, 3)
    assert stats.reasons == {"not JSON": 2, "type: want exposure or event": 1}
    assert stats.examples == [
        f"{path}:2: not JSON",
        f"{path}:5: type: want exposure or event",
        f"{path}:6: not JSON",
    ]


def test_jsonl_files_of_a_directory(tmp_path: Path) -> None:
    for name in ("b.jsonl", "a.jsonl", "notes.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "sub.jsonl").mkdir()
    single = tmp_path / "x.log"
    single.write_text("")
    assert jsonl_files([tmp_path, single]) == [tmp_path / "a.jsonl", tmp_path / "b.jsonl", single]
    with pytest.raises(FileNotFoundError, match="nope"):
        jsonl_files([tmp_path / "nope"])


def test_since_filters_by_record_time(tmp_path: Path) -> None:
    recs = [exposure(request_id(RNG), "default", "u", ["x"], T0 + i * 1000) for i in range(5)]
    path = write_jsonl(tmp_path / "log.jsonl", recs)
    stats = LogStats()
    got = list(read_jsonl([path], stats, since_ms=T0 + 2000))
    assert [r.ts for r in got] == [T0 + 2000, T0 + 3000, T0 + 4000]
    assert (stats.read, stats.before_since) == (3, 2)


def test_read_stream_in_chunks(redis_db: redis.Redis) -> None:
    recs = [exposure(request_id(RNG), "default", "u", ["x"], T0 + i) for i in range(25)]
    for i, rec in enumerate(recs):
        redis_db.xadd("log", {"r": orjson.dumps(rec)}, id=f"{T0 + i}-0")
        if i == 10:  # two entries in one ms, and one with no record
            redis_db.xadd("log", {"r": orjson.dumps({**rec, "id": "c" * 24})}, id=f"{T0 + i}-1")
            redis_db.xadd("log", {"x": b"1"}, id=f"{T0 + i}-2")
    stats = LogStats()
    got = list(read_stream(redis_db, "log", stats, chunk=4))
    assert len(got) == 26 and got[11].id == "c" * 24
    assert stats.malformed == 1 and stats.examples == [f"log {T0 + 10}-2: no field r"]
    # since: starts the XRANGE at that time; the ts filter agrees with it.
    stats = LogStats()
    later = list(read_stream(redis_db, "log", stats, since_ms=T0 + 20, chunk=4))
    assert [r.ts for r in later] == [T0 + i for i in range(20, 25)]
    assert stats.before_since == 0
    assert list(read_stream(redis_db, "missing", LogStats())) == []
