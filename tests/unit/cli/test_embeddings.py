"""``rankgate embeddings load`` says how a load goes: on a terminal, a line redrawn in place
(vectors loaded, rate, time left); in a log or a pipe, one summary line per kind."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import redis

from proxy.cli.embeddings import Progress, _clock
from proxy.cli.main import main

ROOT = Path(__file__).resolve().parents[3]
SUMMARY = r"loaded {n} {kind} vectors \(dim 8\) as emb:{kind}:\{{id\}} in \d+\.\d\d s \(\d+/s\)"


def vectors(path: Path, n: int) -> Path:
    np.save(path, np.random.default_rng(3).standard_normal((n, 8)).astype(np.float32))
    return path


def test_not_a_terminal_gets_one_summary_line_per_kind(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    npy = vectors(tmp_path / "users.npy", 2500)
    code = main(["embeddings", "load", "user", str(npy), "--redis-url", redis_url, "--dim", "8"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert re.fullmatch(SUMMARY.format(n=2500, kind="user") + "\n", out), out
    assert err == ""  # no progress line where nobody watches it
    assert redis_db.dbsize() == 2500


def read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_terminal_sees_progress_in_place(tmp_path: Path, redis_url: str, redis_db) -> None:
    npy = vectors(tmp_path / "items.npy", 20_000)
    argv = ["embeddings", "load", "item", str(npy), "--redis-url", redis_url, "--dim", "8"]
    parent, child = pty.openpty()  # a real terminal: isatty() is true in rankgate
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", *argv], cwd=ROOT, stdout=child, stderr=child
    )
    os.close(child)
    try:
        seen = read_all(parent).decode()
    finally:
        os.close(parent)
    assert proc.wait(60) == 0, seen
    # The first batch (1000 of 20000) is drawn at once; each redraw starts with a
    # carriage return and an erase-line; the last one is erased, and the summary line
    # takes its place.
    frames = re.findall(r"\r\x1b\[K([^\r\n]*)", seen)
    assert len(frames) >= 2, repr(seen)
    assert re.fullmatch(r"item vectors: 1000 of 20000 \(5%\), \d+/s, \d+:\d\d left", frames[0])
    assert re.fullmatch(SUMMARY.format(n=20000, kind="item"), frames[-1]), repr(seen)
    assert redis_db.dbsize() == 20_000


def test_progress_redraws_at_most_every_interval() -> None:
    class Out:
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None:
            pass

    out = Out()
    progress = Progress("user vectors", 3000, out, every_s=60)  # type: ignore[arg-type]
    progress(1000)
    progress(2000)  # within the interval: not drawn
    progress(3000)  # done: the summary line says it
    progress.started -= 10  # as if 10 s had passed since the start
    progress.drawn -= 120
    progress(2000)
    progress.finish()
    lines = out.text.split("\r\x1b[K")
    assert lines[0] == "" and lines[-1] == ""
    assert lines[1].startswith("user vectors: 1000 of 3000 (33%), ")
    assert lines[2] == "user vectors: 2000 of 3000 (66%), 200/s, 0:05 left"
    assert len(lines) == 4


def test_clock() -> None:
    assert (_clock(5), _clock(65.4), _clock(3 * 3600 + 61)) == ("0:05", "1:05", "3:01:01")
