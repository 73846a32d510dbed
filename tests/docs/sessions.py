"""What each docs session needs before its commands run, and how to run one.

A session is a page's command sequence (tests/support/docs_shell.py says how a page
marks its blocks). Each runs in a fresh directory, in a network namespace of its own
(pages name fixed ports: 8080, 9090, the origin's 9000, the demo's 8000 and 16379), with
the venv's ``bin`` first on ``PATH`` (the pages say "rankgate is installed") and what its
page states it has: a checkout's files (``.venv/bin/...``, ``config/``, ``models/``, the
``Makefile``), an origin at ``http://127.0.0.1:9000`` serving ``GET /api/posts`` ("your
origin"), or the demo running in another terminal.

Run one by hand: ``python -m tests.docs.sessions PAGE SESSION DIR`` (inside ``unshare -rn``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support import docs_shell
from tests.support.common import valkey_pids

ROOT = docs_shell.ROOT
BIN = Path(sys.executable).parent  # the venv's: rankgate, python
DEMO_PORTS = (8000, 8080, 9090, 16379)
ORIGIN_PORTS = (9000, 8080, 9090, 16500)
# A checkout's files are linked into a session's directory, but for what commands write
# into (config/ is copied: a config's embedded Valkey keeps its data beside it) or what
# is the checkout's own (.git, build output, venvs).
OWN = {".git", "config", "build", ".rankgate", ".pytest_cache", "rankgate.egg-info"}

# What "your origin" serves in the pages: {"data": {"posts": [{"pid": ...}, ...]}}.
POSTS = [{"pid": k, "title": f"Post {k}"} for k in range(1, 21)]


class PostsOrigin(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the stdlib's name for it
        if self.path.split("?")[0] != "/api/posts":
            self.send_error(404)
            return
        body = json.dumps({"data": {"posts": POSTS}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def posts_origin(workdir: Path) -> Iterator[None]:
    origin = ThreadingHTTPServer(("127.0.0.1", 9000), PostsOrigin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    try:
        yield
    finally:
        origin.shutdown()


@contextmanager
def checkout(workdir: Path) -> Iterator[None]:
    """A set-up checkout: its files, and a ``.venv`` that is the venv running the tests
    (``.venv``, or ``.venv-latest`` under ``make test-latest``), which `make` finds set up."""
    for entry in ROOT.iterdir():
        if entry.name not in OWN and not entry.name.startswith(".venv"):
            (workdir / entry.name).symlink_to(entry)
    shutil.copytree(ROOT / "config", workdir / "config")
    venv = workdir / ".venv"
    venv.mkdir()
    for entry in Path(sys.prefix).iterdir():
        if not entry.name.startswith(".installed"):
            (venv / entry.name).symlink_to(entry)
    (venv / ".installed-dev").touch()  # `make setup` done (the Makefile's stamp)
    yield


@contextmanager
def demo_running(workdir: Path) -> Iterator[None]:
    """`make demo` in another terminal, as the page says."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    job = docs_shell.Background("rankgate demo", workdir, env)
    try:
        job.wait_for(["rankgate demo is running. Ctrl-C stops it (proxy, origin and Valkey)."], 90)
        yield
    finally:
        job.interrupt()


def valkey_stopped(workdir: Path) -> None:
    """Ctrl-C stopped rankgate, and its embedded Valkey with it; the vectors stay."""
    data = workdir / ".rankgate" / "valkey"
    assert valkey_pids(data) == [], f"Valkey still running after Ctrl-C: {valkey_pids(data)}"
    assert any((data / "appendonlydir").iterdir())


@dataclass(frozen=True)
class Session:
    ports: tuple[int, ...] = ()
    needs: tuple[Callable[[Path], object], ...] = ()
    after: Callable[[Path], None] | None = None
    limit_s: float = 90


# Every (page, session) with commands to run. A page's runnable block that is neither
# here, nor `not-run: REASON`, nor `run-by: TEST` fails tests/docs/test_pages.py.
WITH_DEMO = Session(DEMO_PORTS, (checkout, demo_running))
SESSIONS: dict[tuple[str, str], Session] = {
    ("README.md", "main"): Session(DEMO_PORTS, (checkout,)),
    ("README.md", "own-origin"): Session(ORIGIN_PORTS, (posts_origin,), valkey_stopped),
    ("docs/getting-started.md", "main"): Session(DEMO_PORTS, (checkout,)),
    ("docs/guides/own-origin.md", "main"): Session(ORIGIN_PORTS, (posts_origin,), valkey_stopped),
    ("docs/guides/experiments.md", "main"): WITH_DEMO,
    ("docs/development.md", "main"): Session((), (checkout,)),
    ("docs/guides/models.md", "main"): Session((), (checkout,)),
    ("docs/reference/configuration.md", "main"): Session((), (checkout,)),
    ("docs/reference/cli.md", "main"): Session(),
    ("docs/reference/headers-and-reasons.md", "main"): WITH_DEMO,
    ("docs/reference/metrics-and-logs.md", "main"): WITH_DEMO,
    ("models/README.md", "main"): Session((), (checkout,)),
    # The page's own first command starts the demo.
    ("docs/guides/tracing-and-explain.md", "main"): Session(DEMO_PORTS, (checkout,)),
}


def run_session(page: str, name: str, workdir: Path) -> list[str]:
    session = SESSIONS[(page, name)]
    found = docs_shell.sessions(docs_shell.blocks(ROOT / page))
    assert name in found, f"{page} has no session {name!r}"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with ExitStack() as stack:
        for need in session.needs:
            stack.enter_context(need(workdir))  # type: ignore[arg-type]
        transcript = docs_shell.run(docs_shell.steps(found[name]), workdir, env, session.limit_s)
    if session.after is not None:
        session.after(workdir)
    return transcript


if __name__ == "__main__":
    print("\n".join(run_session(sys.argv[1], sys.argv[2], Path(sys.argv[3]))))
