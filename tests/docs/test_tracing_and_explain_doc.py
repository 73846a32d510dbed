"""docs/guides/tracing-and-explain.md: its demo session runs exactly as written, from the
repository's directory, and prints what it shows (the explanation's order and scores
are the demo's, for the committed data and models).

The session names the demo's fixed ports (origin 8000, proxy 8080, admin 9090), so it runs
in a network namespace of its own (``unshare -rn``) when it can (tests/support/prereq.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import readme_shell
from tests.support.prereq import isolated

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "guides" / "tracing-and-explain.md"
BIN = Path(sys.executable).parent  # the venv's: rankgate
SECTION = "explain-demo"
FIXED_PORTS = (8000, 8080, 9090)


def run_section() -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    steps = readme_shell.steps(readme_shell.section(PAGE.read_text(), SECTION))
    print("\n".join(readme_shell.run(steps, ROOT, env, limit_s=90)))


def test_the_explain_session_names_its_commands() -> None:
    steps = readme_shell.steps(readme_shell.section(PAGE.read_text(), SECTION))
    assert [s.command.split()[:2] for s in steps] == [
        ["rankgate", "demo"],
        ["rankgate", "explain"],
        ["curl", "-s"],
    ]


def test_the_explain_session_runs_as_written() -> None:
    argv = isolated([sys.executable, "-m", "tests.docs.test_tracing_and_explain_doc"], FIXED_PORTS)
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stdout + done.stderr


if __name__ == "__main__":
    run_section()
