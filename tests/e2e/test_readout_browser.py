"""`rankgate experiments report --html` in headless Chromium: the page shows each arm's
verdict, its lift over time with the band around it, the split and the sample ratio test,
and asks the network for nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from demo.browser import find_chromium, launch
from proxy.cli.main import main
from tests.support.heavy_users import heavy_log, write_log
from tests.support.prereq import unmet

CHROMIUM = find_chromium()
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run"]  # fmt: skip
ROUTES = """\
models:
  ranker_v1: {path: v1.onnx}
  ranker_v2: {path: v2.onnx}
routes:
  - name: bench-feed
    match: {path: /api/feed}
    model: ranker_v1
    experiments:
      - {name: beta, when: {percent: 50, salt: bench}, model: ranker_v2}
"""


@pytest.fixture
def page_file(tmp_path: Path) -> Path:
    if CHROMIUM is None:
        unmet("the --html page is checked in Chromium: no chromium binary (Debian: "
              "apt-get install chromium; or set CHROMIUM=path)")  # fmt: skip
    (tmp_path / "routes.yaml").write_text(ROUTES)
    cfg = tmp_path / "rankgate.yaml"
    cfg.write_text('origin: {url: "http://127.0.0.1:9"}\nroutes: routes.yaml\n')
    # 1,500 users with their own click propensity, beta's clicking 60% more often.
    log = write_log(tmp_path / "logs" / "a.jsonl", heavy_log(0, 1500, 0.6, salt="bench"))
    page = tmp_path / "report.html"
    assert main(["experiments", "report", "--config", str(cfg), "--from", str(log),
                 "--html", str(page)]) == 0  # fmt: skip
    return page


def test_dump_dom_shows_the_verdict_split_and_chart(page_file: Path, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, *FLAGS, "--dump-dom", page_file.as_uri()],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    dom = done.stdout
    assert "<h2>route bench-feed</h2>" in dom
    assert 'data-arm="beta" data-decision="better"' in dom
    assert ">better</span>" in dom and "lift, interval +" in dom
    assert "sample ratio ok: p = " in dom and "default 49.9%" in dom
    assert dom.count("<polygon") == 1 and dom.count("<polyline") == 1
    shot = tmp_path / "page.png"
    subprocess.run(
        [CHROMIUM, *FLAGS, f"--screenshot={shot}", "--window-size=1200,1100", page_file.as_uri()],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000


async def test_page_draws_the_band_and_fetches_nothing(page_file: Path) -> None:
    async with launch(CHROMIUM) as browser:
        page = await browser.new_page(width=1200, height=1100)
        await page.goto(page_file.as_uri())
        # The chart is drawn: the band and the line have a size on screen, inside the card.
        boxes = await page.evaluate(
            """[...document.querySelectorAll('[data-arm="beta"] svg polygon,'
                 + '[data-arm="beta"] svg polyline')].map(e => {
                 const r = e.getBoundingClientRect(); return [r.width, r.height]; })"""
        )
        assert len(boxes) == 2 and all(w > 200 and h > 20 for w, h in boxes), boxes
        assert await page.evaluate("document.title") == "Experiment readout"
        assert page.requests == [page_file.as_uri()]  # the page itself, nothing else
        assert page.console == []
        await page.close()
