"""Helpers for the edge Worker's tests: node or a reason to skip, the real CLI, and the
Worker in workerd (``node edge/dev.mjs``, miniflare) as a real process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from proxy.edge.build import EDGE_DIR, node_ready
from tests.support.prereq import unmet

ROOT = Path(__file__).resolve().parents[2]


def skip_without_node() -> None:
    """Skip (say why) where node or the Worker's npm packages are missing; fail on CI,
    which installs them (tests/support/prereq.py)."""
    missing = node_ready()
    if missing is not None:
        unmet(
            f"edge Worker tests need node: {missing} "
            "(make test runs npm ci, through make edge-setup, where npm exists)"
        )


def rankgate(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The real CLI, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class EdgeProcess:
    """``node edge/dev.mjs DIR ...``: the Worker in workerd; stdout lines collected."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.url = ""
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls, *args: str, cwd: Path = ROOT, limit_s: float = 60, command: list[str] | None = None
    ) -> EdgeProcess:
        argv = command or ["node", str(EDGE_DIR / "dev.mjs"), *args]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its workerd child goes with it on stop
        )
        self = cls(proc)
        try:
            ready = await self._wait_ready(limit_s)
        except BaseException:
            await self.stop()
            raise
        self.url = ready["url"].rstrip("/")
        self._reader = asyncio.create_task(self._collect())
        return self

    async def _wait_ready(self, limit_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(limit_s):
            while line := await self.proc.stdout.readline():
                text = line.decode(errors="replace").rstrip("\n")
                self.lines.append(text)
                with contextlib.suppress(ValueError):
                    event = json.loads(text)
                    if isinstance(event, dict) and event.get("event") == "ready":
                        return event
        raise AssertionError("edge/dev.mjs exited before ready:\n" + "\n".join(self.lines))

    async def _collect(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == name:
                    out.append(event)
        return out

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(15):
                    await self.proc.wait()
            except TimeoutError:
                os.killpg(self.proc.pid, 9)
                await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader


@contextlib.asynccontextmanager
async def running_edge(*args: str, cwd: Path = ROOT) -> AsyncIterator[EdgeProcess]:
    edge = await EdgeProcess.start(*args, cwd=cwd)
    try:
        yield edge
    finally:
        await edge.stop()
