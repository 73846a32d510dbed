"""The README's "In front of your own origin" runs exactly as written, against the origin
it describes (``http://127.0.0.1:9000``, ``GET /api/posts``), and prints what it shows.

The section names fixed ports (the origin's 9000, rankgate's 8080 and 9090, the embedded
Valkey's 16500), so it runs in a network namespace of its own (``unshare -rn``): the
machine's own servers on those ports (a `make demo`, another checkout's tests) are not
in the way, and nothing it starts is reachable from outside. Where namespaces are not
available it runs on the machine's loopback if those ports are free, else it skips (on
CI it fails: tests/support/prereq.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support import readme_shell
from tests.support.common import valkey_pids
from tests.support.prereq import isolated

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's: rankgate, python
SECTION = "newcomer"
ORIGIN_PORT = 9000
FIXED_PORTS = (ORIGIN_PORT, 8080, 9090, 16500)

# What the section says the origin serves: {"data": {"posts": [{"pid": ...}, ...]}}.
POSTS = [{"pid": k, "title": f"Post {k}"} for k in range(1, 21)]


class Origin(BaseHTTPRequestHandler):
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


def run_section(workdir: Path) -> None:
    """Inside the namespace (or on the machine): the origin, then the section's steps."""
    origin = ThreadingHTTPServer(("127.0.0.1", ORIGIN_PORT), Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    text = readme_shell.section((ROOT / "README.md").read_text(), SECTION)
    steps = readme_shell.steps(text)
    try:
        transcript = readme_shell.run(steps, workdir, env)
    finally:
        origin.shutdown()
    print("\n".join(transcript))
    # Ctrl-C stopped rankgate, and its Valkey with it; the vectors stay on disk.
    leftover = valkey_pids(workdir / ".rankgate" / "valkey")
    assert leftover == [], f"Valkey still running after Ctrl-C: {leftover}"
    assert any((workdir / ".rankgate" / "valkey" / "appendonlydir").iterdir())


def test_the_section_names_the_commands_a_newcomer_runs() -> None:
    text = readme_shell.section((ROOT / "README.md").read_text(), SECTION)
    commands = [step.command.split()[:2] for step in readme_shell.steps(text)]
    for command in (["rankgate", "init"], ["rankgate", "embeddings"], ["rankgate", "check"]):
        assert command in commands
    assert ["rankgate", "serve"] in commands and ["curl", "-s"] in commands


def readme_yaml(after: str) -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(re.escape(after) + r".*?```yaml\n(.*?)```", text, re.S)
    assert found, f"no yaml block after {after!r}"
    return found.group(1)


def test_the_configuration_examples_load_as_written(tmp_path: Path) -> None:
    # Copied into config/ of a checkout (their paths say ../models/): both load, the
    # models' sha256 pins match, and the route's plugin options are good.
    from proxy.config.settings import load_settings
    from proxy.routing.snapshot import build_snapshot

    (tmp_path / "config").mkdir()
    shutil.copytree(ROOT / "models", tmp_path / "models", ignore=shutil.ignore_patterns("*.py"))
    config = tmp_path / "config" / "rankgate.yaml"
    config.write_text(readme_yaml("**`rankgate.yaml`** is read at start"))
    (tmp_path / "config" / "routes.yaml").write_text(readme_yaml("**`routes.yaml`** is watched"))
    settings = load_settings(config)
    snapshot = build_snapshot(settings.routes_path, settings.embeddings.dim, 1, None)
    assert sorted(snapshot.models) == ["ranker_v1", "ranker_v2"]
    assert snapshot.routes[0].spec.sample == "/api/feed?limit=20"


def test_the_section_runs_as_written(tmp_path: Path) -> None:
    workdir = tmp_path / "my-site"
    workdir.mkdir()
    argv = isolated(
        [sys.executable, "-m", "tests.docs.test_readme_newcomer", str(workdir)], FIXED_PORTS
    )
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout + done.stderr


if __name__ == "__main__":
    run_section(Path(sys.argv[1]))
