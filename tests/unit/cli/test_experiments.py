"""`rankgate experiments report` end to end: JSONL files and a real Redis Stream (Valkey)
give the same report, --since, --route, malformed lines, errors, --fixed-horizon, --html
and `experiments plan`; the CLI reference's "rankgate experiments report" section runs
exactly as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from proxy.cli.experiments import parse_duration
from proxy.cli.main import main
from tests.support.exposure_logs import (
    ROOT,
    Record,
    event,
    exposure,
    interleaved_traffic,
    multileaved_traffic,
    percent_traffic,
    readme_log,
    write_jsonl,
    xadd_all,
)
from tests.support.heavy_users import heavy_log, write_log

ROUTES = """\
models:
  v1: {path: v1.onnx}
  v2: {path: v2.onnx}
routes:
  - name: home-feed
    match: {path: /api/feed}
    model: v1
    experiments:
      - {name: beta, when: {percent: 50, salt: spring}, model: v2}
"""


def config(tmp: Path, redis_url: str | None = None, extra: str = "") -> Path:
    (tmp / "routes.yaml").write_text(ROUTES)
    lines = ['origin: {url: "http://127.0.0.1:9"}', "routes: routes.yaml"]
    if redis_url:
        lines.append(f"redis: {{url: {redis_url!r}}}")
    path = tmp / "rankgate.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def mixed_log(ts: int) -> list[Record]:
    """Percent traffic with clicks, an interleaved arm and shadow runs: every part of the
    report, 2 500+ records (more than one XRANGE chunk)."""
    records = percent_traffic(1500, seed=4, salt="spring", percent=50, ts=ts)
    for rec in records[::5]:
        records.append(event(rec, "a"))
    records += interleaved_traffic(1000, seed=5, ts=ts)
    for i in range(100):
        served = [f"m{j}" for j in range(10)]
        rec = exposure(
            f"{i:024x}",
            "default",
            None,  # no user: outside the sample ratio test
            served,
            ts + i,
            shadow=("v2", served[::-1] if i % 2 else served),
        )
        records += [rec, event(rec, "m9")]
    return records


def report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["experiments", "report", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def json_report(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code, out, err = report(capsys, *args, "--json")
    assert code == 0, err
    body = orjson.loads(out)
    body["records"].pop("source")
    return body


def test_stream_and_jsonl_give_the_same_report(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, redis_url)
    records = mixed_log(int(time.time() * 1000) - 60_000)
    assert len(records) > 2500
    write_jsonl(tmp_path / "log" / "a.jsonl", records[::2])
    write_jsonl(tmp_path / "log" / "b.jsonl", records[1::2])
    xadd_all(redis_db, "rankgate:exposures", records)
    from_files = json_report(capsys, "--config", str(cfg), "--from", str(tmp_path / "log"))
    # No --from: the stream the config names (the default key on redis.url).
    from_stream = json_report(capsys, "--config", str(cfg))
    assert from_files == from_stream
    redis_db.rename("rankgate:exposures", "other")
    assert json_report(capsys, "--config", str(cfg), "--stream", "other") == from_files
    (route,) = from_files["routes"]
    assert [a["arm"] for a in route["arms"]] == ["default", "beta", "v1-vs-v2"]
    assert route["srm"]["alarm"] is False and route["srm"]["p_value"] > 0.01
    il = route["interleaving"][0]
    assert il["exposures"] == 1000 and il["units_b"] > il["units_a"]
    assert route["shadow"][0]["runs"] == 100 and route["shadow"][0]["kendall_tau"] == 0.0
    assert from_files["records"]["malformed"] == 0


def test_text_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    log = write_jsonl(tmp_path / "log.jsonl", mixed_log(1_795_000_000_000))
    code, out, err = report(capsys, "--config", str(cfg), "--from", str(log))
    assert code == 0 and err == ""
    assert out.startswith("2600 exposures, ") and f"from {log} (2026-11-" in out
    assert "route home-feed: 2600 exposures" in out
    assert re.search(r"^  default +ranker_v1 +849 +749 +100.0% +\d+ ", out, re.M)
    assert "  sample ratio ok: p = " in out
    assert "  interleaved  v1-vs-v2: ranker_v1 (A) vs ranker_v2 (B): " in out
    assert "  shadow       v2 on default: 100 runs, Kendall tau 0.00, top-10 overlap 100.0%" in out


def test_sample_ratio_alarm_in_the_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    lossy = percent_traffic(
        4000,
        seed=1,
        salt="spring",
        percent=50,
        keep=lambda unit, arm: arm != "beta" or int(unit[5:]) % 8 != 0,
    )
    log = write_jsonl(tmp_path / "log.jsonl", lossy)
    code, out, _ = report(capsys, "--config", str(cfg), "--from", str(log))
    assert code == 0
    assert re.search(r"^  sample ratio ALARM: p [=<] ", out, re.M), out


def test_since_filters_both_sources(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, redis_url)
    now = int(time.time() * 1000)
    old = [exposure(request_id_(i), "default", f"o{i}", ["a"], now - 7_200_000) for i in range(5)]
    new = [exposure(request_id_(i + 5), "beta", f"n{i}", ["a"], now - 600_000) for i in range(3)]
    clicks = [event(old[0], "a"), event(new[0], "a")]  # the old exposure's click is an orphan
    records = old + new + clicks
    log = write_jsonl(tmp_path / "log.jsonl", records)
    xadd_all(redis_db, "rankgate:exposures", records)
    for source in (["--from", str(log)], []):
        body = json_report(capsys, "--config", str(cfg), "--since", "1h", *source)
        assert body["records"]["exposures"] == 3, source
        assert body["records"]["events"] == 1
        assert [a["arm"] for a in body["routes"][0]["arms"]] == ["beta"]
        everything = json_report(capsys, "--config", str(cfg), "--since", "3h", *source)
        assert everything["records"]["exposures"] == 8 and everything["records"]["events"] == 2


def request_id_(i: int) -> str:
    return f"{i:024x}"


def test_route_filter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    records = [
        exposure(
            request_id_(i),
            "default",
            "u",
            ["a"],
            1_000 + i,
            route="home-feed" if i % 2 else "other",
        )
        for i in range(10)
    ]
    log = write_jsonl(tmp_path / "log.jsonl", records)
    body = json_report(capsys, "--config", str(cfg), "--from", str(log), "--route", "other")
    assert [r["route"] for r in body["routes"]] == ["other"]
    assert body["routes"][0]["srm"] is None and body["routes"][0]["configured"] is False
    code, out, _ = report(capsys, "--config", str(cfg), "--from", str(log))
    assert code == 0
    assert "sample ratio not in routes.yaml: no configured split, no test" in out


def test_malformed_lines_are_counted_and_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path)
    good = [exposure(request_id_(i), "default", f"u{i}", ["a"], 1_000 + i) for i in range(4)]
    log = tmp_path / "log.jsonl"
    log.write_bytes(
        b"\n".join(
            [
                orjson.dumps(good[0]),
                b"\x00\xff garbage",
                orjson.dumps(good[1]),
                orjson.dumps({**good[2], "items": "a"}),
                b"[]",
                orjson.dumps(good[3])[:-3],
            ]
        )
        + b"\n"
    )
    code, out, err = report(capsys, "--config", str(cfg), "--from", str(log))
    assert code == 0
    assert "route home-feed: 2 exposures" in out and "4 malformed records skipped" in out
    assert err.startswith("rankgate: warning: skipped 4 malformed record(s): not JSON (2), ")
    assert f"first: {log}:2: not JSON; {log}:4: items: want a list of strings; " in err
    body = json_report(capsys, "--config", str(cfg), "--from", str(log))
    assert body["records"]["malformed"] == 4 and body["records"]["exposures"] == 2


def test_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], redis_db: redis.Redis
) -> None:
    cfg = config(tmp_path)
    code, _, err = report(capsys, "--config", str(cfg), "--from", str(tmp_path / "nope"))
    assert (code, err) == (1, f"rankgate: {tmp_path / 'nope'}: no such file or directory\n")
    # No redis.url and no --from: the config's embedded Valkey, started for the read.
    code, out, err = report(capsys, "--config", str(cfg))
    assert code == 0 and "started for this read" in err and "0 exposures" in out
    code, _, err = report(capsys, "--config", str(cfg), "--redis-url", "redis://:pw@127.0.0.1:1/0")
    assert code == 1 and err.startswith("rankgate: redis://:***@127.0.0.1:1/0 stream ")
    redis_db.set("rankgate:exposures", "not a stream")
    url = redis_db.connection_pool.connection_kwargs
    code, _, err = report(
        capsys,
        "--config",
        str(cfg),
        "--redis-url",
        f"redis://{url['host']}:{url['port']}/{url.get('db', 0)}",
    )
    assert code == 1 and "WRONGTYPE" in err
    code, _, err = report(capsys, "--config", str(tmp_path / "missing.yaml"))
    assert code == 2 and "file not found" in err
    with pytest.raises(SystemExit) as caught:
        main(["experiments", "report", "--since", "yesterday"])
    assert caught.value.code == 2 and "want a number and a unit" in capsys.readouterr().err


def test_jsonl_sink_directory_from_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An exposures: section with sink jsonl: the report reads its directory.
    cfg = config(tmp_path, extra="exposures: {sink: jsonl, path: logs}\n")
    write_jsonl(tmp_path / "logs" / "x.jsonl", percent_traffic(10, seed=1, salt="s", percent=50))
    body = json_report(capsys, "--config", str(cfg))
    assert body["records"]["exposures"] == 10


def test_parse_duration() -> None:
    assert parse_duration("30m") == 1_800_000
    assert parse_duration("24h") == 86_400_000
    assert parse_duration("7d") == 604_800_000
    assert parse_duration("1.5h") == 5_400_000
    assert parse_duration("90s") == 90_000
    assert parse_duration("2w") == 1_209_600_000


# --- the CLI reference: docs/reference/cli.md --------------------------------------------

PAGE = (ROOT / "docs" / "reference" / "cli.md").read_text()


def readme_section() -> str:
    found = re.search(r"\n## `rankgate experiments report`\n(.*?)(?=\n## |\Z)", PAGE, re.S)
    assert found, "docs/reference/cli.md lost its `rankgate experiments report` section"
    return found.group(1)


def test_readme_readout_runs_as_written(tmp_path: Path) -> None:
    section = readme_section()
    runnable = r"```sh run-by: tests/unit/cli/test_experiments.py\n(.*?)```"
    commands = re.findall(runnable, section, re.S)
    outputs = re.findall(r"```text\n(.*?)```", section, re.S)
    assert len(commands) == 1 and len(outputs) >= 1
    (tmp_path / "config").mkdir()
    for name in ("rankgate.yaml", "routes.yaml"):
        shutil.copy(ROOT / "config" / name, tmp_path / "config" / name)
    readme_log(tmp_path / "exposures")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands[0]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == outputs[0], (
        "docs/reference/cli.md's example report differs from what the command prints; "
        "paste this:\n" + done.stdout
    )
    body = orjson.loads((tmp_path / "report.json").read_bytes())
    (route,) = body["routes"]
    assert route["route"] == "home-feed"
    keys = re.findall(r"`(\w+)`", section.split("JSON", 1)[1])
    for key in ("arms", "srm", "interleaving", "shadow", "ctr_ci", "lift_ci", "decision"):
        assert key in keys, key


# --- verdicts, --fixed-horizon, --html, plan --------------------------------------------


def lift_log(tmp: Path, lift: float = 0.6, users: int = 1500) -> Path:
    """Heavy-tailed users (tests/support/heavy_users.py) on route bench-feed, assigned as
    the route below assigns them."""
    log = heavy_log(0, users, lift, salt="bench")
    return write_log(tmp / "logs" / "bench.jsonl", log)


BENCH_ROUTES = """\
models:
  v1: {path: v1.onnx}
  v2: {path: v2.onnx}
