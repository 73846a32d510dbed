r"""The shell commands of the docs pages, found and run exactly as written.

Pages are README.md, docs/**/*.md and the README.md of each folder (plugins/, models/,
edge/). A fenced block's info string is its language, then words that say how it is run:

- ```` ```console ````: ``$ command`` lines, each followed by what it prints. Every
  command runs in ``bash -c`` in the session's working directory, as written; its output
  (stdout and stderr together) must hold the printed lines in order (other lines may come
  between): ``…`` stands for any text, numbers (timings, sizes, pids) may differ, and so
  may the runs of spaces that align columns; the ports of ``127.0.0.1:PORT`` may not. A
  command must exit 0 (a page that shows a failure writes ``; echo "exit status $?"``).
- ```` ```sh ```` (or ``bash``, ``shell``): commands, one a line (``\`` continues one),
  run as written; what they print is not checked.
- ```` ```sh not-run: REASON ````: not run here, for the REASON given (a container
  daemon, a cluster, an account this machine does not have).
- ```` ```sh run-by: tests/PATH.py ````: run by that test (it needs more than a
  directory: a Valkey cluster, node and workerd).
- ```` ```yaml file=NAME ```` (any language but the shell's): written to NAME in the
  session's directory, when the session reaches it.
- ```` ```text ```` and every other language: not run (output, file contents, code).

A page's runnable blocks form one session (run in order, in a fresh directory), unless a
block says ``session=NAME``: then it and every later block up to the next ``session=``
form that session. tests/docs/sessions.py says what each session needs (an origin the
page calls "yours", the demo running, a checkout's files); tests/docs/test_pages.py runs
them and fails on a runnable block that nobody runs.

A ``rankgate serve`` (or ``rankgate demo``, ``make demo``) command keeps running, as in a
terminal: the next commands run beside it (as in a second terminal) once its printed
lines have appeared; at the end of the session it gets a Ctrl-C (SIGINT to its process
group).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

NUMBER = r"[+-]?\d+(?:\.\d+)?"
ADDRESS = r"127\.0\.0\.1:\d+"
BACKGROUND = ("rankgate serve", "rankgate demo", "make demo")
SHELLS = frozenset({"console", "sh", "bash", "shell"})
ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(`{3,})(.*)$")


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: where it starts, its language and the rest of its
    info string, and its text."""

    page: str  # relative to the repository: README.md, docs/guides/own-origin.md
    line: int
    lang: str
    info: str
    text: str

    @property
    def runnable(self) -> bool:
        return self.lang in SHELLS

    def word(self, key: str) -> str | None:
        """The value of ``key=VALUE`` (or ``key: REASON ...`` for not-run/run-by)."""
        if key in ("not-run", "run-by"):
            found = re.search(rf"(?:^|\s){key}:\s*(.*)$", self.info)
            return None if found is None else found.group(1).strip()
        found = re.search(rf"(?:^|\s){key}=(\S+)", self.info)
        return None if found is None else found.group(1)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def pages(root: Path = ROOT) -> list[Path]:
    """Every page whose commands a user may run."""
    found = [root / "README.md"]
    found += sorted(page for page in root.glob("*/README.md") if page.parent.name != "docs")
    found += sorted((root / "docs").rglob("*.md"))
    return [page for page in found if page.is_file()]


def blocks(page: Path, root: Path = ROOT) -> list[Block]:
    """The fenced blocks of a page, in order. A fence without a language is refused:
    a block of commands must say what it is."""
    name = page.relative_to(root).as_posix()
    out: list[Block] = []
    lines = page.read_text().splitlines()
    at = 0
    while at < len(lines):
        opened = FENCE.match(lines[at].strip())
        if opened is None:
            at += 1
            continue
        ticks, info = opened.group(1), opened.group(2).strip()
        body: list[str] = []
        close = at + 1
        while close < len(lines) and lines[close].strip() != ticks:
            body.append(lines[close])
            close += 1
        lang, _, rest = info.partition(" ")
        out.append(Block(name, at + 1, lang, rest.strip(), "\n".join(body) + "\n"))
        at = close + 1
    return out


def sessions(page_blocks: list[Block]) -> dict[str, list[Block]]:
    """The blocks each session of a page runs or writes, by session name ("main" for
    blocks before any ``session=``); blocks run by other tests or not run are left out."""
    out: dict[str, list[Block]] = {}
    current = "main"
    for block in page_blocks:
        current = block.word("session") or current
        if block.word("not-run") is not None or block.word("run-by") is not None:
            continue
        if block.runnable or block.word("file") is not None:
            out.setdefault(current, []).append(block)
    return {name: found for name, found in out.items() if any(b.runnable for b in found)}


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)
    file: str | None = None  # a file= block: write ``command`` (its text) to this name


