"""The model contract: what an ONNX ranking model must look like to be served.

Inputs ``user_embedding`` [N, D] and ``item_embedding`` [N, D], float32; output
``score`` [N, 1] or [N]; N a dynamic axis. Used at load time and by ``rankgate model check``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

USER_INPUT = "user_embedding"
ITEM_INPUT = "item_embedding"
SCORE_OUTPUT = "score"
FLOAT = "tensor(float)"


class ModelContractError(Exception):
    """A model file that rankgate refuses to serve; the message says why."""


@dataclass(frozen=True)
class Signature:
    dim: int | None  # None when the export left D symbolic
    output_rank: int


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_dynamic(axis: object) -> bool:
    return not isinstance(axis, int) or axis < 0


def check_signature(
    session: ort.InferenceSession, dim: int | None = None, dim_from: str = "embeddings.dim"
) -> Signature:
    """Check a session's inputs and outputs against the contract; raise with the reason.

    ``dim_from`` names where ``dim`` came from, for the message: the config's
    ``embeddings.dim``, or a command's ``--dim``."""
    inputs = {i.name: i for i in session.get_inputs()}
    expected = {USER_INPUT, ITEM_INPUT}
    if set(inputs) != expected:
        raise ModelContractError(
            f"inputs must be exactly {sorted(expected)}, found {sorted(inputs)}"
        )
    dims: set[int] = set()
    for name in (USER_INPUT, ITEM_INPUT):
        arg = inputs[name]
        if arg.type != FLOAT:
            raise ModelContractError(f"input {name}: type must be float32, found {arg.type}")
        shape = list(arg.shape)
        if len(shape) != 2:
            raise ModelContractError(f"input {name}: must be 2-D [N, D], found shape {shape}")
        if not _is_dynamic(shape[0]):
            raise ModelContractError(
                f"input {name}: batch axis is fixed at {shape[0]}; export with a dynamic "
                f"batch axis (torch.onnx.export(..., dynamic_axes={{'{name}': {{0: 'N'}}}}))"
            )
        if isinstance(shape[1], int) and shape[1] > 0:
            dims.add(shape[1])
    if len(dims) > 1:
        raise ModelContractError(f"inputs disagree on D: {sorted(dims)}")
    model_dim = dims.pop() if dims else None
    if dim is not None and model_dim is not None and model_dim != dim:
        if dim_from == "embeddings.dim":
            wanted = f"config says embeddings.dim={dim}"
        else:
            wanted = f"not the {dim} that {dim_from} asks for"
        raise ModelContractError(f"embedding dim is {model_dim}, {wanted}")
    outputs = session.get_outputs()
    names = [o.name for o in outputs]
    if SCORE_OUTPUT not in names:
        raise ModelContractError(f"output '{SCORE_OUTPUT}' not found, outputs are {names}")
    out = outputs[names.index(SCORE_OUTPUT)]
    if out.type != FLOAT:
        raise ModelContractError(f"output score: type must be float32, found {out.type}")
    oshape = list(out.shape)
    if len(oshape) not in (1, 2) or (
        len(oshape) == 2 and oshape[1] not in (1, None) and not isinstance(oshape[1], str)
    ):
        raise ModelContractError(f"output score: shape must be [N] or [N, 1], found {oshape}")
    if not _is_dynamic(oshape[0]):
        raise ModelContractError(
            f"output score: batch axis is fixed at {oshape[0]}; export with a dynamic batch axis"
        )
    return Signature(dim=model_dim if model_dim is not None else dim, output_rank=len(oshape))


def session_options() -> ort.SessionOptions:
    """One intra-op thread: a request's batch is small, and workers scale across cores."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


def open_session(model_bytes: bytes) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(
            model_bytes, sess_options=session_options(), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises several untyped errors for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelContractError(f"not a loadable ONNX model: {first}") from None
