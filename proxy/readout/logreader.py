"""Reading the exposure log back: JSONL files or a Redis Stream, into checked records.

The record schema is docs/exposures.schema.json (versions 1 and 2 are read). Reading is
tolerant: a line that is not JSON, not an object, of an unknown type or schema version,
missing a field the readout uses, or whose numbers would break the arithmetic (a value
beyond MAX_VALUE, a time beyond MAX_TS) is counted in :class:`LogStats` and skipped (a
crash would hide every good record behind one torn line, e.g. the last line of a file
still being written). Fields the readout does not use (``origin_pos``, ``scores``,
``ms``, ...) are not checked.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis

from proxy.readout.served import unpack

__all__ = [
    "DEFAULT_STREAM",
    "SCHEMA_VERSION",
    "BanditTag",
    "Event",
    "Exposure",
    "LogStats",
    "Malformed",
    "jsonl_files",
    "parse_record",
    "read_jsonl",
    "read_stream",
]

SCHEMA_VERSION = 2  # the newest; VERSIONS are read
VERSIONS = frozenset({1, 2})
# Bounds that keep every sum finite: 1e15 is a million times the events endpoint's default
# limit, and a billion such values still sum far below float's 1.8e308.
MAX_VALUE = 1e15
MAX_TS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z in ms: what a date can show
DEFAULT_STREAM = "rankgate:exposures"
STREAM_FIELD = b"r"  # each stream entry holds one record, as JSON, in this field
OUTCOMES = frozenset({"applied", "skipped", "control"})
KINDS = frozenset({"click", "conversion"})
TEAMS = frozenset({*"ABCDEF", None})  # one letter per interleaved model (at most 6)
MAX_EXAMPLES = 3  # malformed records quoted in the warning


@dataclass(frozen=True, slots=True)
class BanditTag:
    """A bandit model's exposure: its bandit arm, the weight period it was assigned in,
    the bandit's models and the period's weights (in the order of ``models``)."""

    arm: str
    period: int
    models: tuple[str, ...]
    weights: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Exposure:
    ts: int
    id: str
    route: str
    unit: str | None
    arm: str
    model: str
    outcome: str
    reason: str | None
    items: tuple[str, ...]
    teams: tuple[str | None, ...] | None = None
    shadow_model: str | None = None
    shadow_items: tuple[str, ...] | None = None
    # Version 2: the served ids beyond ``items``, hashed (proxy/readout/served.py).
    item_hashes: str | None = None
    bandit: BanditTag | None = None


@dataclass(frozen=True, slots=True)
class Event:
    ts: int
    id: str
    route: str
    arm: str
    item: str
    kind: str
    value: float | None = None


Record = Exposure | Event


class Malformed(ValueError):
    """A record the readout cannot use; the message says why in a few words."""


@dataclass
class LogStats:
    """What a read saw: records used, malformed ones (by reason, with a few examples),
    and records before the ``since`` cut-off."""

    read: int = 0
    malformed: int = 0
    before_since: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def bad(self, where: str, reason: str) -> None:
        self.malformed += 1
        self.reasons[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{where}: {reason}")


def _int(rec: dict[str, Any], key: str) -> int:
    value = rec.get(key)
    if type(value) is not int or not 0 <= value <= MAX_TS:  # bool is an int: refused too
        raise Malformed(f"{key}: want an integer from 0 to {MAX_TS}")
    return value


def _str(rec: dict[str, Any], key: str) -> str:
    value = rec.get(key)
    if not isinstance(value, str) or not value:
        raise Malformed(f"{key}: want a non-empty string")
    return value


def _opt_str(rec: dict[str, Any], key: str) -> str | None:
    if key not in rec:
        raise Malformed(f"{key}: missing")
    value = rec[key]
    if value is not None and not isinstance(value, str):
        raise Malformed(f"{key}: want a string or null")
    return value


def _ids(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Malformed(f"{key}: want a list of strings")
    return tuple(value)


def _bandit(value: Any, arm: str) -> BanditTag | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Malformed("bandit: want an object")
    models = _ids(value.get("models"), "bandit.models")
    weights = value.get("weights")
    if (
        not isinstance(weights, list)
        or len(weights) != len(models)
        or len(models) < 2
        or not all(type(w) in (int, float) and 0.0 <= w <= 1.0 for w in weights)
        or abs(math.fsum(weights) - 1.0) > 1e-3  # rounded to 4 digits when written
    ):
        raise Malformed("bandit.weights: want one share per model, summing to 1")
    tag = BanditTag(_str(value, "arm"), _int(value, "period"), models, tuple(map(float, weights)))
    if arm not in {f"{tag.arm}.{m}" for m in models}:
        raise Malformed("bandit: arm is not one of the bandit's models")
    return tag


def _exposure(rec: dict[str, Any]) -> Exposure:
    outcome = rec.get("outcome")
    if outcome not in OUTCOMES:
        raise Malformed("outcome: want applied, skipped or control")
    model = rec.get("model")
    if not isinstance(model, str):
        raise Malformed("model: want a string")
    items = _ids(rec.get("items"), "items")
    teams = rec.get("teams")
    if teams is not None:
        if not isinstance(teams, list) or not all(t in TEAMS for t in teams):
            raise Malformed('teams: want a list of "A" to "F" or null')
        if len(teams) != len(items):
            raise Malformed("teams: not one per item")
        teams = tuple(teams)
    shadow = rec.get("shadow")
    shadow_model = shadow_items = None
    if shadow is not None:
        if not isinstance(shadow, dict):
            raise Malformed("shadow: want an object")
        shadow_model = _str(shadow, "model")
        shadow_items = _ids(shadow.get("items"), "shadow.items")
    hashes = rec.get("item_hashes")
    if hashes is not None and (not isinstance(hashes, str) or unpack(hashes) is None):
        raise Malformed("item_hashes: want base64 of 4-byte hashes")
    return Exposure(
        ts=_int(rec, "ts"),
        id=_str(rec, "id"),
        route=_str(rec, "route"),
        unit=_opt_str(rec, "unit"),
        arm=_str(rec, "arm"),
        model=model,
        outcome=outcome,
        reason=_opt_str(rec, "reason"),
        items=items,
        teams=teams,
        shadow_model=shadow_model,
        shadow_items=shadow_items,
        item_hashes=hashes,
        bandit=_bandit(rec.get("bandit"), _str(rec, "arm")),
    )


def _event(rec: dict[str, Any]) -> Event:
    kind = rec.get("kind")
    if kind not in KINDS:
        raise Malformed("kind: want click or conversion")
    value = rec.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise Malformed("value: want a number")
    if value is not None and not (math.isfinite(value) and abs(value) <= MAX_VALUE):
        raise Malformed(f"value: beyond {MAX_VALUE:g}")
    return Event(
        ts=_int(rec, "ts"),
        id=_str(rec, "id"),
        route=_str(rec, "route"),
        arm=_str(rec, "arm"),
        item=_str(rec, "item"),
        kind=kind,
        value=None if value is None else float(value),
    )


def parse_record(raw: bytes | str) -> Record:
    """One JSON record -> Exposure or Event; raises Malformed."""
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Malformed("not JSON") from None
    if not isinstance(rec, dict):
        raise Malformed("not a JSON object")
    version = rec.get("v")
    if type(version) is not int or version not in VERSIONS:
        raise Malformed(f"v: want schema version 1 or {SCHEMA_VERSION}")
    kind = rec.get("type")
    if kind == "exposure":
        return _exposure(rec)
    if kind == "event":
        return _event(rec)
    raise Malformed("type: want exposure or event")


def _keep(raw: bytes, where: str, since_ms: int | None, stats: LogStats) -> Record | None:
    try:
        record = parse_record(raw)
    except Malformed as exc:
        stats.bad(where, str(exc))
        return None
    if since_ms is not None and record.ts < since_ms:
        stats.before_since += 1
        return None
    stats.read += 1
    return record


def jsonl_files(sources: Sequence[str | Path]) -> list[Path]:
    """Files to read: each source is a file, or a directory whose ``*.jsonl`` are read in
    name order (the sink's rotation numbers them). Raises FileNotFoundError."""
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            files.extend(sorted(p for p in path.glob("*.jsonl") if p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return files


def read_jsonl(
    files: Iterable[Path], stats: LogStats, since_ms: int | None = None
) -> Iterator[Record]:
    """Records from JSONL files, one per line; blank lines are ignored."""
    for path in files:
        with path.open("rb") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                record = _keep(line, f"{path}:{number}", since_ms, stats)
                if record is not None:
                    yield record


def _next_id(entry_id: bytes | str) -> str:
    # The smallest id after this one. XRANGE's exclusive "(" form needs Redis 6.2; this
    # works on any server with streams.
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def read_stream(
    client: redis.Redis,
    key: str,
    stats: LogStats,
    since_ms: int | None = None,
    chunk: int = 1000,
) -> Iterator[Record]:
    """Records from a Redis Stream, read with XRANGE ``chunk`` entries at a time.

    Entry ids are ``<ms>-<seq>``, the time the sink added them; a record is added after
    its ``ts``, so starting at ``since_ms`` misses none that the ``ts`` filter keeps."""
    start = "-" if since_ms is None else f"{since_ms}-0"
    while True:
        entries = client.xrange(key, min=start, max="+", count=chunk)
        for entry_id, fields in entries:
            raw = fields.get(STREAM_FIELD, fields.get("r"))  # bytes or decoded client
            where = f"{key} {entry_id.decode() if isinstance(entry_id, bytes) else entry_id}"
            if raw is None:
                stats.bad(where, "no field r")
                continue
            record = _keep(raw, where, since_ms, stats)
            if record is not None:
                yield record
        if len(entries) < chunk:
            return
        start = _next_id(entries[-1][0])
