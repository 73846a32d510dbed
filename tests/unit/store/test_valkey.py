"""The embedded Valkey of a data directory: one server, kept data, a stable address,
shared by processes, and found again after its user died by SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from proxy.config.settings import load_settings
from proxy.config.yamlload import ConfigError
from proxy.store.valkey import EmbeddedValkey, PortTaken
from proxy.store.valkeydir import EmbeddedValkeyError
from tests.support.common import start_valkey, valkey_pids


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "valkey"
    yield path
    for pid in valkey_pids(path):  # never leave a server behind, even on failure
        os.kill(pid, signal.SIGKILL)


def client(server: EmbeddedValkey) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=5)


def test_data_and_address_survive_a_restart(data_dir: Path) -> None:
    first = EmbeddedValkey(data_dir)
    url = first.start()
    assert first.started and valkey_pids(data_dir) == [first.pid]
    client(first).set("emb:item:a", b"\x00" * 8)
    first.stop()
    assert valkey_pids(data_dir) == []
    assert not (data_dir / "valkey.pid").exists()  # a clean shutdown removes it

    second = EmbeddedValkey(data_dir)
    assert second.start() == url  # the address recorded in valkey.json
    assert second.started and second.pid != first.pid
    assert client(second).get("emb:item:a") == b"\x00" * 8
    second.stop()


def test_a_second_user_shares_the_server_and_the_last_one_stops_it(data_dir: Path) -> None:
    a, b = EmbeddedValkey(data_dir), EmbeddedValkey(data_dir)
    assert a.start() == b.start()
    assert (a.started, b.started) == (True, False) and a.pid == b.pid
    a.stop()  # b still uses it
    assert valkey_pids(data_dir) == [b.pid]
    assert client(b).ping()
    b.stop()
    assert valkey_pids(data_dir) == []


HOLDER = textwrap.dedent(
    """\
    import sys, time
    from proxy.store.valkey import EmbeddedValkey
    server = EmbeddedValkey(sys.argv[1])
    server.start()
    server_pid = server.pid
    print(server.url, server_pid, flush=True)
    time.sleep(60)
    """
)


def test_a_leftover_of_a_killed_user_is_reused(data_dir: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        url, pid = holder.stdout.readline().split()
    finally:
        holder.kill()  # SIGKILL: no stop(), the server stays behind
        holder.wait()
    assert valkey_pids(data_dir) == [int(pid)]

    again = EmbeddedValkey(data_dir)
    assert again.start() == url
    assert (again.pid, again.started, again.adopted) == (int(pid), False, True)
    assert "adopted, stopped when this one stops" in again.describe()
    assert valkey_pids(data_dir) == [int(pid)]  # never a second one
    assert again.stop() is True  # adopted: this process's to stop, as if it had started it
    assert valkey_pids(data_dir) == []


def test_a_server_another_live_process_uses_is_shared_not_adopted(data_dir: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        _, pid = holder.stdout.readline().split()
        shared = EmbeddedValkey(data_dir)
        shared.start()
        assert (shared.pid, shared.started, shared.adopted) == (int(pid), False, False)
        assert shared.stop() is False  # the holder still uses it
        assert valkey_pids(data_dir) == [int(pid)]
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_pidfile_is_ignored(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (data_dir / "valkey.pid").write_text(f"{dead.pid}\n")
    server = EmbeddedValkey(data_dir)
    server.start()
    assert server.started and server.pid != dead.pid
    server.stop()


def test_a_pid_that_is_another_program_is_left_alone(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (data_dir / "valkey.pid").write_text(f"{other.pid}\n")
        server = EmbeddedValkey(data_dir)
        server.start()
        assert server.started
        server.stop()
        assert other.poll() is None  # not ours: never signalled
    finally:
        other.kill()
        other.wait()


def busy_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_a_configured_port_in_use_is_a_clear_error(data_dir: Path) -> None:
    with busy_port() as sock:
        port = sock.getsockname()[1]
        with pytest.raises(EmbeddedValkeyError, match=f"redis.embedded.port {port}: .* in use"):
            EmbeddedValkey(data_dir, port=port).start()
    assert valkey_pids(data_dir) == []


def test_a_recorded_port_taken_meanwhile_moves_with_a_warning(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with busy_port() as sock:
        port = sock.getsockname()[1]
        data_dir.mkdir(parents=True)
        (data_dir / "valkey.json").write_text(json.dumps({"host": "127.0.0.1", "port": port}))
        server = EmbeddedValkey(data_dir)
        server.start()
        try:
            assert server.port != port
            assert f"port {port} (recorded in" in caplog.text
            recorded = json.loads((data_dir / "valkey.json").read_text())["port"]
            assert recorded == server.port
        finally:
            server.stop()


def test_a_changed_port_moves_the_server(data_dir: Path) -> None:
    first = EmbeddedValkey(data_dir)
    first.start()
    client(first).set("k", "v")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        new_port = sock.getsockname()[1]
    # A leftover (its user killed): the port in the config changed meanwhile.
    os.close(first._users_fd)  # type: ignore[arg-type]
    first._users_fd = None
    moved = EmbeddedValkey(data_dir, port=new_port)
    try:
        moved.start()
        assert moved.port == new_port and moved.started
        assert valkey_pids(data_dir) == [moved.pid]
        assert client(moved).get("k") == b"v"
    finally:
        moved.stop()


def test_settings_place_the_data_beside_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "rankgate.yaml"
    cfg.write_text('origin: {url: "http://127.0.0.1:9"}\n')
    settings = load_settings(cfg)
    server = EmbeddedValkey.for_settings(settings)
    assert server.dir == tmp_path / ".rankgate" / "valkey"
    assert server.configured_port is None
    cfg.write_text(
        'origin: {url: "http://127.0.0.1:9"}\nredis: {embedded: {dir: data/kv, port: 7000}}\n'
    )
    server = EmbeddedValkey.for_settings(load_settings(cfg))
    assert (server.dir, server.configured_port) == (tmp_path / "data" / "kv", 7000)


def test_url_and_embedded_together_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "rankgate.yaml"
    cfg.write_text(
        'origin: {url: "http://127.0.0.1:9"}\n'
        'redis: {url: "redis://127.0.0.1:6379/0", embedded: {port: 7000}}\n'
    )
    with pytest.raises(ConfigError, match=r"redis\.embedded: only without redis\.url"):
        load_settings(cfg)


def test_a_port_taken_as_the_server_starts_is_never_mistaken_for_ours(data_dir: Path) -> None:
    # Another program's server holds the port: it answers PING, but it is not ours (its
    # INFO names another pid), and ours exits: the start tries another port.
    other = start_valkey()
    try:
        server = EmbeddedValkey(data_dir)
        data_dir.mkdir(parents=True)
        with pytest.raises(PortTaken):
            server._spawn(other.port)
        assert valkey_pids(data_dir) == [] and server.port is None
    finally:
        other.stop()
