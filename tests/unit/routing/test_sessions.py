"""load_model: reads, pins, checks and warms a model exactly as serving does."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from models.contract import ModelContractError
from proxy.routing.sessions import WARM_BATCH, load_model
from tests.support.common import DIM, dot_model


def _save(path: Path, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> Path:
    user = helper.make_tensor_value_info("user_embedding", TensorProto.FLOAT, ["N", DIM])
    item = helper.make_tensor_value_info("item_embedding", TensorProto.FLOAT, ["N", DIM])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])
    graph = helper.make_graph(nodes, "g", [user, item], [score], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_score_shape_and_values(tmp_path: Path) -> None:
    path = dot_model(tmp_path / "dot.onnx", sign=-1.0)
    model = load_model("dot", path, DIM)
    rng = np.random.default_rng(1)
    user = rng.standard_normal(DIM, dtype=np.float32)
    for n in (1, 7, 100, 1000):
        items = rng.standard_normal((n, DIM), dtype=np.float32)
        scores = model.score(user, items)
        assert scores.shape == (n,)
        assert scores.dtype == np.float32
        np.testing.assert_allclose(scores, -(items @ user), rtol=1e-5, atol=1e-5)


def test_metadata_and_warm_up(tmp_path: Path) -> None:
    path = dot_model(tmp_path / "dot.onnx")
    data = path.read_bytes()
    model = load_model("dot", path, DIM)
    assert model.name == "dot"
    assert model.size == len(data)
    assert model.sha256 == hashlib.sha256(data).hexdigest()
    assert model.dim == DIM
    # The warm-up run happened inside load_model and is timed with it.
    assert model.loaded_at > 0
    assert model.load_seconds > 0


def test_pinned_sha256_accepts_the_reviewed_file(tmp_path: Path) -> None:
    path = dot_model(tmp_path / "dot.onnx")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_model("dot", path, DIM, digest.upper()).sha256 == digest


def test_sha256_mismatch_is_refused(tmp_path: Path) -> None:
    path = dot_model(tmp_path / "dot.onnx")
    pinned = hashlib.sha256(path.read_bytes()).hexdigest()
    dot_model(path, sign=-1.0)  # someone replaced the reviewed file
    with pytest.raises(ModelContractError, match=r"sha256 mismatch: file is [0-9a-f]{64}"):
        load_model("dot", path, DIM, pinned)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match="file not found"):
        load_model("x", tmp_path / "absent.onnx", DIM)


def test_contract_is_checked_at_load(tmp_path: Path) -> None:
    fixed = dot_model(tmp_path / "fixed.onnx", fixed_batch=True)
    with pytest.raises(ModelContractError, match="batch axis is fixed at 1"):
        load_model("fixed", fixed, DIM)
    with pytest.raises(ModelContractError, match="embedding dim is 8"):
        load_model("dot", dot_model(tmp_path / "dot.onnx"), 32)


def test_warm_up_refuses_one_score_for_many_items(tmp_path: Path) -> None:
    # Unique over all-zero values: an output length only a run reveals (1, not N).
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1])
    nodes = [
        helper.make_node("Mul", ["user_embedding", "item_embedding"], ["prod"]),
        helper.make_node("ReduceSum", ["prod", "axes"], ["dot"], keepdims=0),
        helper.make_node("Mul", ["dot", "zero"], ["zeros"]),
        helper.make_node("Unique", ["zeros"], ["one"]),
        helper.make_node("Reshape", ["one", "shape"], ["score"]),
    ]
    inits = [axes, zero, shape]
    path = _save(tmp_path / "sum.onnx", nodes, inits)
    with pytest.raises(ModelContractError, match=f"returned 1 scores for {WARM_BATCH} items"):
        load_model("sum", path, DIM)


def test_warm_up_failure_is_a_contract_error(tmp_path: Path) -> None:
    # A Reshape to a size that never fits: loads fine, fails on its first run.
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 3])
    nodes = [
        helper.make_node("Mul", ["user_embedding", "item_embedding"], ["prod"]),
        helper.make_node("Reshape", ["prod", "shape"], ["score"]),
    ]
    path = _save(tmp_path / "bad.onnx", nodes, [shape])
    with pytest.raises(ModelContractError, match="warm-up run failed") as info:
        load_model("bad", path, DIM)
    assert "\n" not in str(info.value)
