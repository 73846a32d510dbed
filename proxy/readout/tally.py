"""The readout's accumulators: what one arm and one shadow model of a route add up as
records stream in (proxy/readout/join.py feeds them; proxy/readout/report.py turns them into
figures). Definitions of each figure: proxy/readout/join.py's docstring.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from proxy.readout.logreader import Event, Exposure
from proxy.readout.stats import kendall_tau, top_k_overlap

OVERLAP_K = 10
TEAMS = "ABCDEF"  # an interleaved arm's team letters, in the configured order of its models
NEVER = 2**62  # the click time of an exposure without a click


Counts = npt.NDArray[np.float64]


class Sum:
    """A sum whose result does not depend on the order of its terms (fsum is exactly
    rounded), so a stream and the same records in files give the same report."""

    __slots__ = ("terms",)

    def __init__(self) -> None:
        self.terms = array("d")

    def add(self, value: float) -> None:
        self.terms.append(value)

    def __len__(self) -> int:
        return len(self.terms)

    def mean(self) -> float | None:
        return math.fsum(self.terms) / len(self.terms) if self.terms else None

    def total(self) -> float:
        return math.fsum(self.terms)


@dataclass
class ArmTally:
    exposures: int = 0
    applied: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    units: dict[str, int] = field(default_factory=dict)  # unit -> its index below
    # Per exposure, in the order read: its time, its unit's index (an exposure without a
    # unit is a unit of its own), and the time of its first click (NEVER without one).
    # Statistics take the unit as the observation and can cut the log at any time.
    ts: array[int] = field(default_factory=lambda: array("q"))
    unit_of: array[int] = field(default_factory=lambda: array("q"))
    click_ts: array[int] = field(default_factory=lambda: array("q"))
    unit_count: int = 0
    clicks: int = 0
    clicked: int = 0  # exposures with at least one click
    conversions: int = 0
    conversion_value: Sum = field(default_factory=Sum)
    reciprocal_ranks: Sum = field(default_factory=Sum)
    # interleaved exposures (those with teams)
    interleaved: int = 0
    il_clicked: int = 0
    wins_a: int = 0
    wins_b: int = 0
    ties: int = 0
    unit_wins: dict[int, list[int]] = field(default_factory=dict)  # unit: [A wins, B wins]
    # Per interleaved exposure with a click on a served item: its unit's index, and the
    # clicked items per team A to F (six counts each; proxy/readout/multileave.py).
    ml_unit: array[int] = field(default_factory=lambda: array("q"))
    ml_clicks: array[int] = field(default_factory=lambda: array("H"))

    def expose(self, record: Exposure) -> int:
        """Count an exposure; its index in this arm."""
        index = self.exposures
        self.exposures += 1
        self.models[record.model] += 1
        if record.outcome == "applied":
            self.applied += 1
        else:
            self.reasons[record.reason or record.outcome] += 1
        if record.unit is None:
            unit = self.unit_count  # a unit of its own
        else:
            unit = self.units.setdefault(record.unit, self.unit_count)
        if unit == self.unit_count:
            self.unit_count += 1
        self.ts.append(min(record.ts, NEVER))  # a signed 64-bit array: no ts may overflow it
        self.unit_of.append(unit)
        self.click_ts.append(NEVER)
        if record.teams is not None:
            self.interleaved += 1
        return index

    def clicked_at(self, index: int, ts: int) -> None:
        self.click_ts[index] = min(self.click_ts[index], ts, NEVER)

    def unit_counts(self, until: int | None = None) -> tuple[Counts, Counts]:
        """Per unit with an exposure by ``until`` (a ts; None: all): (exposures, those
        clicked by then)."""
        ts = np.frombuffer(self.ts, dtype=np.int64)
        unit = np.frombuffer(self.unit_of, dtype=np.int64)
        cut = NEVER - 1 if until is None else until
        clicked = np.frombuffer(self.click_ts, dtype=np.int64) <= cut
        seen = slice(None) if until is None else ts <= until
        n = np.bincount(unit[seen], minlength=self.unit_count)
        x = np.bincount(unit[seen], weights=clicked[seen], minlength=self.unit_count)
        keep = n > 0
        n, x = n[keep].astype(np.float64), x[keep]
        # In a canonical order: float sums over them then do not depend on the order the
        # records were read in (a stream and the same records in files agree exactly).
        order = np.lexsort((x, n))
        return n[order], x[order]

    def credit(self, index: int, teams: list[str | None]) -> None:
        """One interleaved exposure's clicks, as the teams that placed the clicked items."""
        self.il_clicked += 1
        a = teams.count("A")
        b = teams.count("B")
        if a > b:
            self.wins_a += 1
        elif b > a:
            self.wins_b += 1
        else:
            self.ties += 1
        wins = self.unit_wins.setdefault(self.unit_of[index], [0, 0])
        wins[0] += a > b
        wins[1] += b > a
        self.ml_unit.append(self.unit_of[index])
        self.ml_clicks.extend(min(teams.count(t), 0xFFFF) for t in TEAMS)

    def unit_votes(self) -> list[int]:
        """Per unit with an interleaved click: +1 when more of its exposures went to A
        than to B, -1 the other way, 0 even."""
        return sorted((a > b) - (b > a) for a, b in self.unit_wins.values())

    def team_clicks(self) -> list[tuple[int, tuple[int, ...]]]:
        """Per interleaved exposure with a click: (its unit's index, clicks per team A-F)."""
        k = len(TEAMS)
        return [(u, tuple(self.ml_clicks[i * k : i * k + k])) for i, u in enumerate(self.ml_unit)]


