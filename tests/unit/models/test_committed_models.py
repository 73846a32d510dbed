"""The committed models/ artifacts: contract, npz layout, v1 vs v2, INT8 agreement, README."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from models.contract import sha256_file
from models.embeddings import REQUIRED, load_embeddings
from models.evaluate import top_k_overlap
from models.quantize import compare
from proxy.cli.main import main
from proxy.routing.sessions import ModelSession, load_model

MODELS = Path(__file__).resolve().parents[3] / "models"
NPZ = MODELS / "demo_embeddings.npz"
ONNX = ("ranker_v1.onnx", "ranker_v2.onnx", "ranker_v1.int8.onnx")
DIM = 32


@pytest.fixture(scope="module")
def sessions() -> dict[str, ModelSession]:
    return {name: load_model(name, MODELS / name, DIM) for name in ONNX}


@pytest.mark.parametrize("name", ONNX)
def test_committed_model_passes_the_check(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = MODELS / name
    assert path.stat().st_size < 64 * 1024
    assert main(["model", "check", str(path), "--dim", str(DIM)]) == 0, capsys.readouterr().err


def test_npz_has_the_documented_arrays() -> None:
    assert NPZ.stat().st_size < 400 * 1024
    with np.load(NPZ, allow_pickle=False) as npz:
        assert set(REQUIRED) | {"item_mean_rating", "dataset", "seed"} <= set(npz.files)
        assert npz["user_vectors"].dtype == np.float16
        assert npz["item_vectors"].dtype == np.float16
        assert npz["user_ids"].dtype.kind == "U" and npz["item_titles"].dtype.kind == "U"
    emb = load_embeddings(NPZ)
    users, items = len(emb.user_ids), len(emb.item_ids)
    assert emb.user_vectors.shape == (users, DIM) and emb.user_vectors.dtype == np.float32
    assert emb.item_vectors.shape == (items, DIM)
    for column in (emb.item_titles, emb.item_genres, emb.item_years, emb.item_popularity):
        assert len(column) == items
    assert len(set(emb.user_ids.tolist())) == users and len(set(emb.item_ids.tolist())) == items
    assert len(emb.heldout_users) == len(emb.heldout_items) > 0
    assert emb.heldout_users.max() < users and emb.heldout_items.max() < items
    assert np.isfinite(emb.user_vectors).all() and np.isfinite(emb.item_vectors).all()
    assert emb.item_popularity.min() >= 0


def test_no_raw_data_is_committed() -> None:
    # MovieLens terms forbid redistributing the ratings: only derived artifacts live here.
    names = [p.name for p in MODELS.rglob("*")]
    assert not [n for n in names if re.search(r"\.(inter|item|user|csv|dat|data)$", n)]


def test_v1_and_v2_rank_the_demo_feed_differently(sessions: dict[str, ModelSession]) -> None:
    emb = load_embeddings(NPZ)
    feed = np.argsort(-emb.item_popularity, kind="stable")[:100]  # the demo origin's feed
    items = np.ascontiguousarray(emb.item_vectors[feed])
    v1 = np.stack([sessions["ranker_v1.onnx"].score(u, items) for u in emb.user_vectors])
    v2 = np.stack([sessions["ranker_v2.onnx"].score(u, items) for u in emb.user_vectors])
    differs = np.mean(top_k_overlap(v1, v2, 10) < 10)
    assert differs > 0.5, f"top-10 differs for only {differs:.0%} of users"


def test_int8_agrees_with_fp32_on_held_out_users() -> None:
    report = compare(
        MODELS / "ranker_v1.onnx", MODELS / "ranker_v1.int8.onnx", load_embeddings(NPZ)
    )
    assert report.int8_bytes < 0.6 * report.fp32_bytes
    assert report.mean_kendall_tau > 0.95
    assert report.mean_top10_overlap > 9.0


def test_readme_metrics_block_matches_the_files() -> None:
    text = (MODELS / "README.md").read_text()
    block = text.split("<!-- metrics:start -->", 1)[1].split("<!-- metrics:end -->", 1)[0]
    assert "NDCG@10" in block and "Kendall tau" in block
    for name in (*ONNX, NPZ.name):
        assert (
            f"| `{name}` | {(MODELS / name).stat().st_size} | `{sha256_file(MODELS / name)}` |"
            in block
        ), f"{name} changed since the README was generated: run python -m models.report"
