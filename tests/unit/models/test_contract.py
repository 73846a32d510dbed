"""The model contract on tiny real ONNX graphs built here: what is accepted, what is refused."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.contract import ModelContractError, check_signature, open_session
from tests.support.common import dot_model

Dims = Sequence[int | str]


def graph_bytes(
    *,
    user: tuple[str, int, Dims] = ("user_embedding", TensorProto.FLOAT, ["N", 8]),
    item: tuple[str, int, Dims] = ("item_embedding", TensorProto.FLOAT, ["N", 8]),
    out: tuple[str, int, Dims] = ("score", TensorProto.FLOAT, ["N", 1]),
    width: int = 1,
    opset: int = 17,
) -> bytes:
    """score = concat(user, item) @ W, W [2D, width]; names, types and shapes as given."""
    (uname, utype, ushape), (iname, itype, ishape) = user, item
    oname, otype, oshape = out
    d = int(ushape[-1]) + int(ishape[-1])
    np_type = onnx.helper.tensor_dtype_to_np_dtype(utype)
    weights = numpy_helper.from_array(np.ones((d, width), dtype=np_type), "W")
    nodes = [
        helper.make_node("Concat", [uname, iname], ["x"], axis=-1),
        helper.make_node("MatMul", ["x", "W"], ["y"]),
    ]
    if otype != utype:
        nodes.append(helper.make_node("Cast", ["y"], [oname], to=otype))
    else:
        nodes.append(helper.make_node("Identity", ["y"], [oname]))
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info(uname, utype, list(ushape)),
            helper.make_tensor_value_info(iname, itype, list(ishape)),
        ],
        [helper.make_tensor_value_info(oname, otype, list(oshape))],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def refused(data: bytes, dim: int | None = None) -> str:
    with pytest.raises(ModelContractError) as info:
        check_signature(open_session(data), dim)
    return str(info.value)


def test_a_good_model_passes_with_its_dim() -> None:
    sig = check_signature(open_session(graph_bytes()), 8)
    assert (sig.dim, sig.output_rank) == (8, 2)


def test_a_rank_1_score_passes() -> None:
    data = graph_bytes(width=1, out=("score", TensorProto.FLOAT, ["N", 1]))
    assert check_signature(open_session(data)).dim == 8


def test_symbolic_dim_takes_the_configured_one() -> None:
    data = symbolic_dot_model()
    assert check_signature(open_session(data), 32).dim == 32
    assert check_signature(open_session(data)).dim is None


def symbolic_dot_model() -> bytes:
    """score [N] = <user, item> with D left symbolic."""
    user = helper.make_tensor_value_info("user_embedding", TensorProto.FLOAT, ["N", "D"])
    item = helper.make_tensor_value_info("item_embedding", TensorProto.FLOAT, ["N", "D"])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])
    node = helper.make_node("ReduceSum", ["prod", "axes"], ["score"], keepdims=0)
    mul = helper.make_node("Mul", ["user_embedding", "item_embedding"], ["prod"])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph([mul, node], "dot", [user, item], [score], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_fixed_batch_of_one_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = dot_model(tmp_path / "fixed.onnx", dim=8, fixed_batch=True)
    reason = refused(path.read_bytes())
    assert "batch axis is fixed at 1" in reason
    assert "dynamic_axes" in reason


def test_wrong_input_names_are_refused() -> None:
    data = graph_bytes(
        user=("user", TensorProto.FLOAT, ["N", 8]), item=("item", TensorProto.FLOAT, ["N", 8])
    )
    reason = refused(data)
    assert "inputs must be exactly ['item_embedding', 'user_embedding']" in reason
    assert "['item', 'user']" in reason


def test_wrong_input_dtype_is_refused() -> None:
    data = graph_bytes(
        user=("user_embedding", TensorProto.DOUBLE, ["N", 8]),
        item=("item_embedding", TensorProto.DOUBLE, ["N", 8]),
        out=("score", TensorProto.FLOAT, ["N", 1]),
    )
    assert "type must be float32, found tensor(double)" in refused(data)


def test_wrong_dim_is_refused(tmp_path: Path) -> None:
    path = dot_model(tmp_path / "d8.onnx", dim=8)
    assert "embedding dim is 8, config says embeddings.dim=32" in refused(path.read_bytes(), 32)


def test_inputs_of_different_dims_are_refused() -> None:
    data = graph_bytes(item=("item_embedding", TensorProto.FLOAT, ["N", 4]))
    assert "inputs disagree on D: [4, 8]" in refused(data)


def test_three_dimensional_input_is_refused() -> None:
    user = helper.make_tensor_value_info("user_embedding", TensorProto.FLOAT, ["N", 1, 8])
    item = helper.make_tensor_value_info("item_embedding", TensorProto.FLOAT, ["N", 1, 8])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1, 8])
    node = helper.make_node("Mul", ["user_embedding", "item_embedding"], ["score"])
    graph = helper.make_graph([node], "g", [user, item], [score])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    assert "must be 2-D [N, D]" in refused(model.SerializeToString())


def test_wrong_output_name_is_refused() -> None:
    data = graph_bytes(out=("logits", TensorProto.FLOAT, ["N", 1]))
    assert "output 'score' not found, outputs are ['logits']" in refused(data)


def test_wrong_output_shape_is_refused() -> None:
    data = graph_bytes(width=2, out=("score", TensorProto.FLOAT, ["N", 2]))
    assert "output score: shape must be [N] or [N, 1], found ['N', 2]" in refused(data)


def test_wrong_output_dtype_is_refused() -> None:
    data = graph_bytes(out=("score", TensorProto.DOUBLE, ["N", 1]))
    assert "output score: type must be float32" in refused(data)


def test_fixed_output_batch_is_refused() -> None:
    data = graph_bytes(out=("score", TensorProto.FLOAT, [1, 1]))
    assert "output score: batch axis is fixed at 1" in refused(data)


def test_bytes_that_are_not_onnx_are_refused_in_one_line() -> None:
    with pytest.raises(ModelContractError) as info:
        open_session(b"definitely not a protobuf")
    assert str(info.value).startswith("not a loadable ONNX model")
    assert "\n" not in str(info.value)
