"""The experiment readout: join events to exposures and compute, per route and arm, what
``rankgate experiments report`` prints.

Records stream through :meth:`Readout.add` in any order (a click may be read before the
exposure it follows). Counts that need no join are tallied at once; for the join, each
exposure keeps only its arm and served ids, and the events are matched in
:meth:`Readout.result`.

Definitions (docs/reference/cli.md, `rankgate experiments report`, says the same for users):

- An arm's exposures count every feed decision on it, applied or not (intent to treat: a
  skip is part of what the arm does).
- Only events on a served item count: an event whose item is neither among the record's
  ``items`` nor, hashed, in its ``item_hashes`` (proxy/readout/served.py) is counted in
  ``unserved_events`` and credits nothing.
- CTR: exposures with at least one click / exposures, a ratio of sums over units (users);
  its interval, the lift (CTR / the default arm's CTR - 1), its interval and p-value take
  the unit as the observation, always-valid by default (proxy/readout/sequential.py), and
  each arm gets a verdict (proxy/readout/verdict.py, proxy/readout/compare.py).
- MRR: the mean of 1 / (position + 1) over distinct (exposure, clicked item) pairs whose
  item was served.
- Interleaving: each distinct clicked item credits the team that placed it; an exposure
  with a click on a served item is won by the team with more credits, else a tie; each
  unit votes once, for the team that won more of its exposures.
- Shadow: per run, Kendall tau and top-10 overlap between the served order and the
  shadow's; per clicked served item, whether the shadow placed it higher.

The accumulators are in proxy/readout/tally.py, the figures and the JSON in
proxy/readout/report.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from proxy.config.routes import Route
from proxy.readout.logreader import Event, Exposure
from proxy.readout.periods import BanditTally
from proxy.readout.report import Report, route_report
from proxy.readout.served import item_hash, unpack
from proxy.readout.tally import ArmTally, Join, ShadowTally
from proxy.readout.verdict import DEFAULT_TUNING, Tuning

__all__ = ["Readout"]


class Readout:
    """Feed it records (:meth:`add`), then ask for the :class:`Report`."""

    def __init__(self, route: str | None = None) -> None:
        self.route = route  # only this route, when given
        self._arms: dict[str, dict[str, ArmTally]] = {}
        self._shadows: dict[str, dict[str, ShadowTally]] = {}
        self._bandits: dict[str, dict[str, BanditTally]] = {}  # route -> bandit arm -> periods
        self._joins: dict[str, Join] = {}
        self._hashes: dict[str, str] = {}  # request id -> item_hashes, unpacked when joined
        self._unserved = 0
        self._ids: dict[str, str] = {}
        self._events: dict[str, list[Event]] = {}
        self._exposures = 0
        self._event_count = 0
        self._duplicates = 0
        self._first: int | None = None
        self._last: int | None = None

    def add_all(self, records: Iterable[Exposure | Event]) -> Readout:
        for record in records:
            self.add(record)
        return self

    def add(self, record: Exposure | Event) -> None:
        if self.route is not None and record.route != self.route:
            return
        ts = record.ts
        self._first = ts if self._first is None else min(self._first, ts)
        self._last = ts if self._last is None else max(self._last, ts)
        if isinstance(record, Event):
            self._event_count += 1
            self._events.setdefault(record.id, []).append(record)
            return
        if record.id in self._joins:
            # The same record read twice (e.g. a file given twice): count it once.
            self._duplicates += 1
            return
        self._exposures += 1
        arm = self._arms.setdefault(record.route, {}).setdefault(record.arm, ArmTally())
        index = arm.expose(record)
        if (tag := record.bandit) is not None:
            bandits = self._bandits.setdefault(record.route, {})
            bandit = bandits.setdefault(tag.arm, BanditTally(tag.models))
            bandit.add(tag, record.arm, arm, index, record.ts)
        shadow = None
        if record.shadow_model is not None and record.shadow_items is not None:
            shadow = self._shadows.setdefault(record.route, {}).setdefault(
                record.shadow_model, ShadowTally()
            )
            shadow.run(record.arm, record.items, record.shadow_items)
        # The served ids wait in memory for their clicks; one string per distinct id
        # (a catalog repeats across lists) keeps that to a pointer per slot.
        ids = self._ids
        items = tuple([ids.setdefault(i, i) for i in record.items])
        shadow_items = record.shadow_items
        if shadow_items is not None:
            shadow_items = tuple([ids.setdefault(i, i) for i in shadow_items])
        self._joins[record.id] = Join(arm, index, shadow, items, record.teams, shadow_items)
        if record.item_hashes:
            self._hashes[record.id] = record.item_hashes

    def _join_events(self) -> int:
        orphans = 0
        for request_id, events in self._events.items():
            join = self._joins.get(request_id)
            if join is None:
                orphans += len(events)
                continue
            served = self._served(request_id, join.items, events)
            self._unserved += len(events) - len(served)
            if served:
                join.settle(served)
        return orphans

    def _served(self, request_id: str, items: tuple[str, ...], events: list[Event]) -> list[Event]:
        """The events on an item that the exposure served."""
        listed = set(items)
        hashed: frozenset[bytes] | None = None
        out = []
        for event in events:
            if event.item not in listed:
                if hashed is None:
                    hashed = unpack(self._hashes.get(request_id, "")) or frozenset()
                if item_hash(event.item) not in hashed:
                    continue
            out.append(event)
        return out

    def arms(self, route: str) -> dict[str, ArmTally]:
        """A route's arms as read (joined once :meth:`result` ran): for figures over time."""
        return self._arms.get(route, {})

    def result(
        self, routes: Sequence[Route] = (), tuning: Tuning = DEFAULT_TUNING, points: int = 0
    ) -> Report:
        """The report; ``routes`` (from routes.yaml) give the arm order and the split;
        ``points``: figures at that many cut-offs through the log too (for a chart)."""
        orphans = self._join_events()
        self._events.clear()  # joined: a second call must not count the clicks again
        configured = {r.name: r for r in routes}
        names = [r.name for r in routes if r.name in self._arms]
        names += sorted(set(self._arms) - set(names))
        if self.route is not None and self.route not in names:
            names.append(self.route)
        out = [
            route_report(
                name,
                self._arms.get(name, {}),
                self._shadows.get(name, {}),
                configured.get(name),
                tuning,
                (self._first, self._last, points),
                self._bandits.get(name, {}),
            )
            for name in names
        ]
        return Report(
            routes=out,
            exposures=self._exposures,
            events=self._event_count,
            duplicate_exposures=self._duplicates,
            orphan_events=orphans,
            unserved_events=self._unserved,
            first_ts=self._first,
            last_ts=self._last,
            tuning=tuning,
        )
