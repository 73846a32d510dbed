"""A bandit's report (proxy/readout/periods.py) as ``experiments report`` shows it: the
lines of the text report, a section of the HTML page, and its JSON.

Text, per bandit: each model's CTR weighted by period with its interval, its lift over the
control and verdict; then per period each model's weight, units and CTR, with the period's
sample ratio test; then the test combined over the periods.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from proxy.readout.periods import BanditReport, PeriodFigures
from proxy.readout.srm import SrmResult

__all__ = ["bandit_html", "bandit_json", "bandit_lines", "p_short", "pct", "srm_json", "srm_word"]


def pct(value: float | None, signed: bool = False) -> str:
    """A share as the text report writes it (also proxy/cli/report_text.py)."""
    if value is None:
        return "-"
    return f"{value * 100:+.1f}%" if signed else f"{value * 100:.1f}%"


def p_short(value: float | None) -> str:
    if value is None:
        return "-"
    return "<0.0001" if value < 1e-4 else f"{value:.2g}"


def srm_word(s: SrmResult) -> str:
    if s.p_value is None:
        return "no test"
    return "ALARM" if s.alarm else "warning" if s.warning else "ok"


def _srm_text(s: SrmResult, periods: int) -> str:
    if s.p_value is None:
        return f"no test: {s.note}"
    seen = ", ".join(f"{m} {s.observed[m]} ({s.expected[m]:.1f} expected)" for m in s.observed)
    line = (
        f"{srm_word(s)}: p = {p_short(s.p_value)} (chi-square, {s.df} df, {periods} periods) over "
        f"{sum(s.observed.values())} units by period: {seen}"
    )
    return f"{line}; {s.note}" if s.note else line


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _from(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%m-%d %H:%M:%S")


def _period_cell(p: PeriodFigures, k: int) -> str:
    m = p.models[k]
    return f"{m.weight:.2f} / {m.units} / {pct(m.ctr)}"


def bandit_lines(b: BanditReport, interval: str) -> list[str]:
    """The text report's lines for one bandit (``interval``: the CTR interval's label)."""
    weighed = sum(p.share is not None for p in b.periods)
    out = [
        f"{b.arm}: {', '.join(b.models)}; {len(b.periods)} periods, {weighed} in which every "
        f"model was served; each model against {b.control} on its CTR weighted by period "
        "(units summed over those periods)"
    ]
    rows = [["model", "units", "exposures", "CTR", interval, "lift", "p", "verdict"]]
    for r in b.results:
        ci = "-" if r.weighted_ctr_ci is None else "-".join(map(pct, r.weighted_ctr_ci))
        rows.append(
            [r.model, str(r.units), str(r.exposures), pct(r.weighted_ctr), ci,
             pct(r.lift, signed=True), p_short(r.p_value), r.decision or "(control)"]
        )  # fmt: skip
    out += ["  " + line for line in _columns(rows)]
    out += [f"  {r.model}: {r.decision}: {r.reason}" for r in b.results if r.decision]
    rows = [["period", "from (UTC)", "share", *(f"{m} weight / units / CTR" for m in b.models)]]
    rows[0].append("sample ratio")
    for p in b.periods:
        share = "-" if p.share is None else f"{p.share:.3f}"
        cells = [_period_cell(p, k) for k in range(len(b.models))]
        srm = srm_word(p.srm) + ("" if p.srm.p_value is None else f" p = {p_short(p.srm.p_value)}")
        rows.append([str(p.period), _from(p.first_ts), share, *cells, srm])
    out += ["  " + line for line in _columns(rows)]
    out.append(f"  sample ratio by period: {_srm_text(b.srm, len(b.periods))}")
    if b.mismatched:
        out.append(f"  {b.mismatched} records whose models or weights differ from their period's")
    return out


def bandit_html(b: BanditReport) -> str:
    """A section of the HTML page for one bandit."""
    head = "".join(
        f"<th>{escape(h)}</th>"
        for h in ("model", "units", "exposures", "CTR by period", "interval", "lift", "p")
    )
    rows = []
    for r in b.results:
        ci = "-" if r.weighted_ctr_ci is None else " to ".join(map(pct, r.weighted_ctr_ci))
        rows.append(
            f'<tr data-model="{escape(r.model)}" data-decision="{escape(r.decision or "")}">'
            f"<td>{escape(r.model)}</td><td>{r.units}</td><td>{r.exposures}</td>"
            f"<td>{pct(r.weighted_ctr)}</td><td>{ci}</td><td>{pct(r.lift, True)}</td>"
            f"<td>{p_short(r.p_value)}</td></tr>"
        )
    reasons = "".join(
        f'<p class="reason">{escape(r.model)}: <b>{escape(r.decision)}</b>: '
        f"{escape(r.reason or '')}</p>"
        for r in b.results
        if r.decision
    )
    phead = "<th>period</th><th>from (UTC)</th><th>share</th>" + "".join(
        f"<th>{escape(m)} weight / units / CTR</th>" for m in b.models
    )
    prows = "".join(
        f"<tr><td>{p.period}</td><td>{_from(p.first_ts)}</td>"
        f"<td>{'-' if p.share is None else f'{p.share:.3f}'}</td>"
        + "".join(f"<td>{_period_cell(p, k)}</td>" for k in range(len(b.models)))
        + f'<td class="srm-{srm_word(p.srm)}">{srm_word(p.srm)} {p_short(p.srm.p_value)}</td></tr>'
        for p in b.periods
    )
    word = srm_word(b.srm)
    return (
        f'<div class="card" data-bandit="{escape(b.arm)}"><h3>bandit {escape(b.arm)}: each '
        f"model against {escape(b.control)}, CTR weighted by period</h3>"
        f"<table><tr>{head}</tr>{''.join(rows)}</table>{reasons}"
        f"<table><tr>{phead}<th>sample ratio</th></tr>{prows}</table>"
        f'<p class="srm-{word}">sample ratio by period: '
        f"{escape(_srm_text(b.srm, len(b.periods)))}</p></div>"
    )


def srm_json(s: SrmResult) -> dict[str, Any]:
    keys = ("p_value", "alarm", "warning", "expected", "observed", "split", "statistic", "df")
    return {**{k: getattr(s, k) for k in keys}, "note": s.note}


def _lists(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}


def bandit_json(b: BanditReport) -> dict[str, Any]:
    return {
        "arm": b.arm,
        "models": b.models,
        "control": b.control,
        "results": [_lists(vars(m)) for m in b.results],
        "periods": [
            {
                "period": p.period,
                "first_ts": p.first_ts,
                "share": p.share,
                "models": [vars(m) for m in p.models],
                "srm": srm_json(p.srm),
            }
            for p in b.periods
        ],
        "srm": srm_json(b.srm),
        "mismatched": b.mismatched,
    }
