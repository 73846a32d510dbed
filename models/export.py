"""Export trained rankers to ONNX with a dynamic batch axis, and verify them.

    python -m models.export            # models/build/ranker_v*.pt -> models/ranker_v*.onnx

The legacy TorchScript exporter (``dynamo=False``) writes one self-contained ~26 KB
file with no stack traces or local paths in it; the dynamo exporter would need
onnxscript and split weights into a side file. Each export is loaded back in
onnxruntime and compared with PyTorch on random inputs at batch 1, 100 and 1000.
"""

from __future__ import annotations

import argparse
import io
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch

from models.contract import (
    ITEM_INPUT,
    SCORE_OUTPUT,
    USER_INPUT,
    check_signature,
    open_session,
    sha256_file,
)
from models.options import add_export_arguments
from models.ranker import Ranker, build

VERIFY_BATCHES = (1, 100, 1000)
TOLERANCE = 1e-4


class ExportMismatch(AssertionError):
    pass


def load_checkpoint(path: Path) -> Ranker:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = build(checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def export_model(model: Ranker, path: Path, opset: int = 17) -> Path:
    """Write ``model`` as ONNX: inputs user_embedding/item_embedding [N, D], score [N, 1]."""
    model = model.eval()
    example = (torch.zeros(2, model.dim), torch.zeros(2, model.dim))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy exporter announces its deprecation; it is still the one that writes
        # a single clean file at opset 17.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            example,
            buffer,
            input_names=[USER_INPUT, ITEM_INPUT],
            output_names=[SCORE_OUTPUT],
            dynamic_axes={USER_INPUT: {0: "N"}, ITEM_INPUT: {0: "N"}, SCORE_OUTPUT: {0: "N"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


@torch.no_grad()
def verify(model: Ranker, path: Path, seed: int = 0) -> float:
    """Max abs difference between onnxruntime and torch over batches 1/100/1000."""
    session = open_session(path.read_bytes())
    check_signature(session, model.dim)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for n in VERIFY_BATCHES:
        users = rng.standard_normal((n, model.dim), dtype=np.float32)
        items = rng.standard_normal((n, model.dim), dtype=np.float32)
        got = session.run([SCORE_OUTPUT], {USER_INPUT: users, ITEM_INPUT: items})[0]
        want = model(torch.from_numpy(users), torch.from_numpy(items)).numpy()
        if got.shape != want.shape:
            raise ExportMismatch(f"batch {n}: onnx shape {got.shape}, torch {want.shape}")
        worst = max(worst, float(np.abs(got - want).max()))
    if worst > TOLERANCE:
        raise ExportMismatch(f"onnxruntime differs from torch by {worst:.2e} > {TOLERANCE}")
    return worst


def run(args: argparse.Namespace) -> int:
    """Export and verify each version named in ``args`` (see ``add_export_arguments``)."""
    torch.set_num_threads(1)
    for name in [n.strip() for n in args.versions.split(",") if n.strip()]:
        checkpoint = args.build_dir / f"{name}.pt"
        if not checkpoint.exists():
            print(f"{checkpoint}: not found; run python -m models.train first", file=sys.stderr)
            return 1
        model = load_checkpoint(checkpoint)
        out = export_model(model, args.out_dir / f"{name}.onnx", args.opset)
        error = verify(model, out)
        print(
            f"{out}: {out.stat().st_size / 1024:.1f} KB, opset {args.opset}, "
            f"max |ort - torch| {error:.1e} at N={'/'.join(map(str, VERIFY_BATCHES))}, "
            f"sha256 {sha256_file(out)}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.export", description=__doc__.split("\n")[0]
    )
    add_export_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
