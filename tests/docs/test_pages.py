"""Every page's commands run as written, and none can be added without a test.

The pages are README.md, docs/**/*.md and each folder's README.md; how a
block says whether and how it runs is in tests/support/docs_shell.py, what each session
needs in tests/docs/sessions.py. Also: every relative link resolves, the paths the
architecture and development pages name exist, the README fits on a page and keeps the
two commands CI runs, and no dated measurement sits in the code.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.sessions import SESSIONS
from tests.support import docs_shell
from tests.support.prereq import isolated

ROOT = docs_shell.ROOT
PAGES = docs_shell.pages()
BLOCKS = [block for page in PAGES for block in docs_shell.blocks(page)]
# A date in a comment or docstring, or "measured" beside a figure: "(wrk, 2026-11-29)",
# "Measured here: ~155 us".
DATED = re.compile(r"\b20\d\d-\d\d-\d\d\b|(?i:\bmeasured\b).*\d+ ?(?:us|µs|ms|x)\b")
CODE_DIRS = ("proxy", "plugins", "demo", "models")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def test_the_pages_are_found() -> None:
    names = {page.relative_to(ROOT).as_posix() for page in PAGES}
    assert {"README.md", "docs/index.md", "docs/getting-started.md"} <= names
    assert sum(block.runnable for block in BLOCKS) >= 10


def test_every_fence_names_its_language() -> None:
    bare = [block.where for block in BLOCKS if not block.lang]
    assert bare == [], f"fences without a language (use text for output): {bare}"


def test_every_runnable_block_is_run_or_says_why() -> None:
    unclaimed = []
    for page in PAGES:
        name = page.relative_to(ROOT).as_posix()
        page_blocks = docs_shell.blocks(page)
        registered = {
            id(block)
            for session, found in docs_shell.sessions(page_blocks).items()
            if (name, session) in SESSIONS
            for block in found
        }
        for block in page_blocks:
            if not block.runnable:
                continue
            reason, runner = block.word("not-run"), block.word("run-by")
            if reason is not None:
                assert len(reason.split()) >= 3, f"{block.where}: not-run must say why"
            elif runner is not None:
                assert runner.startswith("tests/") and (ROOT / runner).is_file(), block.where
                assert name in (ROOT / runner).read_text(), f"{runner} does not read {name}"
            elif id(block) not in registered:
                unclaimed.append(block.where)
    assert unclaimed == [], (
        f"commands no test runs: {unclaimed}; register the session in tests/docs/sessions.py "
        "or mark the block `not-run: REASON` or `run-by: TEST`"
    )


def test_every_registered_session_has_commands() -> None:
    for page, name in SESSIONS:
        found = docs_shell.sessions(docs_shell.blocks(ROOT / page))
        assert name in found, f"tests/docs/sessions.py names {page} {name!r}: no such commands"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(h) for h in re.findall(r"^#+ (.*)$", text, re.M)}


def test_relative_links_resolve() -> None:
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for found in LINK.finditer(text):
            target = found.group(1) or found.group(2)
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == [], broken


@pytest.mark.parametrize("page", ["docs/architecture.md", "docs/development.md"])
def test_the_paths_a_page_names_exist(page: str) -> None:
    text = (ROOT / page).read_text()
    named = set(
        re.findall(
            r"`((?:proxy|plugins|models|tests|demo|edge|bench|config|deploy|docs)"
            r"/[\w./-]*)`",
            text,
        )
    )
    missing = sorted(p for p in named if "*" not in p and not (ROOT / p).exists())
    assert named and missing == [], missing


def test_the_layout_tree_names_every_package_of_proxy() -> None:
    text = (ROOT / "docs" / "development.md").read_text()
    tree = re.search(r"## Layout\n\n```text\n(.*?)```", text, re.S)
    assert tree, "docs/development.md lost its layout tree"
    listed = re.findall(r"^  (\w+)/ ", tree.group(1), re.M)
    packages = sorted(p.parent.name for p in (ROOT / "proxy").glob("*/__init__.py"))
    assert sorted(listed) == packages
    tops = re.findall(r"^(\w+)/ ", tree.group(1), re.M)
    assert all((ROOT / top).is_dir() for top in tops), tops


def test_the_readme_fits_on_a_page_and_keeps_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    quick = next(b for b in docs_shell.blocks(ROOT / "README.md") if "make test" in b.text)
    assert [line.split("#")[0].strip() for line in quick.text.splitlines()] == [
        "make demo",
        "make test",
    ]
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)
    assert "edge-setup" in (ROOT / "Makefile").read_text()


def test_no_dated_measurement_in_the_readme_or_the_code() -> None:
    # Figures with a date belong in docs/performance.md, with their command.
    dated = []
    code = [ROOT / "README.md"] + [p for d in CODE_DIRS for p in sorted((ROOT / d).rglob("*.py"))]
    for path in code:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if DATED.search(line):
                dated.append(f"{path.relative_to(ROOT)}:{number}")
    assert dated == [], dated


@pytest.mark.parametrize(
    ("page", "session"), sorted(SESSIONS), ids=[f"{p}:{s}" for p, s in sorted(SESSIONS)]
)
def test_the_commands_run_as_written(page: str, session: str, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    argv = [sys.executable, "-m", "tests.docs.sessions", page, session, str(workdir)]
    done = subprocess.run(
        isolated(argv, SESSIONS[(page, session)].ports),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SESSIONS[(page, session)].limit_s + 60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_metric_is_on_the_metrics_page() -> None:
    code = "\n".join(p.read_text() for p in (ROOT / "proxy" / "serve").glob("*.py"))
    names = set(re.findall(r"\brankgate_[a-z0-9_]*[a-z0-9]\b", code))
    names = {n for n in names if not any(m != n and m.startswith(n + "_") for m in names)}
    page = (ROOT / "docs" / "reference" / "metrics-and-logs.md").read_text()
    assert len(names) > 10
    assert sorted(n for n in names if n not in page) == []


def test_every_command_is_on_the_cli_page() -> None:
    import argparse

    from proxy.cli.main import build_parser

    def commands(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    below = commands(sub, f"{prefix} {name}")
                    found += below or [f"{prefix} {name}"]  # the commands one runs
        return found

    page = (ROOT / "docs" / "reference" / "cli.md").read_text()
    every = commands(build_parser(), "rankgate")
    assert len(every) > 10
    # A command by its full name, or a subcommand by its own in its command's row.
    missing = [c for c in every if f"`{c}`" not in page and f"`{c.rsplit(' ', 1)[1]}`" not in page]
    assert missing == []