@dataclass
class ShadowTally:
    arms: set[str] = field(default_factory=set)
    runs: int = 0
    taus: Sum = field(default_factory=Sum)
    overlaps: Sum = field(default_factory=Sum)
    compared: int = 0
    higher: int = 0
    same: int = 0
    lower: int = 0

    def run(self, arm: str, served: tuple[str, ...], shadow_items: tuple[str, ...]) -> None:
        self.arms.add(arm)
        self.runs += 1
        tau = kendall_tau(served, shadow_items)
        if tau is not None:
            self.taus.add(tau)
        overlap = top_k_overlap(served, shadow_items, OVERLAP_K)
        if overlap is not None:
            self.overlaps.add(overlap)

    def compare(self, shadow_items: tuple[str, ...], served: list[tuple[str, int]]) -> None:
        """Where the shadow placed each clicked served item (``served``: item, slot)."""
        rank = {item: i for i, item in reversed(list(enumerate(shadow_items)))}
        for item, pos in served:
            if item in rank:
                other = rank[item]
            elif pos < len(shadow_items):
                other = len(shadow_items)  # beyond the shadow's top N: below the served slot
            else:
                continue  # both beyond what the record holds: no comparison
            self.compared += 1
            if other < pos:
                self.higher += 1
            elif other == pos:
                self.same += 1
            else:
                self.lower += 1


@dataclass(frozen=True, slots=True)
class Join:
    """What one exposure keeps until its events are read: where it counts, and what it
    served."""

    arm: ArmTally
    index: int  # the exposure's index in its arm
    shadow: ShadowTally | None
    items: tuple[str, ...]
    teams: tuple[str | None, ...] | None
    shadow_items: tuple[str, ...] | None

    def settle(self, events: list[Event]) -> None:
        """Count the exposure's events into its arm and shadow."""
        arm = self.arm
        clicked: list[str] = []
        first = NEVER  # when the exposure was first clicked: a report cut earlier omits it
        for event in events:
            if event.kind == "click":
                arm.clicks += 1
                first = min(first, event.ts)
                if event.item not in clicked:
                    clicked.append(event.item)
            else:
                arm.conversions += 1
                arm.conversion_value.add(event.value or 0.0)
        if not clicked:
            return
        arm.clicked += 1
        arm.clicked_at(self.index, first)
        position = {item: i for i, item in reversed(list(enumerate(self.items)))}
        served = [(item, position[item]) for item in clicked if item in position]
        for _, pos in served:
            arm.reciprocal_ranks.add(1.0 / (pos + 1))
        if self.teams is not None and served:
            arm.credit(self.index, [self.teams[pos] for _, pos in served])
        if self.shadow is not None and self.shadow_items is not None:
            self.shadow.compare(self.shadow_items, served)
