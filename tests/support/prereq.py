"""What a test needs from the machine, and what it does when that is missing.

On a developer's machine a missing tool (node, curl) or a busy fixed port skips the test
and says why. On CI (``.ci/run`` sets ``RANKGATE_CI=1`` and installs what the tests
need) the same thing fails the run: a skip there would hide a test that never ran.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterable
from typing import NoReturn

import pytest

ON_CI = os.environ.get("RANKGATE_CI") == "1"


def unmet(reason: str) -> NoReturn:
    """Skip with ``reason``; on CI, fail with it."""
    if ON_CI:
        pytest.fail(f"RANKGATE_CI=1 and {reason}")
    pytest.skip(reason)


def need_tool(name: str, why: str) -> None:
    if shutil.which(name) is None:
        unmet(f"{why}: {name} is not installed")


def namespaces() -> bool:
    """Whether this user may make a network namespace of its own (``unshare -rn``)."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        return False
    probe = subprocess.run(
        ["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=10
    )
    return probe.returncode == 0


def ports_free(ports: Iterable[int]) -> bool:
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def isolated(argv: list[str], ports: tuple[int, ...]) -> list[str]:
    """``argv`` to run where the fixed ``ports`` a docs page names are free: in a network
    namespace of its own (the machine's servers on those ports are not in the way, and
    nothing it starts is reachable from outside), else on the machine's loopback when
    they are free there."""
    if namespaces():
        return ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]
    if ports_free(ports):
        return argv
    unmet(f"no network namespace, and ports {ports} are in use")
