"""Generated exposure logs for the readout tests: records in the schema of
docs/exposures.schema.json, simulated traffic (A/B, team-draft interleaving, shadow),
writers to JSONL files and a Redis Stream, and the readout of records in one call."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
import redis

from proxy.config.routes import Route
from proxy.readout.join import Readout
from proxy.readout.logreader import parse_record
from proxy.readout.report import Report, RouteReport
from proxy.readout.verdict import DEFAULT_TUNING, Tuning
from proxy.routing.arms import bucket

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "exposures.schema.json").read_text())
T0 = 1_795_000_000_000  # 2026-11-18 in ms: a fixed clock keeps the docs' example report stable

Record = dict[str, Any]


def request_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(96):024x}"


def exposure(
    rid: str,
    arm: str,
    unit: str | None,
    items: Sequence[str],
    ts: int,
    *,
    route: str = "home-feed",
    model: str = "ranker_v1",
    outcome: str = "applied",
    reason: str | None = None,
    teams: Sequence[str | None] | None = None,
    shadow: tuple[str, Sequence[str]] | None = None,
) -> Record:
    rec: Record = {
        "v": 1,
        "type": "exposure",
        "ts": ts,
        "id": rid,
        "route": route,
        "unit": unit,
        "arm": arm,
        "model": model,
        "model_sha256": None if model == "none" else "ab" * 32,
        "outcome": outcome,
        "reason": reason,
        "items": list(items),
        "origin_pos": list(range(len(items))),
        "ms": 0.4,
    }
    if teams is not None:
        rec["teams"] = list(teams)
    if shadow is not None:
        rec["shadow"] = {"model": shadow[0], "items": list(shadow[1])}
    return rec


def event(
    of: Record, item: str, ts: int | None = None, kind: str = "click", value: float | None = None
) -> Record:
    rec: Record = {
        "v": 1,
        "type": "event",
        "ts": of["ts"] + 1500 if ts is None else ts,
        "id": of["id"],
        "route": of["route"],
        "arm": of["arm"],
        "item": item,
        "kind": kind,
        "exposed_ts": of["ts"],
    }
    if value is not None:
        rec["value"] = value
    return rec


def schema_problems(rec: Record) -> list[str]:
    """Keys the schema requires and is missing, or has and does not allow."""
    spec = SCHEMA["$defs"][rec.get("type", "")]
    missing = [k for k in spec["required"] if k not in rec]
    unknown = [k for k in rec if k not in spec["properties"]]
    return [f"missing {k}" for k in missing] + [f"unknown {k}" for k in unknown]


def write_jsonl(path: Path, records: Iterable[Record]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for rec in records:
            fh.write(orjson.dumps(rec) + b"\n")
    return path


def xadd_all(client: redis.Redis, key: str, records: Iterable[Record]) -> None:
    """Add records as the sink does (field r), with entry ids at or after each ts."""
    pipe = client.pipeline(transaction=False)
    last = 0
    for rec in sorted(records, key=lambda r: r["ts"]):
        last = max(last, rec["ts"])
        pipe.xadd(key, {"r": orjson.dumps(rec)}, id=f"{last}-*")
    pipe.execute()


# --- read back -------------------------------------------------------------------------


def readout(
    records: Iterable[Record],
    routes: Iterable[Route] = (),
    route: str | None = None,
    tuning: Tuning = DEFAULT_TUNING,
) -> Report:
    """The report on ``records``, each parsed as a log line is."""
    parsed = (parse_record(orjson.dumps(r)) for r in records)
    return Readout(route=route).add_all(parsed).result(list(routes), tuning)


def route_of(report: Report, name: str = "home-feed") -> RouteReport:
    return next(r for r in report.routes if r.route == name)


def home_feed(*experiments: dict[str, object]) -> Route:
    return Route.model_validate(
        {
            "name": "home-feed",
            "match": {"path": "/api/feed"},
            "model": "ranker_v1",
            "experiments": experiments,
        }
    )


# --- simulated traffic ----------------------------------------------------------------

CATALOG = [f"m{i}" for i in range(200)]


def catalog_appeal(rng: random.Random) -> dict[str, float]:
    return {item: rng.random() ** 2 for item in CATALOG}


def ranked(
    rng: random.Random, appeal: dict[str, float], noise: float, n: int = 40, top: int = 10
) -> tuple[list[str], list[str]]:
    """(candidates, a ranker's top list): noisier rankers put less appealing items first."""
    candidates = rng.sample(CATALOG, n)
    order = sorted(candidates, key=lambda i: -(appeal[i] + rng.gauss(0, noise)))
    return candidates, order[:top]


def team_draft(a: Sequence[str], b: Sequence[str], rng: random.Random, top: int = 10):
    """Team-draft interleaving (Radlinski et al. 2008): each round a coin says which team
    picks first; each team adds its best item not yet taken."""
    out: list[str] = []
    teams: list[str | None] = []
    while len(out) < top:
        progressed = False
        for team in "AB" if rng.random() < 0.5 else "BA":
            pool = a if team == "A" else b
            pick = next((x for x in pool if x not in out), None)
            if pick is not None and len(out) < top:
                out.append(pick)
                teams.append(team)
                progressed = True
        if not progressed:
            break
    return out, teams


WEAK_NOISE = 0.3  # ranker_v1 sorts by appeal + N(0, 0.3): it is worse than
STRONG_NOISE = 0.1  # ranker_v2, but not by much: most of their top 10 is the same


def clicks_on(
    rng: random.Random, items: Sequence[str], appeal: dict[str, float], scale: float = 3.0
) -> list[str]:
    """A position-based click model with users who differ: each exposure's user has a
    propensity (most rarely click, a few click a lot), and the item at slot k is clicked
    with scale * propensity * appeal / (k + 1). Differing users are what makes an A/B test of
    CTR slow, and what interleaving (both models in one user's list) cancels."""
    propensity = rng.betavariate(0.3, 2.0)
    return [
        item
        for k, item in enumerate(items)
        if rng.random() < scale * propensity * appeal[item] / (k + 1)
    ]


def ab_traffic(n: int, seed: int, ts: int = T0) -> list[Record]:
    """n exposures, half served by the weaker ranker (default arm) and half by the better
    one (arm beta), each to its own unit, with clicks from the click model."""
    rng = random.Random(seed)
    appeal = catalog_appeal(random.Random(1))
    out: list[Record] = []
    for i in range(n):
        arm, model, noise = (
            ("beta", "ranker_v2", STRONG_NOISE) if i % 2 else ("default", "ranker_v1", WEAK_NOISE)
        )
        _, items = ranked(rng, appeal, noise)
        rec = exposure(request_id(rng), arm, f"u{i}", items, ts + i, model=model)
        out.append(rec)
        out += [event(rec, item) for item in clicks_on(rng, items, appeal)]
    return out


def interleaved_traffic(n: int, seed: int, ts: int = T0) -> list[Record]:
    """n exposures of one interleaved arm: team A the weaker ranker, B the better one."""
    rng = random.Random(seed)
    appeal = catalog_appeal(random.Random(1))
    out: list[Record] = []
    for i in range(n):
        candidates = rng.sample(CATALOG, 40)
        a = sorted(candidates, key=lambda x: -(appeal[x] + rng.gauss(0, WEAK_NOISE)))
        b = sorted(candidates, key=lambda x: -(appeal[x] + rng.gauss(0, STRONG_NOISE)))
        items, teams = team_draft(a, b, rng)
        rec = exposure(
            request_id(rng),
            "v1-vs-v2",
            f"u{i}",
            items,
            ts + i,
            model="ranker_v1+ranker_v2",
            teams=teams,
        )
        out.append(rec)
        out += [event(rec, item) for item in clicks_on(rng, items, appeal)]
    return out


ML_MODELS = ("ranker_v1", "ranker_v2", "ranker_v3")
ML_NOISES = (0.6, 0.3, 0.05)  # ranker_v3 by far the best, ranker_v1 the worst


def multileaved_traffic(
    users: int, per_user: int, seed: int, ts: int = T0, arm: str = "tri"
) -> list[Record]:
    """``per_user`` exposures for each of ``users`` users of one arm multileaving three
    rankers (proxy/feed/interleave.py's team-draft, seeded from the request id as
    rankgate does), each ranker noisier than the next; clicks from the click model."""
    from proxy.feed.interleave import multileave, seed_of

    rng = random.Random(seed)
    appeal = catalog_appeal(random.Random(1))
    out: list[Record] = []
    for i in range(users * per_user):
        candidates = rng.sample(CATALOG, 30)
        orders = [
            sorted(range(30), key=lambda x: -(appeal[candidates[x]] + rng.gauss(0, noise)))
            for noise in ML_NOISES
        ]
        rid = request_id(rng)
        picked, teams = multileave(orders, seed_of(rid))
        items = [candidates[x] for x in picked[:10]]
        unit = f"u{i % users}"
        model = "+".join(ML_MODELS)
        rec = exposure(rid, arm, unit, items, ts + i, model=model, teams=teams[:10])
        out.append(rec)
        out += [event(rec, item) for item in clicks_on(rng, items, appeal)]
    return out


def percent_traffic(
    units: int,
    seed: int,
    salt: str,
    percent: float,
    arm: str = "beta",
    keep: Callable[[str, str], bool] = lambda unit, arm: True,
    ts: int = T0,
) -> list[Record]:
    """One exposure per unit, on `arm` when the unit's bucket under `salt` is below
    `percent` (as rankgate assigns), else on default; `keep` drops some (a skew)."""
    rng = random.Random(seed)
    out = []
    for i in range(units):
        unit = f"user-{i}"
        chosen = arm if bucket(salt, unit) < percent else "default"
        if keep(unit, chosen):
            out.append(exposure(request_id(rng), chosen, unit, ["a", "b"], ts + i))
    return out


def readme_log(directory: Path, seed: int = 2) -> list[Path]:
    """The log behind the example report of docs/reference/cli.md: a day of the home-feed route of
    config/routes.yaml (default ranker_v1, beta-cookie, spring-test at 10% by bucket),
    plus an interleaved arm v1-vs-v2 and a shadow model on some default requests; two
    files, as two processes of the JSONL sink would write them."""
    rng = random.Random(seed)
    appeal = catalog_appeal(random.Random(1))
    day = 86_400_000
    records: list[Record] = []
    for _ in range(3000):
        unit = f"{rng.getrandbits(32):08x}"
        roll = rng.random()
        # Arms chosen by the client (a cookie) come before the percent arm, as in routes.yaml.
        if roll < 0.02:
            arm = "beta-cookie"
        elif roll < 0.2:
            arm = "v1-vs-v2"  # the interleaved arm, here by a cookie too
        elif bucket("spring-test", unit) < 10:
            arm = "spring-test"
        else:
            arm = "default"
        for _ in range(rng.randint(1, 4)):
            ts = T0 + rng.randrange(day)
            rid = request_id(rng)
            candidates = rng.sample(CATALOG, 40)
            weak = sorted(candidates, key=lambda x: -(appeal[x] + rng.gauss(0, WEAK_NOISE)))
            strong = sorted(candidates, key=lambda x: -(appeal[x] + rng.gauss(0, STRONG_NOISE)))
            outcome, reason = "applied", None
            roll = rng.random()
            if roll < 0.03:
                outcome, reason = "skipped", "unknown-user"
            elif roll < 0.04:
                outcome, reason = "skipped", "budget"
            kw: dict[str, Any] = {}
            if arm == "v1-vs-v2" and outcome == "applied":
                items, teams = team_draft(weak, strong, rng, top=20)
                kw = {"model": "ranker_v1+ranker_v2", "teams": teams}
            elif outcome != "applied":
                items = candidates[:20]  # the origin's order
                kw = {
                    "model": "ranker_v1+ranker_v2"
                    if arm == "v1-vs-v2"
                    else "ranker_v1"
                    if arm == "default"
                    else "ranker_v2"
                }
            elif arm == "default":
                items = weak[:20]
                if rng.random() < 0.2:
                    kw = {"shadow": ("ranker_v2", strong[:20])}
            else:
                items = strong[:20]
                kw = {"model": "ranker_v2"}
            rec = exposure(rid, arm, unit, items, ts, outcome=outcome, reason=reason, **kw)
            records.append(rec)
            for item in clicks_on(rng, items, appeal, scale=1.5):
                records.append(event(rec, item, ts=ts + rng.randrange(1000, 60_000)))
    for _ in range(150):  # requests without a user: the default arm, never a percent one
        rec = exposure(
            request_id(rng),
            "default",
            None,
            rng.sample(CATALOG, 20),
            T0 + rng.randrange(day),
            outcome="skipped",
            reason="no-user",
        )
        records.append(rec)
    records.sort(key=lambda r: r["ts"])
    return [
        write_jsonl(directory / "exposures-web1-41-000001.jsonl", records[0::2]),
        write_jsonl(directory / "exposures-web2-57-000001.jsonl", records[1::2]),
    ]