routes:
  - name: bench-feed
    match: {path: /api/feed}
    model: v1
    experiments:
      - {name: beta, when: {percent: 50, salt: bench}, model: v2}
"""


def bench_config(tmp: Path, extra: str = "") -> Path:
    cfg = config(tmp, extra=extra)
    (tmp / "routes.yaml").write_text(BENCH_ROUTES)
    return cfg


def test_a_true_lift_is_called_better(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = bench_config(tmp_path)
    log = lift_log(tmp_path)
    body = json_report(capsys, "--config", str(cfg), "--from", str(log))
    assert body["method"]["inference"] == "sequential"
    (route,) = body["routes"]
    default, beta = route["arms"]
    assert default["decision"] is None
    assert beta["decision"] == "better", beta["reason"]
    lo, hi = beta["lift_ci"]
    assert 0 < lo < beta["lift"] < hi and beta["p_value"] < 0.05
    assert route["srm"]["alarm"] is False
    code, out, _ = report(capsys, "--config", str(cfg), "--from", str(log))
    assert code == 0
    assert "always-valid 95% confidence sequences, tuned for 5000 units" in out
    assert re.search(r"^  verdict      beta: better: the lift's interval \+\d", out, re.M), out


def test_fixed_horizon_waits_for_its_planned_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = bench_config(tmp_path, extra="readout: {expected_units: 4000}\n")
    log = lift_log(tmp_path)
    early = json_report(capsys, "--config", str(cfg), "--from", str(log), "--fixed-horizon")
    assert early["method"]["planned_units"] == 4000  # readout.expected_units
    beta = early["routes"][0]["arms"][1]
    assert beta["decision"] == "keep running"
    assert beta["reason"].endswith(
        "of the 4000 planned units: a fixed-horizon test is read once, at its planned size"
    )
    done = json_report(capsys, "--config", str(cfg), "--from", str(log), "--fixed-horizon", "1500")
    fixed = done["routes"][0]["arms"][1]
    assert fixed["decision"] == "better"
    sequential = json_report(capsys, "--config", str(cfg), "--from", str(log))["routes"][0]
    # The always-valid interval is wider than the one-look interval, around the same lift.
    s_lo, s_hi = sequential["arms"][1]["lift_ci"]
    f_lo, f_hi = fixed["lift_ci"]
    assert s_lo < f_lo < f_hi < s_hi and sequential["arms"][1]["lift"] == fixed["lift"]
    code, out, _ = report(
        capsys, "--config", str(cfg), "--from", str(log), "--fixed-horizon", "1500"
    )
    assert code == 0
    assert "fixed horizon planned at 1500 units (valid when read once, at that size)" in out


def test_readout_settings_errors_name_the_yaml_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, extra="readout: {alpha: 0.7, min_effect: 0}\n")
    code, _, err = report(capsys, "--config", str(cfg), "--from", str(tmp_path))
    assert code == 2
    assert "readout.alpha" in err and "readout.min_effect" in err


def test_html_page_is_self_contained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = bench_config(tmp_path)
    log = lift_log(tmp_path)
    page = tmp_path / "report.html"
    code, out, err = report(capsys, "--config", str(cfg), "--from", str(log), "--html", str(page))
    assert code == 0 and err == "" and "route bench-feed" in out
    html = page.read_text()
    assert html.startswith("<!doctype html>") and "<script" not in html
    assert not re.search(r"(src|href)=|url\(|@import|https?://", html)  # nothing to fetch
    assert 'data-arm="beta" data-decision="better"' in html
    assert html.count("<polygon") == 1 and html.count("<polyline") == 1  # one arm, one band
    assert "sample ratio ok" in html
    bad = tmp_path / "no-such-dir" / "r.html"
    code, _, err = report(capsys, "--config", str(cfg), "--from", str(log), "--html", str(bad))
    assert code == 1 and str(bad) in err


def test_plan(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["experiments", "plan", "--baseline-ctr", "0.12", "--mde", "5%",
                 "--units-per-day", "2000"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    # The textbook size: 2 * (1.96 + 0.8416)^2 * (p1 q1 + p2 q2) / (p2 - p1)^2 per arm.
    assert "fixed horizon (--fixed-horizon 94067, read once): 94067 units, 48 days" in out
    assert "always-valid (read any time, the default): " in out
    assert "the A/B units over 12, the ratio of the two sizes" in out
    assert "  fixed horizon: 7839 units, 4 days at 2000 units a day" in out  # 94067 / 12
    with pytest.raises(SystemExit) as caught:
        main(["experiments", "plan", "--baseline-ctr", "12", "--mde", "5%"])
    assert caught.value.code == 2 and "write it as 12%" in capsys.readouterr().err
    assert main(["experiments", "plan", "--baseline-ctr", "0.9", "--mde", "20%"]) == 2
    assert "keeps the CTR in (0, 1)" in capsys.readouterr().err


def test_a_multileaved_arm_in_text_json_and_html(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three rankers multileaved, the third clearly best: every form of the report names
    it, by both credit models and by the verdicts against the first."""
    cfg = config(tmp_path, extra="readout: {min_units: 50}\n")
    log = write_jsonl(tmp_path / "log.jsonl", multileaved_traffic(600, 3, seed=7))
    page = tmp_path / "report.html"
    code, out, err = report(capsys, "--config", str(cfg), "--from", str(log), "--html", str(page))
    assert code == 0 and err == ""
    head = "  multileaved  tri: ranker_v1 (A), ranker_v2 (B), ranker_v3 (C): "
    assert head in out and "exposures with a credited click, from " in out
    assert re.search(
        r"^ +per exposure \(ties split\): won ranker_v1 [\d.]+%, .*best ranker_v3$", out, re.M
    )
    assert re.search(r"^ +per user \(a tie: no one\): preferred .*; best ranker_v3$", out, re.M)
    assert "agreement: both name ranker_v3; the pairwise preferences agree in sign on " in out
    assert re.search(r"^ +ranker_v3 vs ranker_v1: ranker_v3 better: by unit ", out, re.M)
    assert "  best model: ranker_v3\n" in out
    # docs/guides/experiments.md shows this part of the report: it must stay what it prints.
    guide = (ROOT / "docs" / "guides" / "experiments.md").read_text()
    shown = guide.split("multileaved_traffic(600, 3, seed=7)", 1)[1].split("```text\n", 1)[1]
    assert shown.split("```", 1)[0] in out
    html = page.read_text()
    assert 'data-multileaved="tri" data-winner="ranker_v3"' in html
    assert '<div data-pair="ranker_v3"><span' in html
    (route,) = json_report(capsys, "--config", str(cfg), "--from", str(log))["routes"]
    (tri,) = route["multileaving"]
    assert route["interleaving"] == [] and tri["winner"] == "ranker_v3"
    assert tri["best_by_exposure"] == tri["best_by_user"] == "ranker_v3" and tri["agree"]
    assert [v["model"] for v in tri["verdicts"]] == ["ranker_v2", "ranker_v3"]


