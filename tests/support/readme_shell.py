"""Run a README section's shell session exactly as written, and compare what it prints.

A section is the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``; its
```` ```console ```` blocks hold ``$ command`` lines, each followed by what it prints.
Every command runs in ``bash -c`` in one working directory, as written. Its output
(stdout and stderr together) must hold the printed lines in order (other lines may come
between): ``…`` stands for any text, and numbers (timings, sizes, pids) may differ,
but not the ports of ``127.0.0.1:PORT`` addresses.

A ``rankgate serve`` (or ``rankgate demo``) command keeps running, as in a terminal: the
next commands run beside it (as in a second terminal) once its printed lines have
appeared; at the end it gets a Ctrl-C (SIGINT to its process group).
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

NUMBER = r"\d+(?:\.\d+)?"
ADDRESS = r"127\.0\.0\.1:\d+"
BACKGROUND = ("rankgate serve", "rankgate demo")


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)


def section(text: str, name: str) -> str:
    found = re.search(f"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text, re.S)
    if found is None:
        raise AssertionError(f"the README has no section {name!r}")
    return found.group(1)


def steps(text: str) -> list[Step]:
    out: list[Step] = []
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                out.append(Step(line[2:]))
            elif out and line.strip():
                out[-1].expected.append(line)
    return out


def pattern(line: str) -> re.Pattern[str]:
    # Loopback addresses are literal, ports included: the section's ports are its promise.
    parts = re.split(f"({ADDRESS}|…|{NUMBER})", line.rstrip())
    regex = ""
    for part in parts:
        if re.fullmatch(ADDRESS, part):
            regex += re.escape(part)
        elif part == "…":
            regex += ".*"
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
            transcript.append(f"$ {step.command}")
            if step.command.startswith(BACKGROUND):
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
