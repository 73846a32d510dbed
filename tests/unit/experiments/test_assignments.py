"""Live assignment counts: requests and distinct users per arm, the sample ratio test
on them, the bound on remembered users, and the workers' counts added up."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from proxy.experiments import assignments
from proxy.experiments.assignments import Assignments, merge
from proxy.outcome.record import RequestRecord
from proxy.routing.arms import ArmChooser
from proxy.routing.snapshot import Snapshot, build_snapshot
from tests.support.common import DIM, dot_model

ROUTES = """\
models: {dot: {path: dot.onnx}}
routes:
  - name: feed
    match: {path: /feed}
    model: dot
    experiments:
      - {name: beta, when: {header: {X-Beta: "1"}}, model: dot}
      - {name: half, when: {percent: 50, salt: s}, model: none}
"""


@pytest.fixture
def snapshot(tmp_path: Path) -> Snapshot:
    dot_model(tmp_path / "dot.onnx")
    (tmp_path / "routes.yaml").write_text(textwrap.dedent(ROUTES))
    return build_snapshot(tmp_path / "routes.yaml", DIM, 1, None)


def record(user: str | None, arm: str) -> RequestRecord:
    rec = RequestRecord("GET", "/feed")
    rec.route, rec.arm, rec.user_id = "feed", arm, user
    return rec


def assigned(snapshot: Snapshot, users: range) -> Assignments:
    """Each user's arm as the route chooses it, three requests each."""
    from plugins.context import RequestView

    live = Assignments()
    chooser: ArmChooser = snapshot.routes[0].arms
    for k in users:
        arm = chooser.choose(RequestView({}, {}, {}), f"u{k}").name
        for _ in range(3):
            live.observe(record(f"u{k}", arm))
    return live


def arms_of(view: dict) -> dict[str, tuple[int, int]]:
    return {a["arm"]: (a["requests"], a["units"]) for a in view["routes"][0]["arms"]}


def test_a_fair_split_raises_no_alarm(snapshot: Snapshot) -> None:
    live = assigned(snapshot, range(2000))
    live.observe(record(None, "default"))  # no user: a request, no unit
    view = live.describe(snapshot)
    arms = arms_of(view)
    assert arms["beta"] == (0, 0)
    assert arms["half"][1] + arms["default"][1] == 2000
    assert arms["default"][0] == 3 * arms["default"][1] + 1
    route = view["routes"][0]
    assert route["split"] == {"half": 0.5, "default": 0.5}
    assert route["srm"]["p_value"] > 0.01 and not route["srm"]["alarm"]


def test_a_skewed_split_raises_the_alarm(snapshot: Snapshot) -> None:
    live = assigned(snapshot, range(2000))
    for k in range(300):  # users lost from one arm, as a broken path would lose them
        live.observe(record(f"extra{k}", "default"))
    route = live.describe(snapshot)["routes"][0]
    assert route["srm"]["alarm"] and route["srm"]["p_value"] < 0.001


def test_workers_add_up(snapshot: Snapshot) -> None:
    one = assigned(snapshot, range(0, 1000)).describe(snapshot)
    two = assigned(snapshot, range(1000, 2000)).describe(snapshot)
    both = merge([one, two])
    whole = assigned(snapshot, range(2000)).describe(snapshot)
    assert arms_of(both) == arms_of(whole) and both["workers"] == 2
    assert both["routes"][0]["srm"]["p_value"] == pytest.approx(
        whole["routes"][0]["srm"]["p_value"]
    )


def test_remembered_users_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assignments, "MAX_UNITS", 10)
    live = Assignments()
    for k in range(25):
        live.observe(record(f"u{k}", "default"))
    assert live.remembered == 10 and live.capped
    assert live.requests[("feed", "default")] == 25
