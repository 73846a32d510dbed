"""How fast a rankgate process refuses hostile routes versions, and how fast SIGTERM ends
it while a reload is stuck; one process, in one run.

    python bench/control_plane.py [--timeout 3] [--grace 2]

Starts a Valkey (or uses REDIS_URL), the bench origin and one ``rankgate serve`` with
``routes_watch: false``, ``routes_limits.reload_timeout_s: TIMEOUT`` and
``shutdown_timeout_s: GRACE``. For each hostile routes file of tests/support/attacks.py
(plus a FIFO and a 200 MB random "model"): write it, time ``POST /admin/reload`` until it
answers (refused), then check the good version still serves and that the next good
file is taken. Then a plugin whose constructor never returns: the reload's time (its
bound), and the time from SIGTERM to exit with such a reload in flight.
Writes bench/results/control-plane-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import ROOT, config_dir, free_port, save_results, seeded_redis, spawn_origin, wait_port

sys.path.insert(0, str(ROOT))  # tests/support/attacks.py: the attacks the tests replay
from tests.support import attacks

STUCK = """\
import time


class Stuck:
    def __init__(self):
        time.sleep(600)

    def rerank(self, ctx):
        pass
"""
STUCK_ROUTE = (
    b"  - name: stuck\n    match: {path: /stuck}\n    model: neg\n"
    b"    plugins: [{use: 'stuck_plugin:Stuck'}]\n"
)


def reload(admin: int) -> tuple[float, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{admin}/admin/reload", method="POST")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:  # 422: refused, the body says why
        raw = exc.read()
    return time.perf_counter() - started, json.loads(raw)


def served_model(admin: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/admin/routes", timeout=10) as resp:
        return sorted(json.loads(resp.read())["active"]["models"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        url = seeded_redis(stack, 100)
        origin_port = free_port()
        spawn_origin(stack, origin_port, 100)
        wait_port(origin_port)
        extra = (
            f"routes_watch: false\nroutes_limits: {{reload_timeout_s: {args.timeout}}}\n"
            f"shutdown_timeout_s: {args.grace}\nplugins: {{paths: [slow]}}\n"
        )
        cfg, port = config_dir(
            tmp / "rg", origin=f"http://127.0.0.1:{origin_port}", redis_url=url, extra=extra
        )
        rg = cfg.parent
        admin = int(cfg.read_text().split("admin: {host: 127.0.0.1, port: ")[1].split("}")[0])
        (rg / "slow").mkdir()
        (rg / "slow" / "stuck_plugin.py").write_text(STUCK)
        (rg / "dot.onnx").write_bytes((ROOT / "models" / "ranker_v1.onnx").read_bytes())
        (rg / "neg.onnx").write_bytes((ROOT / "models" / "ranker_v2.onnx").read_bytes())
        (rg / "routes.yaml").write_bytes(attacks.GOOD_UP)
        attacks.random_model(rg / "random.onnx")
        os.mkfifo(rg / "fifo.onnx")
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(cfg), "--workers", "1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(proc.kill)
        wait_port(port)
        cases = {
            **attacks.hostile(rg),
            "200MB-random": (attacks.routes("dot", "random.onnx"), "models.dot"),
            "fifo": (attacks.routes("dot", "fifo.onnx"), "not a regular file"),
        }
        for name, (raw, says) in cases.items():
            (rg / "routes.yaml").write_bytes(raw)
            seconds, body = reload(admin)
            kept = served_model(admin) == ["dot"]
            (rg / "routes.yaml").write_bytes(attacks.GOOD_DOWN)
            _, good = reload(admin)
            (rg / "routes.yaml").write_bytes(attacks.GOOD_UP)
            reload(admin)
            row = {
                "attack": name,
                "refused": not body["reloaded"] and says in body["error"],
                "seconds": round(seconds, 4),
                "kept_serving": kept,
                "next_good_taken": good["reloaded"],
            }
            rows.append(row)
            print(
                f"{name:<16} refused={row['refused']!s:<5} in {seconds * 1000:8.1f} ms  "
                f"kept={kept} next_good={good['reloaded']}"
            )
        (rg / "routes.yaml").write_bytes(attacks.GOOD_UP + STUCK_ROUTE.replace(b"neg", b"dot"))
        stuck_s, body = reload(admin)
        print(f"stuck plugin     refused in {stuck_s:.2f} s: {body['error'].splitlines()[0][-80:]}")
        threading.Thread(target=lambda: reload(admin), daemon=True).start()  # stuck again
        time.sleep(0.5)
        started = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        exit_s = time.perf_counter() - started
        print(
            f"SIGTERM with a stuck reload in flight: exit {code} after {exit_s:.2f} s "
            f"(shutdown_timeout_s {args.grace})"
        )
    return {
        "attacks": rows,
        "stuck_reload_s": stuck_s,
        "sigterm_exit_s": exit_s,
        "exit_code": code,
        "reload_timeout_s": args.timeout,
        "shutdown_timeout_s": args.grace,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=3.0, help="reload_timeout_s")
    parser.add_argument("--grace", type=float, default=2.0, help="shutdown_timeout_s")
    args = parser.parse_args()
    print(f"saved {save_results('control-plane', run(args))}")


if __name__ == "__main__":
    main()
