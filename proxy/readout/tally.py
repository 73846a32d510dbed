"""The readout's accumulators: what one arm and one shadow model of a route add up as
records stream in (proxy/readout/join.py feeds them; proxy/readout/report.py turns them into
figures). Definitions of each figure: proxy/readout/join.py's docstring.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import dataclass, field

from proxy.readout.logreader import Event, Exposure
from proxy.readout.stats import kendall_tau, top_k_overlap

OVERLAP_K = 10


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
    units: set[str] = field(default_factory=set)
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

    def expose(self, record: Exposure) -> None:
        self.exposures += 1
        self.models[record.model] += 1
        if record.outcome == "applied":
            self.applied += 1
        else:
            self.reasons[record.reason or record.outcome] += 1
        if record.unit is not None:
            self.units.add(record.unit)
        if record.teams is not None:
            self.interleaved += 1

    def credit(self, teams: list[str | None]) -> None:
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
    shadow: ShadowTally | None
    items: tuple[str, ...]
    teams: tuple[str | None, ...] | None
    shadow_items: tuple[str, ...] | None

    def settle(self, events: list[Event]) -> None:
        """Count the exposure's events into its arm and shadow."""
        arm = self.arm
        clicked: list[str] = []
        for event in events:
            if event.kind == "click":
                arm.clicks += 1
                if event.item not in clicked:
                    clicked.append(event.item)
            else:
                arm.conversions += 1
                arm.conversion_value.add(event.value or 0.0)
        if not clicked:
            return
        arm.clicked += 1
        position = {item: i for i, item in reversed(list(enumerate(self.items)))}
        served = [(item, position[item]) for item in clicked if item in position]
        for _, pos in served:
            arm.reciprocal_ranks.add(1.0 / (pos + 1))
        if self.teams is not None and served:
            arm.credit([self.teams[pos] for _, pos in served])
        if self.shadow is not None and self.shadow_items is not None:
            self.shadow.compare(self.shadow_items, served)
