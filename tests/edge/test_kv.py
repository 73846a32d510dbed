"""proxy/edge/kv.py and `rankgate edge kv`: embeddings as Workers KV bulk files."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from proxy.config.settings import Embeddings
from proxy.edge import kv
from proxy.store.loader import LoadError
from tests.support.edge import rankgate


def decode(value: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(value), dtype="<f4")


def test_entries_are_the_proxys_keys_and_float32_bytes() -> None:
    vectors = np.array([[1.5, -2.0, 3.25], [0.0, 1e-30, -7.0]], dtype=np.float64)
    pairs = kv.entries("emb:item:{id}", ["a{b}", "7"], vectors)
    assert [p["key"] for p in pairs] == ["emb:item:a{b}", "emb:item:7"]
    for pair, row in zip(pairs, vectors, strict=True):
        raw = base64.b64decode(pair["value"])
        assert raw == row.astype("<f4").tobytes()  # what Redis holds for the proxy
        assert set(pair) == {"key", "value"}  # text values: KV's bulk read returns text


def test_invalid_vectors_are_refused() -> None:
    with pytest.raises(LoadError, match="1 vectors hold NaN or inf"):
        kv.entries("k:{id}", ["a", "b"], np.array([[1.0, np.inf], [0.0, 1.0]]))
    with pytest.raises(LoadError, match="2 ids for a vector array of shape"):
        kv.entries("k:{id}", ["a", "b"], np.zeros((3, 2)))


def test_npz_with_both_kinds_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kv, "CHUNK", 2)
    rng = np.random.default_rng(0)
    users, items = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    npz = tmp_path / "v.npz"
    np.savez(
        npz,
        user_ids=np.array(["u0", "u1", "u2"]),
        user_vectors=users,
        item_ids=np.arange(5),
        item_vectors=items,
    )
    out = tmp_path / "kv"
    (out).mkdir()
    (out / "users-009.json").write_text("[]")  # stale: a rewrite replaces the set
    written = kv.write_kv(npz, out, Embeddings(dim=4))
    assert [f.name for f in written["user"]] == ["users-001.json", "users-002.json"]
    assert [f.name for f in written["item"]] == [
        "items-001.json",
        "items-002.json",
        "items-003.json",
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f.name for fs in written.values() for f in fs
    )
    pairs = [p for f in written["item"] for p in json.loads(f.read_text())]
    assert [p["key"] for p in pairs] == [f"emb:item:{k}" for k in range(5)]
    assert np.array_equal(np.stack([decode(p["value"]) for p in pairs]), items.astype("<f4"))


def test_one_kind_files_and_errors(tmp_path: Path) -> None:
    csv = tmp_path / "items.csv"
    csv.write_text("id,v0,v1\nx,1,2\ny,3,4\n")
    with pytest.raises(LoadError, match="give --kind user or --kind item"):
        kv.write_kv(csv, tmp_path / "kv", Embeddings(dim=2))
    with pytest.raises(LoadError, match="item vectors have dim 2, expected 3"):
        kv.write_kv(csv, tmp_path / "kv", Embeddings(dim=3), "item")
    written = kv.write_kv(csv, tmp_path / "kv", Embeddings(dim=2, item_key="it/{id}"), "item")
    pairs = json.loads(written["item"][0].read_text())
    assert [p["key"] for p in pairs] == ["it/x", "it/y"]
    assert decode(pairs[1]["value"]).tolist() == [3.0, 4.0]


def test_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "rankgate.yaml"
    cfg.write_text('origin: {url: "http://127.0.0.1:9"}\nembeddings: {dim: 2, user_key: "U{id}"}\n')
    npz = tmp_path / "u.npz"
    np.savez(npz, ids=np.array(["a"]), vectors=np.array([[1.0, 2.0]]))
    done = rankgate(
        "edge", "kv", str(npz), "--kind", "user", "--config", str(cfg), "--out", str(tmp_path / "o")
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"user: {tmp_path / 'o' / 'users-001.json'}\n"
    assert json.loads((tmp_path / "o" / "users-001.json").read_text())[0]["key"] == "Ua"
    bad = rankgate("edge", "kv", str(npz), "--config", str(cfg), "--out", str(tmp_path / "o"))
    assert bad.returncode == 1
    assert bad.stderr.startswith("rankgate edge kv: ") and "--kind" in bad.stderr
