"""`rankgate embeddings load` against a real Valkey."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis

from proxy.cli import main
from proxy.embedload import LoadError, load_vectors, read_file
from proxy.keys import KeyTemplate
from tests.clusters import ValkeyCluster


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
