"""Training settings and the two committed model versions (no torch: the CLI imports this)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path

# Not imported from models/__init__: an editable install made before that file existed
# maps models as a namespace package, and this module must work there too.
MODELS_DIR = Path(__file__).resolve().parent

SEED = 20240605
DIM = 32
BUILD_DIR = MODELS_DIR / "build"  # checkpoints between train and export; not committed
NPZ_NAME = "demo_embeddings.npz"


@dataclass(frozen=True)
class MFConfig:
    """BPR matrix factorization that learns the user and item embeddings (no biases:
    whatever the ranker needs, popularity included, has to live in the vectors)."""

    dim: int = DIM
    epochs: int = 30
    lr: float = 0.01
    reg: float = 1e-3
    batch: int = 2048
    init_std: float = 0.1


@dataclass(frozen=True)
class RankerConfig:
    """One model version: the MLP over frozen embeddings, trained on positives vs
    sampled negatives with a pairwise (BPR) loss."""

    name: str
    hidden: tuple[int, ...] = (64, 32)
    epochs: int = 8
    negatives: int = 1
    # "uniform": negatives drawn uniformly, so the model learns what users watch,
    # popular items included. "popularity": drawn in proportion to count**alpha, so
    # popular items are the usual negatives and the model learns to surface less
    # obvious items a user's taste points to.
    sampling: str = "uniform"
    alpha: float = 0.75
    lr: float = 2e-3
    weight_decay: float = 1e-5
    batch: int = 1024
    note: str = ""


VERSIONS: dict[str, RankerConfig] = {
    "ranker_v1": RankerConfig(
        name="ranker_v1",
        note="uniform negatives: ranks by what users are most likely to watch next",
    ),
    "ranker_v2": RankerConfig(
        name="ranker_v2",
        hidden=(64, 32),
        epochs=8,
        negatives=4,
        sampling="popularity",
        alpha=1.0,
        note="popularity-sampled negatives: discovery, pushes less obvious picks up",
    ),
}


@dataclass(frozen=True)
class TrainOptions:
    data: str = "movielens"
    seed: int = SEED
    out_dir: Path = MODELS_DIR
    build_dir: Path = BUILD_DIR
    mf: MFConfig = field(default_factory=MFConfig)
    versions: tuple[RankerConfig, ...] = tuple(VERSIONS.values())


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        choices=["movielens", "synthetic"],
        default="movielens",
        help="MovieLens-100K from the recbole wheel, or the synthetic generator",
    )
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--dim", type=int, default=DIM, help="embedding dim D")
    parser.add_argument("--mf-epochs", type=int, default=None, help="override MF epochs")
    parser.add_argument(
        "--epochs", type=int, default=None, help="override every version's ranker epochs"
    )
    parser.add_argument(
        "--versions",
        default=",".join(VERSIONS),
        help="comma-separated versions to train (default: all)",
    )
    parser.add_argument("--out-dir", type=Path, default=MODELS_DIR, help=f"where {NPZ_NAME} goes")
    parser.add_argument("--build-dir", type=Path, default=BUILD_DIR, help="where checkpoints go")


def train_options(args: argparse.Namespace) -> TrainOptions:
    mf = MFConfig(dim=args.dim)
    if args.mf_epochs is not None:
        mf = replace(mf, epochs=args.mf_epochs)
    names = [n.strip() for n in args.versions.split(",") if n.strip()]
    unknown = [n for n in names if n not in VERSIONS]
    if unknown:
        raise SystemExit(f"unknown versions {unknown}; known: {sorted(VERSIONS)}")
    versions = tuple(
        replace(VERSIONS[n], epochs=args.epochs) if args.epochs is not None else VERSIONS[n]
        for n in names
    )
    return TrainOptions(
        data=args.data,
        seed=args.seed,
        out_dir=args.out_dir,
        build_dir=args.build_dir,
        mf=mf,
        versions=versions,
    )


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--build-dir", type=Path, default=BUILD_DIR, help="where train left the checkpoints"
    )
    parser.add_argument("--out-dir", type=Path, default=MODELS_DIR, help="where .onnx files go")
    parser.add_argument(
        "--versions", default=",".join(VERSIONS), help="comma-separated versions to export"
    )
    parser.add_argument("--opset", type=int, default=17)
