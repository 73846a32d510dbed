"""`rankgate embeddings load` against a real Valkey."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import redis

from proxy.cli import main
from proxy.embedload import LoadError, load_vectors, read_file


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