BANDIT_ROUTES = """\
models: {v1: {path: v1.onnx}, v2: {path: v2.onnx}, v3: {path: v3.onnx}}
routes:
  - name: home-feed
    match: {path: /api/feed}
    model: v1
    experiments:
      - name: versions
        when: {percent: 100, salt: versions-salt}
        bandit: {models: [v1, v2, v3]}
"""


def test_a_bandit_per_period_in_text_json_and_html(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.bandit_logs import Period, bandit_log

    cfg = config(tmp_path)
    (tmp_path / "routes.yaml").write_text(BANDIT_ROUTES)
    rates = [0.05, 0.1, 0.2]
    periods = [Period([1 / 3] * 3, rates), Period([0.2, 0.3, 0.5], rates)]
    log = write_jsonl(tmp_path / "logs" / "bandit.jsonl", bandit_log(periods, 2000, seed=6))
    page = tmp_path / "report.html"
    code, out, err = report(capsys, "--config", str(cfg), "--from", str(log), "--html", str(page))
    assert code == 0, err
    assert re.search(r"^  bandit       versions: v1, v2, v3; 2 periods, 2 in which", out, re.M), out
    assert re.search(r"^                 v3 .* better$", out, re.M), out
    assert "sample ratio by period: ok" in out
    (route,) = json_report(capsys, "--config", str(cfg), "--from", str(log))["routes"]
    (bandit,) = route["bandits"]
    assert [p["period"] for p in bandit["periods"]] == [1000, 1001]
    assert bandit["results"][2]["decision"] == "better"
    assert 'data-bandit="versions"' in page.read_text()
