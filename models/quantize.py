"""INT8 dynamic quantization of a ranker, and how far its ranking moves from fp32.

    python -m models.quantize models/ranker_v1.onnx models/ranker_v1.int8.onnx \
        --npz models/demo_embeddings.npz

No torch: this runs where the proxy runs (numpy + onnxruntime). ``quant_pre_process``
(shape inference) runs first, as onnxruntime recommends, then
``quantize_dynamic`` with QInt8 weights (7-bit range, see ``quantize``). The report
compares both models on the same inputs: for every held-out user in the npz, a 100-item
feed (their held-out item and 99 others, seeded); without an npz, random Gaussian vectors.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

from models.contract import ITEM_INPUT, SCORE_OUTPUT, USER_INPUT, check_signature, open_session
from models.embeddings import Embeddings, load_embeddings
from models.evaluate import kendall_tau, top_k_overlap

FEED_SIZE = 100
RANDOM_USERS = 500
TOP_K = 10


@dataclass(frozen=True)
class QuantReport:
    fp32_path: str
    int8_path: str
    fp32_bytes: int
    int8_bytes: int
    inputs: str
    users: int
    feed_size: int
    max_abs_error: float
    mean_kendall_tau: float
    min_kendall_tau: float
    mean_top10_overlap: float
    min_top10_overlap: int

    def lines(self) -> list[str]:
        ratio = self.int8_bytes / self.fp32_bytes if self.fp32_bytes else 0.0
        return [
            f"size        {self.fp32_bytes / 1024:.1f} KB fp32 -> {self.int8_bytes / 1024:.1f} KB "
            f"int8 ({ratio:.0%})",
            f"inputs      {self.inputs}: {self.users} users x {self.feed_size} items",
            f"score error max |int8 - fp32| = {self.max_abs_error:.4f}",
            f"kendall tau mean {self.mean_kendall_tau:.4f}, min {self.min_kendall_tau:.4f}",
            f"top-{TOP_K} overlap mean {self.mean_top10_overlap:.2f}/{TOP_K}, "
            f"min {self.min_top10_overlap}/{TOP_K}",
        ]


def quantize(src: Path, dst: Path) -> Path:
    """``src`` (fp32 ONNX) -> ``dst`` with QInt8 dynamic quantization; one file."""
    # quant_pre_process logs its own progress at INFO through the root logger.
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # ONNX shape inference only. onnxruntime's optimizer pass would add nothing to
        # this graph but a dozen unused opset imports and a dependence on the ORT version;
        # its symbolic shape pass needs sympy (no longer an onnxruntime dependency since
        # 1.32) and gave the same weights and nodes for the ranker (one value_info less),
        # so skipping it keeps the output the same with or without sympy installed.
        quant_pre_process(str(src), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
        dst.parent.mkdir(parents=True, exist_ok=True)
        # reduce_range: 7-bit weights. On x86 without VNNI (AVX2 only) onnxruntime's
        # u8 x s8 kernel can saturate its 16-bit intermediate sums; on this ranker that
        # tripled the worst score error (1.7 vs 0.5) and halved the worst top-10 overlap.
        quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8, reduce_range=True)
    return dst


def _scores(session: ort.InferenceSession, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """[B, F] scores for B users, each with their own F items ([B, D], [B, F, D]).

    One run() per user, as the proxy serves: dynamic quantization picks activation
    scales per run, so batching every user into one run would measure something else.
    """
    out = np.empty(items.shape[:2])
    for row, (user, feed) in enumerate(zip(users, items, strict=True)):
        feed = np.ascontiguousarray(feed, dtype=np.float32)
        tiled = np.ascontiguousarray(np.broadcast_to(user, feed.shape), dtype=np.float32)
        score = session.run([SCORE_OUTPUT], {USER_INPUT: tiled, ITEM_INPUT: feed})[0]
        out[row] = np.asarray(score, dtype=np.float64).reshape(-1)
    return out


def comparison_inputs(
    embeddings: Embeddings | None, dim: int, feed_size: int = FEED_SIZE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, str]:
    """Users [B, D] and their feeds [B, F, D]: held-out users from the npz, else random."""
    rng = np.random.default_rng(seed)
    if embeddings is None:
        users = rng.standard_normal((RANDOM_USERS, dim)).astype(np.float32)
        items = rng.standard_normal((RANDOM_USERS, feed_size, dim)).astype(np.float32)
        return users, items, "random Gaussian vectors"
    n_items = len(embeddings.item_ids)
    feed_size = min(feed_size, n_items)
    feeds = np.empty((len(embeddings.heldout_users), feed_size), dtype=np.int64)
    for row, held in enumerate(embeddings.heldout_items):
        others = rng.choice(n_items - 1, size=feed_size - 1, replace=False)
        others[others >= held] += 1  # every item but the held-out one
        feeds[row] = np.r_[held, others]
    users = embeddings.user_vectors[embeddings.heldout_users]
    return users, embeddings.item_vectors[feeds], f"held-out users of {embeddings.dataset}"


def compare(
    fp32: Path, int8: Path, embeddings: Embeddings | None = None, seed: int = 0
) -> QuantReport:
    """Score the same feeds with both models; error and rank agreement per user."""
    a = open_session(fp32.read_bytes())
    b = open_session(int8.read_bytes())
    dim = check_signature(a).dim or (embeddings.dim if embeddings else 32)
    check_signature(b, dim)
    users, items, label = comparison_inputs(embeddings, dim, seed=seed)
    sa, sb = _scores(a, users, items), _scores(b, users, items)
    tau = kendall_tau(sa, sb)
    overlap = top_k_overlap(sa, sb, TOP_K)
    return QuantReport(
        fp32_path=str(fp32),
        int8_path=str(int8),
        fp32_bytes=fp32.stat().st_size,
        int8_bytes=int8.stat().st_size,
        inputs=label,
        users=len(users),
        feed_size=items.shape[1],
        max_abs_error=float(np.abs(sa - sb).max()),
        mean_kendall_tau=float(tau.mean()),
        min_kendall_tau=float(tau.min()),
        mean_top10_overlap=float(overlap.mean()),
        min_top10_overlap=int(overlap.min()),
    )


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="python -m models.quantize", description=__doc__.split("\n")[0]
    )
    parser.add_argument("src", type=Path, metavar="IN", help="fp32 ONNX model")
    parser.add_argument("dst", type=Path, metavar="OUT", help="where the INT8 model goes")
    parser.add_argument(
        "--npz", type=Path, default=None, help="embeddings whose held-out users the report uses"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    embeddings = load_embeddings(args.npz) if args.npz else None
    quantize(args.src, args.dst)
    report = compare(args.src, args.dst, embeddings)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print(f"{args.src} -> {args.dst}")
        for line in report.lines():
            print(f"  {line}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
