"""``rankgate experiments report --html FILE``: the report as one self-contained page.

No script and nothing fetched: inline CSS and SVG, so the file can be mailed, attached
to a ticket or opened offline. Per route: the verdict of each arm with its lift over time
and the confidence band around it (the figures a report read at each of the cut-offs of
``Report.routes[].over_time`` would have printed), the split of units against the
configured one with the sample ratio test, interleaving, and the table of arms.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from proxy.readout.banditview import bandit_html
from proxy.readout.compare import ArmFigures
from proxy.readout.multileave import MultileaveReport
from proxy.readout.report import InterleaveReport, Report, RouteReport, method_line
from proxy.readout.verdict import Tuning

__all__ = ["render_html"]

COLOURS = {
    "better": "#1a7f37",
    "worse": "#cf222e",
    "no difference": "#57606a",
    "keep running": "#0969da",
}
ARM_COLOURS = ("#57606a", "#0969da", "#8250df", "#bf3989", "#1a7f37", "#9a6700", "#cf222e")
W, H, LEFT, RIGHT, TOP, BOTTOM = 560, 230, 58, 14, 14, 30

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f6f8fa;
color:#1f2328}
main{max-width:1160px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:20px;margin:28px 0 8px}
.sub{color:#57606a;margin:0 0 4px}
.route{background:#fff;border:1px solid #d0d7de;border-radius:10px;padding:4px 20px 20px;
margin-top:20px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(500px,1fr));gap:16px}
.legend{font-size:13px;color:#57606a;margin:4px 0 0}
.card{border:1px solid #d0d7de;border-radius:8px;padding:14px 16px;background:#fff}
.card h3{margin:0 0 6px;font-size:17px}
.badge{display:inline-block;color:#fff;border-radius:999px;padding:2px 12px;font-weight:600;
font-size:14px;margin-right:8px}
.big{font-size:28px;font-weight:700;margin-right:10px}
.reason{color:#57606a;margin:6px 0 10px}
.split{display:flex;height:26px;border-radius:6px;overflow:hidden;margin:6px 0}
.split div{color:#fff;font-size:12px;line-height:26px;padding:0 6px;white-space:nowrap;
overflow:hidden}
table{border-collapse:collapse;margin-top:14px;width:100%}
th,td{padding:5px 8px;border-bottom:1px solid #d8dee4;text-align:right;font-size:14px}
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}
.srm-ok{color:#1a7f37}.srm-warning{color:#9a6700}.srm-ALARM{color:#cf222e;font-weight:700}
svg text{font:11px system-ui,sans-serif;fill:#57606a}
"""


def _pct(x: float | None, signed: bool = True) -> str:
    if x is None:
        return "-"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


def _p(p: float | None) -> str:
    return "-" if p is None else ("p &lt; 0.0001" if p < 1e-4 else f"p = {p:.2g}")


def _when(ms: int | None, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime(fmt)


def _badge(decision: str | None) -> str:
    if decision is None:
        return ""
    colour = COLOURS.get(decision, "#57606a")
    return f'<span class="badge" style="background:{colour}">{escape(decision)}</span>'


def _nice_step(span: float) -> float:
    raw = span / 4
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0):
        if step >= raw:
            return step
    return 10.0


