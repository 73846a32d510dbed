"""Regenerate the metrics section of models/README.md from the committed artifacts.

    python -m models.report            # rewrite the block between the markers
    python -m models.report --check    # exit 1 if the README is out of date

No torch: the committed ONNX files are scored with onnxruntime, exactly as served, on
each user's held-out latest interaction, ranked among all the items they have not
interacted with (so it needs the data set: recbole for MovieLens). The block between
``<!-- metrics:start -->`` and ``<!-- metrics:end -->`` is replaced; never edit it by hand.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.contract import ITEM_INPUT, SCORE_OUTPUT, USER_INPUT, open_session, sha256_file
from models.data import leave_last_out, load, seen_matrix
from models.embeddings import Embeddings, load_embeddings
from models.evaluate import RankMetrics, heldout_ranks, kendall_tau, rank_metrics, top_k_overlap
from models.options import MODELS_DIR, NPZ_NAME
from models.quantize import compare

START = "<!-- metrics:start -->"
END = "<!-- metrics:end -->"
V1, V2, INT8 = "ranker_v1.onnx", "ranker_v2.onnx", "ranker_v1.int8.onnx"
DEMO_FEED = 100  # the demo's origin serves the most popular items


def onnx_scorer(session: ort.InferenceSession) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def score(user: np.ndarray, items: np.ndarray) -> np.ndarray:
        users = np.ascontiguousarray(np.broadcast_to(user, items.shape), dtype=np.float32)
        out = session.run([SCORE_OUTPUT], {USER_INPUT: users, ITEM_INPUT: items})[0]
        return np.asarray(out, dtype=np.float64).reshape(-1)

    return score


def score_matrix(
    score: Callable[[np.ndarray, np.ndarray], np.ndarray], users: np.ndarray, items: np.ndarray
) -> np.ndarray:
    items = np.ascontiguousarray(items, dtype=np.float32)
    return np.stack([score(u, items) for u in users])


def _dataset_name(emb: Embeddings) -> str:
    return "movielens" if emb.dataset.startswith("movielens") else "synthetic"


def build_section(models_dir: Path = MODELS_DIR) -> str:
    """The markdown that belongs between the markers."""
    emb = load_embeddings(models_dir / NPZ_NAME)
    data = load(_dataset_name(emb), seed=emb.seed)
    split = leave_last_out(data)
    if not (
        np.array_equal(split.heldout_users, emb.heldout_users)
        and np.array_equal(split.heldout_items, emb.heldout_items)
    ):
        raise SystemExit(f"{NPZ_NAME} was not trained on this split of {data.name}; retrain")
    seen = seen_matrix(data.n_users, data.n_items, split.train_users, split.train_items)
    held_seen = seen[split.heldout_users]
    users = emb.user_vectors[split.heldout_users]
    counts = np.bincount(split.train_items, minlength=data.n_items).astype(np.float64)
    rng = np.random.default_rng(emb.seed)
    sessions = {name: open_session((models_dir / name).read_bytes()) for name in (V1, V2, INT8)}

    scorers: list[tuple[str, str, np.ndarray]] = [
        ("random order", "origin-like baseline", rng.random((len(users), data.n_items))),
        (
            "popularity order",
            "origin-like baseline",
            np.broadcast_to(counts, (len(users), data.n_items)),
        ),
        ("MF dot product", "the embeddings alone, <user, item>", users @ emb.item_vectors.T),
    ]
    for name in (V1, V2, INT8):
        scores = score_matrix(onnx_scorer(sessions[name]), users, emb.item_vectors)
        scorers.append((f"`{name}`", "served model", scores))
    results: list[tuple[str, str, RankMetrics]] = [
        (label, what, rank_metrics(heldout_ranks(s, held_seen, split.heldout_items)))
        for label, what, s in scorers
    ]

    # How differently v1 and v2 order the demo's feed (the most popular items).
    feed = np.argsort(-emb.item_popularity, kind="stable")[:DEMO_FEED]
    feed_vecs = emb.item_vectors[feed]
    s1 = score_matrix(onnx_scorer(sessions[V1]), emb.user_vectors, feed_vecs)
    s2 = score_matrix(onnx_scorer(sessions[V2]), emb.user_vectors, feed_vecs)
    overlap = top_k_overlap(s1, s2, 10)
    tau12 = kendall_tau(s1, s2)
    pop = np.broadcast_to(emb.item_popularity[feed].astype(np.float64), s1.shape)

    quant = compare(models_dir / V1, models_dir / INT8, emb)

    n_held = len(split.heldout_users)
    lines = [
        f"Data: {data.name}, {data.n_users} users, {data.n_items} items; each user's latest",
        f"interaction held out ({n_held} users), ranked among all items the user has not",
        "interacted with in training. Scores from the committed files through onnxruntime.",
        "",
        "| scorer | what | NDCG@10 | recall@10 |",
        "|---|---|---:|---:|",
    ]
    lines += [f"| {label} | {what} | {m.ndcg:.4f} | {m.recall:.4f} |" for label, what, m in results]
    lines += [
        "",
        f"v1 vs v2 on the demo feed (the {DEMO_FEED} most popular items, all {len(s1)} users):",
        f"top-10 overlap mean {overlap.mean():.2f}/10, top-10 differs for "
        f"{np.mean(overlap < 10):.0%} of users, Kendall tau {tau12.mean():.3f}; Kendall tau with "
        f"popularity: v1 {kendall_tau(s1, pop).mean():.3f}, v2 {kendall_tau(s2, pop).mean():.3f}.",
        "",
        f"INT8 vs fp32 (`{INT8}` vs `{V1}`; {quant.inputs}, {quant.users} users x "
        f"{quant.feed_size} items, one run per user):",
        "",
        "| file size fp32 | file size int8 | max abs score error | Kendall tau mean (min) "
        "| top-10 overlap mean (min) |",
        "|---:|---:|---:|---:|---:|",
        f"| {quant.fp32_bytes / 1024:.1f} KB | {quant.int8_bytes / 1024:.1f} KB "
        f"| {quant.max_abs_error:.4f} | {quant.mean_kendall_tau:.4f} ({quant.min_kendall_tau:.4f}) "
        f"| {quant.mean_top10_overlap:.2f} ({quant.min_top10_overlap}) |",
        "",
        "| artifact | bytes | sha256 |",
        "|---|---:|---|",
    ]
    for name in (V1, V2, INT8, NPZ_NAME):
        path = models_dir / name
        lines.append(f"| `{name}` | {path.stat().st_size} | `{sha256_file(path)}` |")
    return "\n".join(lines)


def splice(text: str, section: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"README has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{section}\n{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--readme", type=Path, default=None, help="default: MODELS_DIR/README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the README is stale")
    parser.add_argument("--print", action="store_true", help="print the section, write nothing")
    args = parser.parse_args(argv)
    section = build_section(args.models_dir)
    if args.print:
        print(section)
        return 0
    readme = args.readme or args.models_dir / "README.md"
    old = readme.read_text()
    new = splice(old, section)
    if args.check:
        if new != old:
            print(f"{readme}: metrics block is stale; run python -m models.report", file=sys.stderr)
            return 1
        print(f"{readme}: metrics block is up to date")
        return 0
    readme.write_text(new)
    print(f"{readme}: metrics block {'rewritten' if new != old else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
