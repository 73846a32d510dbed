"""``rankgate model check|quantize|sha256`` and the workshop's torch-free helpers."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.contract import check_signature, open_session
from models.data import leave_last_out, seen_matrix, synthetic
from models.embeddings import load_embeddings, save_embeddings
from models.evaluate import heldout_ranks, kendall_tau, rank_metrics, top_k_overlap
from proxy.cli.main import main
from tests.support.common import dot_model

D = 16


def mlp_model(path: Path, dim: int = D, seed: int = 0, opset: int = 17) -> Path:
    """A real ranker-shaped graph with weights: Concat -> Gemm -> Relu -> Gemm -> score."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((2 * dim, 32)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(32).astype(np.float32) * 0.1, "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((32, 1)).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(np.zeros(1, dtype=np.float32), "b2")
    nodes = [
        helper.make_node("Concat", ["user_embedding", "item_embedding"], ["x"], axis=1),
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [
            helper.make_tensor_value_info("user_embedding", TensorProto.FLOAT, ["N", dim]),
            helper.make_tensor_value_info("item_embedding", TensorProto.FLOAT, ["N", dim]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        initializer=[w1, b1, w2, b2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tiny_npz(path: Path, dim: int = D) -> Path:
    """demo_embeddings.npz's layout on synthetic data and random vectors (no torch)."""
    data = synthetic(n_users=40, n_items=60, seed=1)
    split = leave_last_out(data)
    rng = np.random.default_rng(2)
    save_embeddings(
        path,
        user_ids=data.user_ids,
        user_vectors=rng.standard_normal((data.n_users, dim)),
        item_ids=data.item_ids,
        item_vectors=rng.standard_normal((data.n_items, dim)),
        item_titles=data.item_titles,
        item_genres=data.item_genres,
        item_years=data.item_years,
        item_popularity=np.bincount(data.items, minlength=data.n_items),
        item_mean_rating=np.zeros(data.n_items),
        heldout_users=split.heldout_users,
        heldout_items=split.heldout_items,
        dataset=data.name,
        seed=1,
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["model", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- check ---------------------------------------------------------------------------------


def test_check_passes_a_good_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = mlp_model(tmp_path / "good.onnx")
    code, out, err = run(capsys, "check", str(path), "--dim", str(D))
    assert code == 0, err
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"sha256 {digest}" in out
    assert "user_embedding [N, 16], item_embedding [N, 16] float32 -> score [N, 1]" in out
    assert "ai.onnx 17" in out
    assert "Concat x1, Gemm x2, Relu x1" in out
    assert "N=100, D=16:" in out
    assert out.rstrip().endswith("ok, rankgate can serve it")
    assert err == ""


def test_check_without_dim_uses_the_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "check", str(dot_model(tmp_path / "dot.onnx", dim=8)))
    assert code == 0
    assert "N=100, D=8:" in out


@pytest.mark.parametrize(
    ("make", "argv", "reason"),
    [
        (lambda p: dot_model(p, dim=8, fixed_batch=True), [], "batch axis is fixed at 1"),
        (lambda p: mlp_model(p), ["--dim", "32"], "dim is 16, not the 32 that --dim asks for"),
        (lambda p: p.write_bytes(b"\x00garbage") and p, [], "not an ONNX model"),
        (lambda p: p, [], "file not found"),
    ],
    ids=["fixed-batch", "wrong-dim", "garbage", "missing"],
)
def test_check_refuses_a_bad_model_in_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: object,
    argv: list[str],
    reason: str,
) -> None:
    path = tmp_path / "bad.onnx"
    make(path)  # type: ignore[operator]
    code, out, err = run(capsys, "check", str(path), *argv)
    assert code == 1
    # The failure is said once: one line in all the output, on stdout with the report.
    said = [line for line in (out + err).splitlines() if reason in line]
    assert said == [line for line in out.splitlines() if line.startswith(f"FAIL  {path}: ")]
    assert len(said) == 1, out + err
    assert err == ""
    assert "Traceback" not in out + err


def test_check_warns_on_an_old_opset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", str(mlp_model(tmp_path / "old.onnx", opset=13)))
    assert code == 0
    assert "warn  opset" in out and "ai.onnx 13" in out


def test_check_refuses_external_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = onnx.load(str(mlp_model(tmp_path / "m.onnx")))
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, size_threshold=0)
    code, out, _ = run(capsys, "check", str(tmp_path / "ext.onnx"))
    assert code == 1
    assert "external data file" in out


# -- sha256 --------------------------------------------------------------------------------


def test_sha256(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = dot_model(tmp_path / "dot.onnx")
    code, out, _ = run(capsys, "sha256", str(path))
    assert code == 0
    assert out == f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path}\n"
    code, _, err = run(capsys, "sha256", str(tmp_path / "absent.onnx"))
    assert code == 1
    assert "absent.onnx" in err


# -- quantize ------------------------------------------------------------------------------


def test_quantize_with_random_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = mlp_model(tmp_path / "fp32.onnx"), tmp_path / "int8.onnx"
    code, out, err = run(capsys, "quantize", str(src), str(dst))
    assert code == 0, err
    assert "random Gaussian vectors: 500 users x 100 items" in out
    assert "kendall tau mean" in out and "top-10 overlap mean" in out
    assert dst.stat().st_size < src.stat().st_size
    # The INT8 file is served like any other model.
    session = open_session(dst.read_bytes())
    assert check_signature(session, D).dim == D
    ops = {n.op_type for n in onnx.load(str(dst)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    code, out, _ = run(capsys, "check", str(dst), "--dim", str(D))
    assert code == 0


def test_quantize_report_on_held_out_users(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    src, dst = mlp_model(tmp_path / "fp32.onnx"), tmp_path / "int8.onnx"
    npz = tiny_npz(tmp_path / "emb.npz")
    code, out, err = run(capsys, "quantize", str(src), str(dst), "--npz", str(npz), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["inputs"].startswith("held-out users of synthetic")
    assert report["users"] == len(load_embeddings(npz).heldout_users)
    assert report["feed_size"] == 60  # the whole tiny catalogue
    assert report["int8_bytes"] < report["fp32_bytes"]
    assert 0.8 < report["mean_kendall_tau"] <= 1.0
    # The error the report prints is the one the two files give: recomputed here with
    # plain sessions, one run per user over the whole catalogue (dynamic quantization
    # picks its scales per run, from the same 60 items whatever their order).
    emb = load_embeddings(npz)
    fp32, int8 = open_session(src.read_bytes()), open_session(dst.read_bytes())
    worst = 0.0
    for user in emb.user_vectors[emb.heldout_users]:
        feed = np.ascontiguousarray(emb.item_vectors, dtype=np.float32)
        users = np.ascontiguousarray(np.broadcast_to(user, feed.shape), dtype=np.float32)
        inputs = {"user_embedding": users, "item_embedding": feed}
        a, b = (s.run(None, inputs)[0].reshape(-1) for s in (fp32, int8))
        worst = max(worst, float(np.abs(a.astype(np.float64) - b).max()))
    assert worst > 0  # INT8 is not the fp32 model
    assert report["max_abs_error"] == pytest.approx(worst, rel=1e-4)


def test_quantize_refuses_a_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = dot_model(tmp_path / "fixed.onnx", fixed_batch=True)
    code, _, err = run(capsys, "quantize", str(src), str(tmp_path / "out.onnx"))
    assert code == 1
    assert "batch axis is fixed at 1" in err
    assert not (tmp_path / "out.onnx").exists()
    code, _, err = run(
        capsys,
        "quantize",
        str(mlp_model(tmp_path / "ok.onnx")),
        str(tmp_path / "o.onnx"),
        "--npz",
        str(tmp_path / "absent.npz"),
    )
    assert code == 1
    assert "absent.npz: file not found" in err


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed here")
@pytest.mark.parametrize("command", ["train", "export"])
def test_train_and_export_need_torch(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, command)
    assert code == 2
    assert "needs torch" in err and "rankgate[train]" in err


# -- the torch-free helpers behind the reports ---------------------------------------------


def _tau_b(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b, the textbook O(n^2) way."""
    conc = disc = tx = ty = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                tx += 1
                ty += 1
            elif dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif dx == dy:
                conc += 1
            else:
                disc += 1
    pairs = n * (n - 1) // 2
    return (conc - disc) / np.sqrt((pairs - tx) * (pairs - ty))


def test_kendall_tau_matches_the_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=(6, 12)).astype(float)
    b = a + rng.integers(-2, 3, size=a.shape)
    got = kendall_tau(a, b)
    want = [_tau_b(list(x), list(y)) for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert kendall_tau(a[:1], a[:1])[0] == pytest.approx(1.0)
    assert kendall_tau(a[:1], -a[:1])[0] == pytest.approx(-1.0)


def test_top_k_overlap() -> None:
    a = np.arange(20.0)
    assert top_k_overlap(a, a, 10)[0] == 10
    assert top_k_overlap(a, -a, 10)[0] == 0
    assert top_k_overlap(a, np.r_[a[:-1], -1.0], 10)[0] == 9


def test_heldout_ranks_skip_seen_items_and_break_ties_by_index() -> None:
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    seen = np.array([[True, False, False, False, False], [False, False, False, True, False]])
    ranks = heldout_ranks(scores, seen, np.array([2, 4]))
    # user 0: item 0 is seen, so only item 1 is ahead; user 1: items 0-2 tie ahead.
    assert ranks.tolist() == [1, 3]
    m = rank_metrics(ranks, k=2)
    assert m.recall == pytest.approx(0.5)
    assert m.ndcg == pytest.approx(0.5 / np.log2(3))


def test_synthetic_data_and_leave_last_out() -> None:
    data = synthetic(seed=3)
    assert np.array_equal(data.items, synthetic(seed=3).items)  # seeded
    users = data.n_users
    split = leave_last_out(data)
    assert len(split.heldout_users) == users  # every synthetic user has >= 10 interactions
    assert len(split.train_users) + users == len(data.users)
    for u, i in zip(split.heldout_users, split.heldout_items, strict=True):
        mine = data.users == u
        assert data.items[mine][np.argmax(data.timestamps[mine])] == i
    seen = seen_matrix(users, data.n_items, split.train_users, split.train_items)
    assert not seen[split.heldout_users, split.heldout_items].any()
    # Popularity skew: the top tenth of items collects far more than a tenth of interactions.
    counts = np.sort(np.bincount(data.items, minlength=data.n_items))[::-1]
    assert counts[: data.n_items // 10].sum() > 0.25 * counts.sum()