def _y_range(rows: list[tuple[int, float, float, float]], effect: float) -> tuple[float, float]:
    # The band starts wide; the axis follows the later half so the end stays readable.
    later = rows[len(rows) // 2 :] or rows
    lo = min([-effect] + [r[2] for r in later])
    hi = max([effect] + [r[3] for r in later])
    pad = (hi - lo) * 0.15 or 0.05
    return max(lo - pad, -1.0), min(hi + pad, 5.0)


def lift_chart(points: list[tuple[int, ArmFigures]], effect: float, colour: str) -> str:
    """An SVG of one arm's lift over time, its confidence band (once there is one: a
    verdict waits for readout.min_units), 0 and +-effect."""
    lifts = [(t, f.lift) for t, f in points if f.lift is not None]
    rows = [
        (t, f.lift, f.verdict.interval[0], f.verdict.interval[1])
        for t, f in points
        if f.lift is not None and f.verdict is not None and f.verdict.interval is not None
    ]
    if len(rows) < 2:
        return '<p class="reason">Too few units yet for a chart.</p>'
    t0, t1 = points[0][0], points[-1][0]
    y0, y1 = _y_range(rows, effect)

    def x(t: int) -> float:
        return LEFT + (W - LEFT - RIGHT) * (t - t0) / max(1, t1 - t0)

    def y(v: float) -> float:
        v = min(max(v, y0), y1)
        return TOP + (H - TOP - BOTTOM) * (y1 - v) / (y1 - y0)

    out = [f'<svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="lift over time">']
    out.append(
        f'<rect x="{LEFT}" y="{y(effect):.1f}" width="{W - LEFT - RIGHT}" '
        f'height="{y(-effect) - y(effect):.1f}" fill="#eaeef2"/>'
    )
    step = _nice_step(y1 - y0)
    tick = step * (int(y0 / step) - 1)
    while tick <= y1:
        if tick >= y0:
            out.append(
                f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                f'stroke="#d8dee4"/><text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" '
                f'text-anchor="end">{tick * 100:+.0f}%</text>'
            )
        tick += step
    zero = y(0.0)
    out.append(
        f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{zero:.1f}" y2="{zero:.1f}" stroke="#1f2328"/>'
    )
    band = [f"{x(t):.1f},{y(hi):.1f}" for t, _, _, hi in rows]
    band += [f"{x(t):.1f},{y(lo):.1f}" for t, _, lo, _ in reversed(rows)]
    out.append(f'<polygon points="{" ".join(band)}" fill="{colour}" fill-opacity="0.18"/>')
    line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in lifts)
    out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2.5"/>')
    for t, anchor in ((t0, "start"), ((t0 + t1) // 2, "middle"), (t1, "end")):
        out.append(
            f'<text x="{x(t):.1f}" y="{H - 8}" text-anchor="{anchor}">'
            f"{_when(t, '%m-%d %H:%M')}</text>"
        )
    out.append(
        f'<text x="12" y="{TOP + 4}" transform="rotate(-90 12 {TOP + 4})" '
        'text-anchor="end">lift</text></svg>'
    )
    return "".join(out) + (
        f'<p class="legend">line: the lift as read at each time; shaded: its interval '
        f"(from {_when(rows[0][0], '%m-%d %H:%M')}, when both arms had enough "
        f"units); grey: within +-{effect * 100:g}%</p>"
    )


def _arm_card(r: RouteReport, arm: str, tuning: Tuning, colour: str) -> str:
    a = next(x for x in r.arms if x.arm == arm)
    base = r.arms[0] if r.arms and r.arms[0].arm != arm else None
    points = [(t, f) for t, figs in r.over_time for f in figs if f.arm == arm]
    ci = "no interval yet"
    if a.lift_ci is not None:
        ci = f"interval {_pct(a.lift_ci[0])} to {_pct(a.lift_ci[1])}"
    versus = f" vs {_pct(base.ctr, False)} on {escape(base.arm)}" if base else ""
    return (
        f'<div class="card" data-arm="{escape(arm)}" data-decision="{escape(a.decision or "")}">'
        f"<h3>{escape(arm)} <small>({escape(a.model)})</small></h3>"
        f'<div>{_badge(a.decision)}<span class="big">{_pct(a.lift)}</span>'
        f"lift, {ci}, {_p(a.p_value)}</div>"
        f"<div>CTR {_pct(a.ctr, False)}{versus}; {a.units} units, {a.exposures} exposures</div>"
        f'<p class="reason">{escape(a.reason or "")}</p>'
        f"{lift_chart(points, tuning.min_effect, colour)}</div>"
    )


def _split(r: RouteReport) -> str:
    total = sum(a.units for a in r.arms) or 1
    bars = "".join(
        f'<div style="width:{a.units / total * 100:.2f}%;background:'
        f'{ARM_COLOURS[i % len(ARM_COLOURS)]}" title="{escape(a.arm)}">'
        f"{escape(a.arm)} {a.units / total * 100:.1f}%</div>"
        for i, a in enumerate(r.arms)
        if a.units
    )
    s = r.srm
    if s is None:
        srm = "not in routes.yaml: no configured split, no sample ratio test"
        cls = "srm-none"
    elif s.p_value is None:
        srm, cls = f"no sample ratio test: {s.note}", "srm-none"
    else:
        word = "ALARM" if s.alarm else "warning" if s.warning else "ok"
        cls = f"srm-{word}"
        seen = ", ".join(
            f"{escape(a)} {s.observed[a]} of {s.expected[a]:.0f} expected ({s.split[a] * 100:g}%)"
            for a in s.split
        )
        srm = f"sample ratio {word}: {_p(s.p_value)} (chi-square, {s.df} df): {seen}"
    return (
        f'<h3>Split of units</h3><div class="split">{bars}</div>'
        f'<p class="{cls}" id="srm-{escape(r.route)}">{srm}</p>'
    )


def _interleave_card(i: InterleaveReport) -> str:
    ci = (
        ""
        if i.preference_ci is None
        else (f", interval {i.preference_ci[0]:+.2f} to {i.preference_ci[1]:+.2f}")
    )
    pref = "-" if i.preference is None else f"{i.preference:+.2f}"
    return (
        f'<div class="card" data-interleaved="{escape(i.arm)}" '
        f'data-decision="{escape(i.decision)}">'
        f"<h3>{escape(i.arm)}: {escape(i.model_a)} (A) vs {escape(i.model_b)} (B), "
        f"interleaved</h3><div>{_badge(i.decision)} for {escape(i.model_b)}: "
        f"preference for A {pref}{ci}, {_p(i.p_value)}</div>"
        f"<div>{i.units} units with a click: {i.units_a} preferred A, {i.units_b} B, "
        f'{i.units_even} even</div><p class="reason">{escape(i.reason)}</p></div>'
    )


def _multileave_card(m: MultileaveReport) -> str:
    """Both credit models per model, the pairwise shares (row over column: by exposure /
    by user), the verdicts against the first model, and their agreement."""
    k = len(m.models)
    head = "".join(f"<th>{escape(x)}</th>" for x in m.models)
    rows = []
    for i, x in enumerate(m.models):
        pairs = [(m.exposure_pairs[i][j], m.user_pairs[i][j]) for j in range(k)]
        cells = "".join(
            "<td>-</td>" if i == j else f"<td>{_pct(e, False)} / {_pct(u, False)}</td>"
            for j, (e, u) in enumerate(pairs)
        )
        rows.append(
            f"<tr><td>{escape(x)} ({chr(65 + i)})</td><td>{_pct(m.exposure_wins[i], False)}</td>"
            f"<td>{m.user_prefers[i]}</td>{cells}</tr>"
        )
    verdicts = "".join(
        f'<div data-pair="{escape(v.model)}">{_badge(v.decision)} {escape(v.model)} vs '
        f"{escape(m.models[0])}: preference for {escape(m.models[0])} "
        f"{'-' if v.preference is None else f'{v.preference:+.2f}'}, {_p(v.p_value)} (Holm)"
        f'<p class="reason">{escape(v.reason)}</p></div>'
        for v in m.verdicts
    )
    agree = f"both name {escape(m.best_by_exposure or '')}" if m.agree else "they differ"
    return (
        f'<div class="card" data-multileaved="{escape(m.arm)}" '
        f'data-winner="{escape(m.winner or "")}"><h3>{escape(m.arm)}: {k} models, '
        f"multileaved</h3><div>{m.credited_exposures} of {m.exposures} exposures with a "
        f"credited click, {m.users} users; best by exposure "
        f"{escape(m.best_by_exposure or 'none')}, by user {escape(m.best_by_user or 'none')}: "
        f"{agree}; pairwise signs agree on {m.pairs_agreeing} of {m.pairs}</div>"
        f"<table><tr><th>model</th><th>exposures won</th><th>users preferring</th>{head}</tr>"
        f"{''.join(rows)}</table>{verdicts}"
        f"<div>best model: {escape(m.winner or 'none yet')}</div></div>"
    )


def _table(r: RouteReport) -> str:
    head = "<tr><th>arm</th><th>model</th><th>units</th><th>exposures</th><th>applied</th>"
    head += "<th>CTR</th><th>interval</th><th>lift</th><th>p</th><th>MRR</th></tr>"
    rows = []
    for a in r.arms:
        ci = "-"
        if a.ctr_ci is not None:
            ci = f"{_pct(a.ctr_ci[0], False)} to {_pct(a.ctr_ci[1], False)}"
        mrr = "-" if a.mrr is None else f"{a.mrr:.3f}"
        p = "-" if a.p_value is None else f"{a.p_value:.2g}"
        rows.append(
            f"<tr><td>{escape(a.arm)}</td><td>{escape(a.model)}</td><td>{a.units}</td>"
            f"<td>{a.exposures}</td><td>{_pct(a.applied_share, False)}</td>"
            f"<td>{_pct(a.ctr, False)}</td><td>{ci}</td><td>{_pct(a.lift)}</td>"
            f"<td>{p}</td><td>{mrr}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _route(r: RouteReport, tuning: Tuning) -> str:
    cards = [
        _arm_card(r, a.arm, tuning, ARM_COLOURS[i % len(ARM_COLOURS)])
        for i, a in enumerate(r.arms)
        if a.decision is not None
    ]
    cards += [_interleave_card(i) for i in r.interleaving]
    cards += [_multileave_card(m) for m in r.multileaving]
    cards += [bandit_html(b) for b in r.bandits]
    return (
        f'<section class="route" id="route-{escape(r.route)}"><h2>route {escape(r.route)}</h2>'
        f'<p class="sub">{r.exposures} exposures</p>{_split(r)}'
        f'<div class="cards">{"".join(cards)}</div>{_table(r)}</section>'
    )


def render_html(report: Report, where: str) -> str:
    t = report.tuning
    title = "Experiment readout"
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width"><title>{title}</title>'
        f"<style>{CSS}</style></head><body><main><h1>{title}</h1>"
        f'<p class="sub">{report.exposures} exposures, {report.events} events from '
        f"{escape(where)}, {_when(report.first_ts)} to {_when(report.last_ts)}</p>"
        f'<p class="sub" id="method">{escape(method_line(t))}. Shaded: the lift&#39;s '
        f"interval at each time; grey: within +-{t.min_effect * 100:g}% (no difference).</p>"
        f"{''.join(_route(r, t) for r in report.routes)}</main></body></html>\n"
    )
