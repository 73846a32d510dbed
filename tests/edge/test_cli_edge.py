"""proxy/cli/edge.py: the `rankgate edge` commands are registered and say how to use them.
(What they do: tests/edge/test_build.py and tests/edge/test_kv.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.edge import ROOT, rankgate, skip_without_node


def test_edge_commands_are_listed() -> None:
    top = rankgate("--help")
    assert "edge" in top.stdout and "run the routes in a Cloudflare Worker" in top.stdout
    edge = rankgate("edge", "--help")
    assert edge.returncode == 0
    assert "build" in edge.stdout and "kv" in edge.stdout


def test_out_is_required() -> None:
    for args in (("edge", "build"), ("edge", "kv", "x.npz")):
        done = rankgate(*args)
        assert done.returncode == 2
        assert "the following arguments are required: --out/-o" in done.stderr


def node_dev(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", "edge/dev.mjs", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_dev_help_prints_usage_and_exits_0() -> None:
    skip_without_node()
    for flag in ("--help", "-h"):
        done = node_dev(flag)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("usage: node edge/dev.mjs DIR") and "--kv PATH" in done.stdout
        assert done.stderr == ""


def test_dev_mistakes_are_one_sentence_without_a_stack(tmp_path: Path) -> None:
    skip_without_node()
    wrong = node_dev("--bogus")
    assert wrong.returncode == 2
    assert wrong.stderr.startswith("edge/dev.mjs: unknown argument --bogus\nusage: ")
    unbuilt = node_dev(str(tmp_path / "not-built"))
    assert unbuilt.returncode == 1
    assert unbuilt.stderr.strip().splitlines() == [
        f"edge/dev.mjs: ENOENT: no such file or directory, open "
        f"'{tmp_path / 'not-built' / 'build.json'}'"
    ]
    for done in (wrong, unbuilt):
        assert "    at " not in done.stderr  # no stack frames
