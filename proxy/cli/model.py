"""``rankgate model``: check, quantize and fingerprint ONNX rankers; train/export with torch.

    rankgate model check FILE [--dim D]   contract, dynamic batch, opset, ops, size,
                                          sha256, one timed run at N=100; exit 1 + reason
    rankgate model quantize IN OUT [--npz FILE]   INT8 dynamic quantization + report
    rankgate model sha256 FILE            the value to pin in routes.yaml
    rankgate model train [...]            models.train (needs torch: rankgate[train])
    rankgate model export [...]           models.export (needs torch)

check, quantize and sha256 need only what serving needs (onnxruntime, onnx, numpy).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from models.contract import ModelContractError, check_signature, open_session, sha256_bytes

CHECK_BATCH = 100
TIMED_RUNS = 5
DEFAULT_DIM = 32
MIN_OPSET = 14  # what the export path guarantees; older ones still load, with a warning
TORCH_MISSING = (
    "needs torch, the optional train extra: pip install 'rankgate[train]' "
    "(or pip install torch==2.13.0 for the CPU build)"
)


class CheckFailed(Exception):
    """A bad model: the message is the one-line reason."""


def _line(status: str, what: str, detail: str) -> None:
    print(f"{status:<5} {what:<9} {detail}", flush=True)


def _shape(arg: object) -> str:
    dims = getattr(arg, "shape", [])
    return "[" + ", ".join(str(d) if d is not None else "?" for d in dims) + "]"


def check_model(path: Path, dim: int | None) -> None:
    """Print one line per check; raise CheckFailed with the reason at the first failure."""
    data = _read(path)
    _line("ok", "file", f"{len(data) / 1024:.1f} KB, sha256 {sha256_bytes(data)}")
    proto = _parse(data)
    try:
        session = open_session(data)
        signature = check_signature(session, dim, dim_from="--dim")
    except ModelContractError as exc:
        raise CheckFailed(str(exc)) from None
    ins = ", ".join(f"{i.name} {_shape(i)}" for i in session.get_inputs())
    outs = ", ".join(f"{o.name} {_shape(o)}" for o in session.get_outputs())
    _line("ok", "contract", f"{ins} float32 -> {outs}; batch axis dynamic")
    _report_graph(proto)
    _timed_run(path, signature.dim or dim or DEFAULT_DIM)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CheckFailed("file not found") from None
    except IsADirectoryError:
        raise CheckFailed("is a directory, not a model file") from None
    except OSError as exc:
        raise CheckFailed(f"cannot read: {exc.strerror}") from None


def _parse(data: bytes) -> Any:
    import onnx  # only here: the serving path never imports onnx

    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise CheckFailed(f"not an ONNX model ({type(exc).__name__})") from None
    external = [
        t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
    ]
    if external:
        raise CheckFailed(
            f"weights live in an external data file ({external[0]}, ...); export one "
            "self-contained file (torch.onnx.export(..., dynamo=False) or external_data=False)"
        )
    return proto


def _report_graph(proto: Any) -> None:
    """The opsets and the operators the graph uses."""
    opsets = {op.domain or "ai.onnx": op.version for op in proto.opset_import}
    opset = opsets.get("ai.onnx")
    detail = ", ".join(f"{d} {v}" for d, v in sorted(opsets.items())) + f"; ir {proto.ir_version}"
    if opset is not None and opset < MIN_OPSET:
        _line("warn", "opset", f"{detail} (below {MIN_OPSET}: re-export with opset_version=17)")
    else:
        _line("ok", "opset", detail)
    ops = Counter(
        f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        for n in proto.graph.node
    )
    _line(
        "ok",
        "ops",
        f"{sum(ops.values())} nodes: " + ", ".join(f"{k} x{v}" for k, v in sorted(ops.items())),
    )


def _timed_run(path: Path, run_dim: int) -> None:
    """Load and warm the model exactly as serving does, then time a batch."""
    from proxy.routing.sessions import load_model

    try:
        model = load_model(path.stem, path, run_dim)
    except ModelContractError as exc:
        raise CheckFailed(str(exc)) from None
    rng = np.random.default_rng(0)
    user = rng.standard_normal(run_dim, dtype=np.float32)
    items = rng.standard_normal((CHECK_BATCH, run_dim), dtype=np.float32)
    try:
        timings = []
        for _ in range(TIMED_RUNS):  # best of a few: one run is at the mercy of the scheduler
            started = time.perf_counter()
            scores = model.score(user, items)
            timings.append(time.perf_counter() - started)
    except Exception as exc:
        raise CheckFailed(f"run at N={CHECK_BATCH} failed: {str(exc).splitlines()[0]}") from None
    if not np.all(np.isfinite(scores)):
        raise CheckFailed(f"run at N={CHECK_BATCH} returned non-finite scores (NaN or inf)")
    _line(
        "ok",
        "run",
        f"N={CHECK_BATCH}, D={run_dim}: {min(timings) * 1e6:.0f} us (best of {TIMED_RUNS}, "
        f"one intra-op thread), scores {float(scores.min()):.3g}..{float(scores.max()):.3g}",
    )


def cmd_check(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        check_model(path, args.dim)
    except CheckFailed as exc:
        # Once, on stdout with the check's other lines (as `rankgate check` reports): the
        # same sentence on stderr too read as two failures in a terminal.
        print(f"FAIL  {path}: {exc}", flush=True)
        return 1
    print(f"{path}: ok, rankgate can serve it")
    return 0


def cmd_sha256(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"rankgate model sha256: {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"{sha256_bytes(data)}  {path}")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    args.src, args.dst = Path(args.src), Path(args.dst)
    args.npz = Path(args.npz) if args.npz else None
    try:
        check_model_quiet(args.src)
    except CheckFailed as exc:
        print(f"rankgate model quantize: {args.src}: {exc}", file=sys.stderr)
        return 1
    if args.npz is not None and not args.npz.is_file():
        print(f"rankgate model quantize: {args.npz}: file not found", file=sys.stderr)
        return 1
    from models import quantize  # onnxruntime.quantization is slow to import; only here

    try:
        return quantize.run(args)
    except Exception as exc:  # a one-line reason, never a traceback
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"rankgate model quantize: {reason}", file=sys.stderr)
        return 1


def check_model_quiet(path: Path) -> None:
    """The contract part of ``check`` without output (quantize refuses bad inputs)."""
    try:
        check_signature(open_session(path.read_bytes()))
    except FileNotFoundError:
        raise CheckFailed("file not found") from None
    except OSError as exc:
        raise CheckFailed(f"cannot read: {exc.strerror}") from None
    except ModelContractError as exc:
        raise CheckFailed(str(exc)) from None


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def cmd_train(args: argparse.Namespace) -> int:
    if not torch_available():
        print(f"rankgate model train {TORCH_MISSING}", file=sys.stderr)
        return 2
    from models.train import cli

    return cli(args)


def cmd_export(args: argparse.Namespace) -> int:
    if not torch_available():
        print(f"rankgate model export {TORCH_MISSING}", file=sys.stderr)
        return 2
    from models.export import run

    return run(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    from models.options import add_export_arguments, add_train_arguments

    parser = subparsers.add_parser(
        "model",
        help="check, quantize, fingerprint, train or export ranking models",
        description="Check, quantize and fingerprint ONNX rankers; train and export with torch.",
    )
    sub = parser.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")

    check = sub.add_parser(
        "check", help="does rankgate accept this model? (exit 1 with the reason if not)"
    )
    check.add_argument("file", metavar="FILE", help="an .onnx model")
    check.add_argument(
        "--dim", type=int, default=None, help="embeddings.dim it must take (default: the model's)"
    )
    check.set_defaults(func=cmd_check)

    quant = sub.add_parser(
        "quantize", help="INT8 dynamic quantization, with an fp32 vs int8 report"
    )
    quant.add_argument("src", metavar="IN", help="fp32 ONNX model")
    quant.add_argument("dst", metavar="OUT", help="where the INT8 model goes")
    quant.add_argument(
        "--npz",
        default=None,
        help="embeddings (demo_embeddings.npz): report on its held-out users, else random inputs",
    )
    quant.add_argument("--json", action="store_true", help="print the report as JSON")
    quant.set_defaults(func=cmd_quantize)

    sha = sub.add_parser("sha256", help="the sha256 to pin in routes.yaml")
    sha.add_argument("file", metavar="FILE")
    sha.set_defaults(func=cmd_sha256)

    train = sub.add_parser("train", help="train embeddings and rankers (needs torch)")
    add_train_arguments(train)
    train.set_defaults(func=cmd_train)

    export = sub.add_parser("export", help="export trained rankers to ONNX (needs torch)")
    add_export_arguments(export)
    export.set_defaults(func=cmd_export)
