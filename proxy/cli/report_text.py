"""The text of ``rankgate experiments report``: the records read, the method, and per
route a table of the arms, their verdicts, the sample ratio test, interleaving (and
multileaving) and shadow agreement."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TextIO

from proxy.readout.banditview import bandit_lines, p_short, pct
from proxy.readout.logreader import LogStats
from proxy.readout.multileave import MultileaveReport
from proxy.readout.report import Report, RouteReport, method_line
from proxy.readout.verdict import Tuning

__all__ = ["multileave_lines", "render_route", "render_text"]

TOP_REASONS = 3  # skip reasons per arm in the text report (--json has them all)


def _p_is(value: float | None) -> str:
    shown = p_short(value)
    return f"p < {shown[1:]}" if shown.startswith("<") else f"p = {shown}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        # Names left-aligned, figures right-aligned.
        cells = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  " + "  ".join(cells).rstrip(), file=out)


def _srm_line(r: RouteReport) -> str:
    if r.srm is None:
        return "not in routes.yaml: no configured split, no test"
    s = r.srm
    if s.p_value is None:
        return f"no test: {s.note}"
    verdict = "ALARM" if s.alarm else "warning" if s.warning else "ok"
    seen = ", ".join(f"{arm} {s.observed[arm]} ({s.expected[arm]:.1f} expected)" for arm in s.split)
    line = (
        f"{verdict}: {_p_is(s.p_value)} (chi-square, {s.df} df) over "
        f"{sum(s.observed.values())} units: {seen}"
    )
    return f"{line}; {s.note}" if s.note else line


def _block(label: str, lines: list[str], out: TextIO) -> None:
    for i, line in enumerate(lines):
        print(f"  {label if i == 0 else '':<13}{line}", file=out)


def interval_label(t: Tuning) -> str:
    level = f"{(1 - t.alpha) * 100:g}%"
    return f"{level} CS" if t.sequential else f"{level} CI"


def _arm_rows(r: RouteReport, t: Tuning) -> list[list[str]]:
    rows = [["arm", "model", "exposures", "units", "applied", "clicks", "CTR", interval_label(t)]]
    rows[0] += ["lift", "p", "MRR"]
    for a in r.arms:
        ci = "-" if a.ctr_ci is None else f"{pct(a.ctr_ci[0])}-{pct(a.ctr_ci[1])}"
        rows.append(
            [a.arm, a.model, str(a.exposures), str(a.units), pct(a.applied_share),
             str(a.clicks), pct(a.ctr), ci, pct(a.lift, signed=True), p_short(a.p_value),
             _num(a.mrr, 3)]
        )  # fmt: skip
    return rows


def render_route(r: RouteReport, t: Tuning, out: TextIO) -> None:
    print(f"route {r.route}: {r.exposures} exposures", file=out)
    if not r.arms:
        print("  no exposures", file=out)
        return
    _table(_arm_rows(r, t), out)
    verdicts = [f"{a.arm}: {a.decision}: {a.reason}" for a in r.arms if a.decision is not None]
    _block("verdict", verdicts, out)
    skips = [
        f"{a.arm}: " + ", ".join(f"{k} {n}" for k, n in list(a.skip_reasons.items())[:TOP_REASONS])
        for a in r.arms
        if a.skip_reasons
    ]
    _block("not applied", skips, out)
    _block("sample ratio", [_srm_line(r)], out)
    for b in r.bandits:  # period by period: the fair comparison of a bandit's models
        _block("bandit", bandit_lines(b, interval_label(t)), out)
    for i in r.interleaving:
        said = {"better": f"{i.model_b} better", "worse": f"{i.model_b} worse"}
        ci = "" if i.preference_ci is None else f" ({_signed(i.preference_ci[0])} to "
        ci += "" if i.preference_ci is None else f"{_signed(i.preference_ci[1])})"
        _block(
            "interleaved",
            [
                f"{i.arm}: {i.model_a} (A) vs {i.model_b} (B): {i.clicked_exposures} of "
                f"{i.exposures} exposures with a click; by unit: {i.units_a} preferred A, "
                f"{i.units_b} B, {i.units_even} even",
                f"preference for A {_signed(i.preference)}{ci}, {_p_is(i.p_value)}",
                f"{said.get(i.decision, i.decision)}: {i.reason}",
            ],
            out,
        )
    for m in r.multileaving:
        _block("multileaved", multileave_lines(m), out)
    for s in r.shadow:
        _block(
            "shadow",
            [
                f"{s.model} on {', '.join(s.arms)}: {s.runs} runs, Kendall tau "
                f"{_num(s.kendall_tau)}, top-10 overlap {pct(s.overlap_at_10)}",
                f"of {s.clicks_compared} clicked items, the shadow ranked "
                f"{pct(s.clicked_higher_share)} higher than served",
            ],
            out,
        )


def multileave_lines(m: MultileaveReport) -> list[str]:
    """A multileaved arm: both credit models, their agreement, a verdict per challenger
    against the first model, and the model the verdicts name best."""
    teams = ", ".join(f"{model} ({chr(65 + i)})" for i, model in enumerate(m.models))
    wins = ", ".join(f"{x} {pct(w)}" for x, w in zip(m.models, m.exposure_wins, strict=True))
    users = ", ".join(f"{x} {n}" for x, n in zip(m.models, m.user_prefers, strict=True))
    both = f"both name {m.best_by_exposure}" if m.agree else "they differ on the best model"
    lines = [
        f"{m.arm}: {teams}: {m.credited_exposures} of {m.exposures} exposures with a "
        f"credited click, from {m.users} users",
        f"per exposure (ties split): won {wins} ({m.exposure_ties} tied); best "
        f"{m.best_by_exposure or 'none (a tie)'}",
        f"per user (a tie: no one): preferred {users} ({m.users_tied} tied); best "
        f"{m.best_by_user or 'none (a tie)'}",
        f"agreement: {both}; the pairwise preferences agree in sign on {m.pairs_agreeing} "
        f"of {m.pairs} pairs",
    ]
    k = len(m.models)
    for i, j in [(a, b) for a in range(k) for b in range(a + 1, k)]:
        by_e, by_u = m.exposure_pairs[i][j], m.user_pairs[i][j]
        lines.append(
            f"{m.models[i]} over {m.models[j]}: {pct(by_e)} by exposure, {pct(by_u)} by user"
        )
    for v in m.verdicts:
        ci = "" if v.preference_ci is None else f" ({_signed(v.preference_ci[0])} to "
        ci += "" if v.preference_ci is None else f"{_signed(v.preference_ci[1])})"
        said = {"better": f"{v.model} better", "worse": f"{v.model} worse"}
        lines.append(
            f"{v.model} vs {m.models[0]}: {said.get(v.decision, v.decision)}: by unit "
            f"{v.units_control} preferred {m.models[0]}, {v.units_model} {v.model}, "
            f"{v.units_even} even; preference for {m.models[0]} {_signed(v.preference)}{ci}, "
            f"{_p_is(v.p_value)} (Holm); {v.reason}"
        )
    lines.append(f"best model: {m.winner or 'none yet (no verdict names one)'}")
    return lines


def render_text(report: Report, stats: LogStats, where: str, out: TextIO) -> None:
    print(
        f"{report.exposures} exposures, {report.events} events from {where} "
        f"({_time(report.first_ts)} to {_time(report.last_ts)})",
        file=out,
    )
    print(method_line(report.tuning), file=out)
    if report.orphan_events:
        print(
            f"{report.orphan_events} events follow an exposure not read "
            "(before the window, or dropped): left out",
            file=out,
        )
    if report.unserved_events:
        print(
            f"{report.unserved_events} events name an item their exposure did not serve: "
            "not credited",
            file=out,
        )
    if report.duplicate_exposures:
        print(f"{report.duplicate_exposures} duplicate exposures: counted once", file=out)
    if stats.malformed:
        print(f"{stats.malformed} malformed records skipped", file=out)
    for r in report.routes:
        print(file=out)
        render_route(r, report.tuning, out)
