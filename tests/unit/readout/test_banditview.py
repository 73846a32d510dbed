"""proxy/readout/banditview.py: a bandit's report as text lines, an HTML section and JSON,
on generated bandit logs (a fair one, and one whose second period was assigned wrongly)."""

from __future__ import annotations

import re

import orjson

from proxy.readout.banditview import bandit_html, bandit_json, bandit_lines
from proxy.readout.periods import BanditReport
from tests.support.bandit_logs import Period, bandit_log, bandit_route
from tests.support.exposure_logs import readout, route_of

RATES = [0.05, 0.1, 0.2]
FAIR = [Period([1 / 3] * 3, RATES), Period([0.1, 0.2, 0.7], RATES)]
BROKEN = [Period([1 / 3] * 3, RATES), Period([0.1, 0.2, 0.7], RATES, assigned=[1 / 3] * 3)]


def bandit_of(periods: list[Period]) -> BanditReport:
    (b,) = route_of(readout(bandit_log(periods, 3000, seed=2), [bandit_route()])).bandits
    return b


def test_text_lines() -> None:
    lines = bandit_lines(bandit_of(FAIR), "95% CS")
    text = "\n".join(lines)
    assert lines[0].startswith("versions: v1, v2, v3; 2 periods, 2 in which every model")
    assert re.search(r"^  model +units +exposures +CTR +95% CS +lift +p +verdict$", text, re.M)
    assert re.search(r"^  v1 .* \(control\)$", text, re.M)
    assert re.search(r"^  v3 .* better$", text, re.M), text
    assert re.search(r"^  v3: better: the lift's interval \+\d", text, re.M)
    assert re.search(r"^  1001 +\d\d-\d\d \d\d:\d\d:\d\d +0\.\d{3} +0\.10 / \d+ / ", text, re.M)
    assert re.search(
        r"^  sample ratio by period: ok: p = \S+ \(chi-square, 4 df, 2 periods\)", text, re.M
    )
    broken = "\n".join(bandit_lines(bandit_of(BROKEN), "95% CS"))
    assert re.search(r"^  1001 .* ALARM p = <0.0001$", broken, re.M), broken
    assert "sample ratio by period: ALARM" in broken


def test_html_section() -> None:
    page = bandit_html(bandit_of(BROKEN))
    assert page.startswith('<div class="card" data-bandit="versions">')
    assert 'data-model="v3" data-decision="better"' in page
    assert 'data-model="v1" data-decision=""' in page  # the control
    assert page.count('<td class="srm-ALARM">') == 1 and page.count('<td class="srm-ok">') == 1
    assert '<p class="srm-ALARM">sample ratio by period: ALARM' in page


def test_json() -> None:
    body = orjson.loads(orjson.dumps(bandit_json(bandit_of(FAIR))))
    assert body["arm"] == "versions" and body["control"] == "v1"
    assert [r["model"] for r in body["results"]] == ["v1", "v2", "v3"]
    v3 = body["results"][2]
    assert (
        v3["decision"] == "better" and len(v3["lift_ci"]) == 2 and len(v3["weighted_ctr_ci"]) == 2
    )
    first, second = body["periods"]
    assert [m["weight"] for m in second["models"]] == [0.1, 0.2, 0.7]
    assert second["srm"]["split"] == {"v1": 0.1, "v2": 0.2, "v3": 0.7}
    assert abs(first["share"] + second["share"] - 1) < 1e-12
    assert body["srm"]["df"] == 4 and body["srm"]["alarm"] is False
    assert sum(body["srm"]["observed"].values()) == 6000  # a unit in both periods counts twice
