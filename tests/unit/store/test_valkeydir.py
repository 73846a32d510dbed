"""The embedded Valkey's data directory without a server: the locks processes share it
by, the pidfile and the recorded address, which pids count as alive or as this
directory's server, the port chosen, the config written, the log read back."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.store.valkeydir import (
    FIRST_PORT,
    PORTS_TRIED,
    EmbeddedValkeyError,
    ValkeyDir,
    alive,
    port_free,
)


@pytest.fixture
def vdir(tmp_path: Path) -> ValkeyDir:
    files = ValkeyDir(tmp_path / "valkey")
    files.create()
    return files


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def test_the_path_is_absolute_and_a_file_in_the_way_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert ValkeyDir(Path("kv")).path == tmp_path / "kv"
    (tmp_path / "file").write_text("")
    with pytest.raises(EmbeddedValkeyError, match="file/kv: cannot create: Not a directory"):
        ValkeyDir(tmp_path / "file" / "kv").create()


def test_users_share_and_alone_needs_no_other_user(vdir: ValkeyDir) -> None:
    # flock belongs to the open file: two fds conflict as two processes would.
    first, second = vdir.use(1), vdir.use(1)
    with pytest.raises(EmbeddedValkeyError):
        vdir.alone()
    os.close(first)
    with pytest.raises(EmbeddedValkeyError):
        vdir.alone()
    os.close(second)
    os.close(vdir.alone())


def test_the_mutex_is_exclusive_and_waits_only_so_long(vdir: ValkeyDir) -> None:
    held = vdir.mutex(1)
    try:
        with pytest.raises(EmbeddedValkeyError, match=r"valkey\.lock: another process has held"):
            vdir.mutex(0.1)
    finally:
        os.close(held)
    os.close(vdir.mutex(0.1))


def test_pidfile_and_recorded_port(vdir: ValkeyDir) -> None:
    assert vdir.read_pid() is None and vdir.recorded_port() is None
    vdir.write_pid(4321)
    assert vdir.read_pid() == 4321
    vdir.forget_pid()
    vdir.forget_pid()  # gone already: no error
    assert vdir.read_pid() is None
    vdir.pid_path.write_text("not a pid\n")
    assert vdir.read_pid() is None
    vdir.record("127.0.0.1", 16543)
    assert vdir.recorded_port() == 16543
    for bad in ("{", '{"host": "127.0.0.1"}', '{"port": "16500"}', '{"port": 0}', "[1]"):
        vdir.state_path.write_text(bad)
        assert vdir.recorded_port() is None, bad
    vdir.state_path.write_text('{"port": 65536}')
    assert vdir.recorded_port() is None


def test_alive_is_false_for_a_gone_or_zombie_process() -> None:
    assert alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    # Exited but not reaped: a zombie, which serves nothing.
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    assert not alive(child.pid)
    child.wait()
    assert not alive(child.pid)


def test_is_server_means_started_with_this_config_file(vdir: ValkeyDir) -> None:
    sleep = [sys.executable, "-c", "import time; time.sleep(30)"]
    ours = subprocess.Popen([*sleep, str(vdir.conf_path)])
    other = subprocess.Popen([*sleep, str(vdir.path / "other.conf")])
    try:
        assert vdir.is_server(ours.pid)
        assert not vdir.is_server(other.pid)
    finally:
        for proc in (ours, other):
            proc.kill()
            proc.wait()
    assert not vdir.is_server(ours.pid)


def test_port_free(listening: socket.socket) -> None:
    port = listening.getsockname()[1]
    assert not port_free("127.0.0.1", port)
    listening.close()
    assert port_free("127.0.0.1", port)


def test_free_port_keeps_the_recorded_one_while_it_is_free(
    vdir: ValkeyDir, listening: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    first = vdir.free_port("127.0.0.1", set())
    assert FIRST_PORT <= first < FIRST_PORT + PORTS_TRIED
    assert vdir.free_port("127.0.0.1", {first}) != first
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        recorded = sock.getsockname()[1]
    vdir.record("127.0.0.1", recorded)
    assert vdir.free_port("127.0.0.1", set()) == recorded
    assert vdir.free_port("127.0.0.1", {recorded}) != recorded  # taken as the server started
    assert caplog.text == ""
    busy = listening.getsockname()[1]
    vdir.record("127.0.0.1", busy)
    moved = vdir.free_port("127.0.0.1", set())
    assert moved != busy and FIRST_PORT <= moved < FIRST_PORT + PORTS_TRIED
    assert f"port {busy} (recorded in {vdir.state_path}) is in use" in caplog.text


def test_the_config_written_and_the_log_read_back(vdir: ValkeyDir) -> None:
    vdir.write_conf("127.0.0.1", 16501)
    lines = vdir.conf_path.read_text().splitlines()
    assert lines[0].startswith("# written by rankgate")
    assert {"bind 127.0.0.1", "port 16501", f'pidfile "{vdir.pid_path}"'} <= set(lines)
    assert {"appendonly yes", "appendfsync everysec", 'save ""', "set-proc-title no"} <= set(lines)
    assert vdir.log_since(0) == ""  # no log yet
    vdir.log_path.write_bytes(b"old run\nnew run: \xff bind failed\n")
    assert vdir.log_since(len(b"old run\n")) == "new run: \ufffd bind failed"
    vdir.log_path.write_text("x" * 3000 + "end")
    assert vdir.log_since(0) == "x" * 1997 + "end"
