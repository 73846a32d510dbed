"""docs/guides/experiments.md "Reading the results" runs as written: each ```sh block in a
scratch directory holding config/ (the repository's), the generated log exposures/ and
bench/, printing exactly the ```text block after it; the JSON keys and the page it names
are what the report writes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson

from tests.support.exposure_logs import ROOT, readme_log

PAGE = ROOT / "docs" / "guides" / "experiments.md"


def section() -> str:
    text = PAGE.read_text()
    found = re.search(
        r"<!-- reading-results:start -->\n(.*?)<!-- reading-results:end -->", text, re.S
    )
    assert found, f"{PAGE} lost its 'Reading the results' section"
    return found.group(1)


def test_reading_results_runs_as_written(tmp_path: Path) -> None:
    text = section()
    blocks = re.findall(r"```(\w*)[^\n]*\n(.*?)```", text, re.S)
    pairs = [
        (body, blocks[i + 1][1])
        for i, (lang, body) in enumerate(blocks)
        if lang == "sh" and i + 1 < len(blocks) and blocks[i + 1][0] == "text"
    ]
    assert len(pairs) == 3 == sum(lang == "sh" for lang, _ in blocks), "an sh block lacks output"
    (tmp_path / "config").mkdir()
    for name in ("rankgate.yaml", "routes.yaml"):
        shutil.copy(ROOT / "config" / name, tmp_path / "config" / name)
    readme_log(tmp_path / "exposures")
    (tmp_path / "bench").symlink_to(ROOT / "bench")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for commands, expected in pairs:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", commands],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout == expected, (
            f"{PAGE} shows other output for\n{commands}\npaste this:\n{done.stdout}"
        )
    body = orjson.loads((tmp_path / "report.json").read_bytes())
    arm, interleaved = body["routes"][0]["arms"][1], body["routes"][0]["interleaving"][0]
    method = body["method"]
    words = set(arm) | set(interleaved) | set(method) | set(map(str, method.values()))
    for key in re.findall(r"`([\w-]+)`", text.split("`--json` has", 1)[1].split("###", 1)[0]):
        assert key in words or key in ("method", "fixed-horizon"), key
    page = (tmp_path / "report.html").read_text()
    assert "<svg" in page and 'data-arm="spring-test"' in page
