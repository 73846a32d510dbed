"""proxy/cli/edge.py: the `rankgate edge` commands are registered and say how to use them.
(What they do: tests/edge/test_build.py and tests/edge/test_kv.py.)"""

from __future__ import annotations

from tests.support.edge import rankgate


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