def steps(text_or_blocks: str | list[Block]) -> list[Step]:
    """The steps of a session: console commands with their output, sh lines, files."""
    if isinstance(text_or_blocks, str):  # a page's text: its console blocks
        text_or_blocks = [
            Block("", 0, "console", "", body)
            for body in re.findall(r"```console[^\n]*\n(.*?)```", text_or_blocks, re.S)
        ]
    out: list[Step] = []
    for block in text_or_blocks:
        name = block.word("file")
        if not block.runnable and name is not None:
            out.append(Step(block.text, file=name))
        elif block.lang == "console":
            for line in block.text.splitlines():
                if line.startswith("$ "):
                    out.append(Step(line[2:]))
                elif out and line.strip():
                    out[-1].expected.append(line)
        elif block.runnable:
            out.extend(Step(command) for command in sh_commands(block.text))
    return out


def sh_commands(text: str) -> list[str]:
    r"""An sh block's commands: one a line, ``\`` at the end continues it; blank lines
    and whole-line comments are not commands."""
    commands: list[str] = []
    pending = ""
    for line in text.splitlines():
        if pending:
            pending += "\n" + line
        elif line.strip() and not line.lstrip().startswith("#"):
            pending = line
        else:
            continue
        if not line.endswith("\\"):
            commands.append(pending)
            pending = ""
    if pending:
        commands.append(pending)
    return commands


def section(text: str, name: str) -> str:
    found = re.search(f"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text, re.S)
    if found is None:
        raise AssertionError(f"no section {name!r}")
    return found.group(1)


def pattern(line: str) -> re.Pattern[str]:
    # Loopback addresses are literal, ports included: the page's ports are its promise.
    parts = re.split(f"({ADDRESS}|…| +|{NUMBER})", line.rstrip())
    regex = ""
    for part in parts:
        if re.fullmatch(ADDRESS, part):
            regex += re.escape(part)
        elif part == "…":
            regex += ".*"
        elif part and part.strip() == "":
            regex += " +"  # columns align to their widest value: spaces may differ
        elif re.fullmatch(NUMBER, part):
            regex += NUMBER
        else:
            regex += re.escape(part)
    return re.compile(regex)


def unmatched(expected: list[str], output: str) -> str | None:
    """The first expected line not found (in order) in ``output``; None when all are."""
    lines = output.splitlines()
    at = 0
    for want in expected:
        regex = pattern(want)
        while at < len(lines) and not regex.fullmatch(lines[at].rstrip()):
            at += 1
        if at == len(lines):
            return want
        at += 1
    return None


def background(command: str) -> bool:
    """Whether a command keeps running (a server in its own terminal)."""
    return command.startswith(BACKGROUND) and not re.search(r";|&&|\|\|", command)


class Background:
    """A command that keeps running; its output collected as it comes."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str]) -> None:
        self.command = command
        self.proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own group, like a terminal's foreground job
        )
        self.output = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output += line

    def wait_for(self, expected: list[str], limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while unmatched(expected, self.output) is not None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.2)  # the last lines
                raise AssertionError(
                    f"$ {self.command}\nnever printed: {unmatched(expected, self.output)!r}\n"
                    f"it printed:\n{self.output}"
                )
            time.sleep(0.05)

    def interrupt(self, limit_s: float = 30) -> int:
        """Ctrl-C, and its exit status."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            code = self.proc.wait(limit_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError(
                f"$ {self.command}: still running {limit_s} s after Ctrl-C"
            ) from None
        self._reader.join(5)
        return code


def run(steps_: list[Step], cwd: Path, env: dict[str, str], limit_s: float = 60) -> list[str]:
    """Run every step; raise AssertionError at the first that fails or prints otherwise.
    Returns the transcript (commands and their output)."""
    transcript: list[str] = []
    running: list[Background] = []
    try:
        for step in steps_:
            if step.file is not None:
                (cwd / step.file).write_text(step.command)
                transcript.append(f"[wrote {step.file}]")
                continue
            transcript.append(f"$ {step.command}")
            if background(step.command):
                assert step.expected, f"$ {step.command}: a server's block must show what it prints"
                job = Background(step.command, cwd, env)
                running.append(job)
                job.wait_for(step.expected, limit_s)
                continue
            done = subprocess.run(
                ["bash", "-c", step.command],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=limit_s,
            )
            transcript.append(done.stdout)
            if done.returncode != 0:
                raise AssertionError(
                    f"$ {step.command}\nexit status {done.returncode}:\n{done.stdout}"
                )
            missing = unmatched(step.expected, done.stdout)
            if missing is not None:
                raise AssertionError(
                    f"$ {step.command}\ndid not print {missing!r}; it printed:\n{done.stdout}"
                )
    finally:
        for job in running:
            code = job.interrupt()
            transcript.append(f"[{job.command}: Ctrl-C, exit status {code}]\n{job.output}")
    return transcript
