"""`rankgate embeddings load` against a real Valkey."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from proxy.cli.main import main
from proxy.config.keys import KeyTemplate
from proxy.store.loader import LoadError, load_vectors, read_file
from proxy.store.valkey import EmbeddedValkey
from tests.support.clusters import ValkeyCluster
from tests.support.common import valkey_pids


def test_npz_roundtrip(tmp_path: Path, redis_url: str, redis_db: redis.Redis, capsys) -> None:
    vectors = np.random.default_rng(0).standard_normal((2500, 4)).astype(np.float32)
    ids = np.array([f"m{k}" for k in range(2500)])
    np.savez(tmp_path / "emb.npz", item_ids=ids, item_vectors=vectors)
    code = main(
        [
            "embeddings",
            "load",
            "item",
            str(tmp_path / "emb.npz"),
            "--redis-url",
            redis_url,
            "--dim",
            "4",
        ]
    )
    assert code == 0
    assert "loaded 2500 item vectors" in capsys.readouterr().out
    raw = redis_db.get("emb:item:m1234")
    assert np.array_equal(np.frombuffer(raw, dtype="<f4"), vectors[1234])


def test_csv_with_header(tmp_path: Path, redis_url: str, redis_db: redis.Redis) -> None:
    (tmp_path / "u.csv").write_text("id,a,b\nalice,1,2\nbob,3.5,-4\n")
    assert (
        main(
            [
                "embeddings",
                "load",
                "user",
                str(tmp_path / "u.csv"),
                "--redis-url",
                redis_url,
                "--key",
                "u:{id}",
                "-q",
            ]
        )
        == 0
    )
    assert np.frombuffer(redis_db.get("u:bob"), dtype="<f4").tolist() == [3.5, -4.0]


def test_dim_checked(tmp_path: Path, redis_url: str, capsys) -> None:
    np.save(tmp_path / "m.npy", np.zeros((3, 5), dtype=np.float32))
    code = main(
        [
            "embeddings",
            "load",
            "item",
            str(tmp_path / "m.npy"),
            "--redis-url",
            redis_url,
            "--dim",
            "4",
        ]
    )
    assert code == 1
    assert "dim 5, expected 4" in capsys.readouterr().err


def test_nan_refused(redis_db: redis.Redis) -> None:
    vectors = np.ones((2, 3), dtype=np.float32)
    vectors[1, 1] = np.nan
    try:
        load_vectors(redis_db, "x:{id}", ["a", "b"], vectors)
    except LoadError as exc:
        assert "NaN" in str(exc)
    else:
        raise AssertionError("NaN vectors were loaded")
    assert redis_db.get("x:a") is None


def test_npz_missing_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", foo=np.zeros(3))
    try:
        read_file(tmp_path / "bad.npz", "user")
    except LoadError as exc:
        assert "user_ids" in str(exc)
    else:
        raise AssertionError("accepted an npz without ids")


# -- one file for both kinds, into the config's embedded Valkey ---------------------------


@pytest.fixture
def embedded_config(tmp_path: Path) -> Iterator[Path]:
    cfg = tmp_path / "rankgate.yaml"
    cfg.write_text('origin: {url: "http://127.0.0.1:9"}\nembeddings: {dim: 4}\n')
    yield cfg
    for pid in valkey_pids(tmp_path / ".rankgate" / "valkey"):
        os.kill(pid, signal.SIGKILL)


def both_kinds(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    users, items = rng.standard_normal((3, 4)), rng.standard_normal((5, 4)).astype(np.float16)
    np.savez(
        path,
        user_ids=np.array([7, 8, 9]),
        user_vectors=users,
        item_ids=np.array(["a", "b", "c", "d", "e"]),
        item_vectors=items,
    )
    return users.astype("<f4"), items.astype("<f4")


def test_one_npz_into_the_embedded_valkey(embedded_config: Path, capsys) -> None:
    npz = embedded_config.parent / "vectors.npz"
    users, items = both_kinds(npz)
    code = main(["embeddings", "load", str(npz), "--config", str(embedded_config), "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "started for this load" in out
    assert "loaded 3 user vectors (dim 4) as emb:user:{id}" in out
    assert "loaded 5 item vectors (dim 4) as emb:item:{id}" in out
    assert "embedded Valkey stopped" in out
    data_dir = embedded_config.parent / ".rankgate" / "valkey"
    assert valkey_pids(data_dir) == []  # nobody else used it: stopped, data on disk
    with EmbeddedValkey(data_dir) as server:  # what `rankgate serve` will find
        db = redis.Redis.from_url(server.url)
        assert np.frombuffer(db.get("emb:user:8"), "<f4").tolist() == users[1].tolist()
        assert np.frombuffer(db.get("emb:item:e"), "<f4").tolist() == items[4].tolist()


def test_a_running_embedded_valkey_is_used_and_left_running(embedded_config: Path, capsys) -> None:
    npz = embedded_config.parent / "vectors.npz"
    both_kinds(npz)
    data_dir = embedded_config.parent / ".rankgate" / "valkey"
    with EmbeddedValkey(data_dir) as server:  # as `rankgate serve` holds it
        code = main(["embeddings", "load", "user", str(npz), "-c", str(embedded_config), "-q"])
        out = capsys.readouterr().out
        assert code == 0, out
        assert f"running, pid {server.pid}" in out and "stopped" not in out
        assert valkey_pids(data_dir) == [server.pid]
        db = redis.Redis.from_url(server.url)
        assert db.exists("emb:user:7") and not db.exists("emb:item:a")


def test_a_leftover_of_a_killed_rankgate_is_adopted_and_stopped(
    embedded_config: Path, capsys
) -> None:
    npz = embedded_config.parent / "vectors.npz"
    both_kinds(npz)
    data_dir = embedded_config.parent / ".rankgate" / "valkey"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        pid = int(holder.stdout.readline())
    finally:
        holder.kill()  # kill -9: the server stays behind, nobody uses it
        holder.wait()
    code = main(["embeddings", "load", str(npz), "-c", str(embedded_config), "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"running, pid {pid}, left by a process that is gone: stopped after this load" in out
    assert "embedded Valkey stopped" in out  # said, as it is done
    assert valkey_pids(data_dir) == []


HOLDER = (
    "import sys, time\n"
    "from proxy.store.valkey import EmbeddedValkey\n"
    "server = EmbeddedValkey(sys.argv[1])\n"
    "server.start()\n"
    "print(server.pid, flush=True)\n"
    "time.sleep(60)\n"
)


def test_which_kind_is_asked_when_the_file_does_not_say(tmp_path: Path, capsys) -> None:
    (tmp_path / "u.csv").write_text("alice,1,2\n")
    code = main(["embeddings", "load", str(tmp_path / "u.csv"), "--redis-url", "redis://x"])
    assert code == 1
    assert "say which vectors these are: embeddings load user|item" in capsys.readouterr().err
    np.savez(tmp_path / "v.npz", ids=np.array(["a"]), vectors=np.zeros((1, 2)))
    code = main(["embeddings", "load", str(tmp_path / "v.npz"), "--redis-url", "redis://x"])
    assert code == 1
    assert "or ids + vectors with user|item" in capsys.readouterr().err


def test_help_describes_the_file_formats(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["embeddings", "load", "--help"])
    out = capsys.readouterr().out
    for words in ("user_ids + user_vectors", "id,v0,v1,...", "fields id and vector", "[N, dim]"):
        assert words in out


def test_load_into_a_cluster_with_buckets(
    tmp_path: Path, cluster: ValkeyCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """`embeddings load --config` against a 3-node cluster writes the keys the proxy
    reads: the config's bucketed item_key, every node holding some."""
    vectors = np.random.default_rng(1).standard_normal((500, 4)).astype(np.float32)
    np.savez(tmp_path / "items.npz", item_ids=[f"m{k}" for k in range(500)], item_vectors=vectors)
    (tmp_path / "rankgate.yaml").write_text(
        f"origin: {{url: 'http://127.0.0.1:9'}}\n"
        f"redis: {{url: '{cluster.url}'}}\n"
        "embeddings: {dim: 4, item_key: 'emb:item:{b{bucket}}:{id}', item_buckets: 8}\n"
    )
    code = main(
        [
            "embeddings",
            "load",
            "item",
            str(tmp_path / "items.npz"),
            "--config",
            str(tmp_path / "rankgate.yaml"),
            "-q",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "loaded 500 item vectors" in out and "(8 buckets) on a Redis Cluster" in out
    template = KeyTemplate("emb:item:{b{bucket}}:{id}", 8)
    with cluster.client() as client:
        for k in (0, 123, 499):
            raw = client.get(template.key(f"m{k}"))
            assert np.array_equal(np.frombuffer(raw, dtype="<f4"), vectors[k])
    per_node = []
    for node in cluster.nodes:
        with node.client() as client:
            per_node.append(client.dbsize())
    assert sum(per_node) == 500 and all(per_node)  # eight tags spread over three nodes
