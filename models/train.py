"""Train the embeddings (BPR matrix factorization) and the ranker versions on them.

    python -m models.train                      # MovieLens-100K (needs recbole), all versions
    python -m models.train --data synthetic     # no data set needed

Writes ``demo_embeddings.npz`` to ``--out-dir`` and one checkpoint per version to
``--build-dir`` (``models/build/``, not committed), which ``python -m models.export``
turns into ONNX. Deterministic for a given seed: a single thread and seeded generators.
Prints NDCG@10 / recall@10 on each user's held-out latest interaction for every version
and the origin-like baselines.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F

from models.data import DataUnavailable, Interactions, Split, leave_last_out, load, seen_matrix
from models.embeddings import round_f16, save_embeddings
from models.evaluate import RankMetrics, heldout_ranks, rank_metrics
from models.options import (
    NPZ_NAME,
    MFConfig,
    RankerConfig,
    TrainOptions,
    add_train_arguments,
    train_options,
)
from models.ranker import Ranker


def make_deterministic(seed: int) -> torch.Generator:
    """Same seed, same bytes: one thread and a private generator.

    Not ``torch.use_deterministic_algorithms``: it imports torch._inductor, 3-17 s on a
    busy 2-core machine, for nothing here, since every op this uses (embedding gathers,
    Linear, Adam) is deterministic on one CPU thread. tests/unit/models/test_models.py and the
    rebuild in models/README.md check that outputs are byte-identical instead.
    """
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def sample_negatives(
    users: torch.Tensor,
    count: int,
    seen: torch.Tensor,
    gen: torch.Generator,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B, count] items each user has not interacted with (a few redraws, then kept)."""
    n_items = seen.shape[1]

    def draw(n: int) -> torch.Tensor:
        if weights is None:
            return torch.randint(0, n_items, (n,), generator=gen)
        return torch.multinomial(weights, n, replacement=True, generator=gen)

    neg = draw(users.numel() * count).view(-1, count)
    for _ in range(3):
        bad = seen[users[:, None].expand_as(neg), neg]
        if not bad.any():
            break
        neg[bad] = draw(int(bad.sum()))
    return neg


def train_mf(
    cfg: MFConfig,
    n_users: int,
    n_items: int,
    split: Split,
    seen: torch.Tensor,
    gen: torch.Generator,
    log: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """BPR-MF: score(u, i) = <p_u, q_i>; returns float32 user and item matrices."""
    user_emb = torch.nn.Parameter(torch.randn(n_users, cfg.dim, generator=gen) * cfg.init_std)
    item_emb = torch.nn.Parameter(torch.randn(n_items, cfg.dim, generator=gen) * cfg.init_std)
    opt = torch.optim.Adam([user_emb, item_emb], lr=cfg.lr)
    users = torch.from_numpy(split.train_users)
    items = torch.from_numpy(split.train_items)
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(users), generator=gen)
        total = 0.0
        for start in range(0, len(order), cfg.batch):
            idx = order[start : start + cfg.batch]
            u, p = users[idx], items[idx]
            n = sample_negatives(u, 1, seen, gen)[:, 0]
            pu, qp, qn = user_emb[u], item_emb[p], item_emb[n]
            diff = (pu * (qp - qn)).sum(dim=1)
            reg = (pu.pow(2) + qp.pow(2) + qn.pow(2)).sum(dim=1).mean()
            loss = -F.logsigmoid(diff).mean() + cfg.reg * reg
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if log and (epoch + 1) % 10 == 0:
            print(f"  mf epoch {epoch + 1}/{cfg.epochs} loss {total / len(order):.4f}")
    return user_emb.detach().numpy().copy(), item_emb.detach().numpy().copy()


def train_ranker(
    cfg: RankerConfig,
    user_vecs: torch.Tensor,
    item_vecs: torch.Tensor,
    split: Split,
    seen: torch.Tensor,
    item_counts: np.ndarray,
    gen: torch.Generator,
    log: bool = True,
) -> Ranker:
    """The MLP on (user, positive) vs (user, sampled negative) pairs, BPR loss."""
    model = Ranker(user_vecs.shape[1], cfg.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weights = None
    if cfg.sampling == "popularity":
        weights = torch.from_numpy(item_counts.astype(np.float64) + 1.0).pow(cfg.alpha)
    elif cfg.sampling != "uniform":
        raise ValueError(f"{cfg.name}: sampling must be uniform or popularity")
    users = torch.from_numpy(split.train_users)
    items = torch.from_numpy(split.train_items)
    dim = user_vecs.shape[1]
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(users), generator=gen)
        total = 0.0
        for start in range(0, len(order), cfg.batch):
            idx = order[start : start + cfg.batch]
            u, p = users[idx], items[idx]
            n = sample_negatives(u, cfg.negatives, seen, gen, weights)  # [B, K]
            uv = user_vecs[u]
            pos = model(uv, item_vecs[p])  # [B, 1]
            neg = model(
                uv[:, None, :].expand(-1, cfg.negatives, -1).reshape(-1, dim),
                item_vecs[n.reshape(-1)],
            ).view(-1, cfg.negatives)
            loss = -F.logsigmoid(pos - neg).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if log:
            print(f"  {cfg.name} epoch {epoch + 1}/{cfg.epochs} loss {total / len(order):.4f}")
    return model.eval()


@torch.no_grad()
def ranker_scores(model: Ranker, user_vecs: np.ndarray, item_vecs: np.ndarray) -> np.ndarray:
    """[U', I] scores of every item for each given user vector."""
    items = torch.from_numpy(item_vecs)
    rows = []
    for u in user_vecs:
        users = torch.from_numpy(u).expand(len(items), -1)
        rows.append(model(users, items)[:, 0].numpy())
    return np.stack(rows)


def baselines(n_items: int, split: Split, seed: int) -> dict[str, np.ndarray]:
    """The origin-like orders: by training popularity, and a seeded random order."""
    counts = np.bincount(split.train_items, minlength=n_items).astype(np.float64)
    rng = np.random.default_rng(seed)
    h = len(split.heldout_users)
    return {
        "popularity": np.broadcast_to(counts, (h, n_items)),
        "random": rng.random((h, n_items)),
    }


def evaluate(scores: np.ndarray, seen: np.ndarray, split: Split) -> RankMetrics:
    ranks = heldout_ranks(scores, seen[split.heldout_users], split.heldout_items)
    return rank_metrics(ranks, k=10)


def item_stats(data: Interactions) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(data.items, minlength=data.n_items)
    sums = np.bincount(data.items, weights=data.ratings, minlength=data.n_items)
    mean = np.divide(sums, counts, out=np.zeros(data.n_items), where=counts > 0)
    return counts, mean


def run(opts: TrainOptions, log: bool = True) -> dict[str, dict[str, float]]:
    """Train everything; write the npz and checkpoints; return metrics per scorer."""
    started = time.perf_counter()
    gen = make_deterministic(opts.seed)
    data = load(opts.data, seed=opts.seed)
    split = leave_last_out(data)
    seen_np = seen_matrix(data.n_users, data.n_items, split.train_users, split.train_items)
    seen = torch.from_numpy(seen_np)
    if log:
        print(
            f"data {data.name}: {data.n_users} users, {data.n_items} items, "
            f"{len(split.train_users)} train / {len(split.heldout_users)} held out"
        )
    user_vecs, item_vecs = train_mf(opts.mf, data.n_users, data.n_items, split, seen, gen, log)
    # Round now: the rankers are fitted on exactly what the float16 npz gives back.
    user_vecs, item_vecs = round_f16(user_vecs), round_f16(item_vecs)
    counts, mean_rating = item_stats(data)
    train_counts = np.bincount(split.train_items, minlength=data.n_items)
    save_embeddings(
        opts.out_dir / NPZ_NAME,
        user_ids=data.user_ids,
        user_vectors=user_vecs,
        item_ids=data.item_ids,
        item_vectors=item_vecs,
        item_titles=data.item_titles,
        item_genres=data.item_genres,
        item_years=data.item_years,
        item_popularity=counts,
        item_mean_rating=mean_rating,
        heldout_users=split.heldout_users,
        heldout_items=split.heldout_items,
        dataset=data.name,
        seed=opts.seed,
    )
    held_users = user_vecs[split.heldout_users]
    metrics: dict[str, RankMetrics] = {}
    for name, scores in baselines(data.n_items, split, opts.seed).items():
        metrics[name] = evaluate(scores, seen_np, split)
    metrics["mf_dot"] = evaluate(held_users @ item_vecs.T, seen_np, split)
    opts.build_dir.mkdir(parents=True, exist_ok=True)
    uv, iv = torch.from_numpy(user_vecs), torch.from_numpy(item_vecs)
    for cfg in opts.versions:
        model = train_ranker(cfg, uv, iv, split, seen, train_counts, gen, log)
        metrics[cfg.name] = evaluate(ranker_scores(model, held_users, item_vecs), seen_np, split)
        torch.save(
            {"config": {**asdict(cfg), "dim": opts.mf.dim}, "state_dict": model.state_dict()},
            opts.build_dir / f"{cfg.name}.pt",
        )
    out = {
        k: {"ndcg@10": m.ndcg, "recall@10": m.recall, "users": m.users} for k, m in metrics.items()
    }
    (opts.build_dir / "train_metrics.json").write_text(json.dumps(out, indent=2) + "\n")
    if log:
        print(f"{'scorer':<12} {'NDCG@10':>8} {'recall@10':>10}")
        for name, m in metrics.items():
            print(f"{name:<12} {m.ndcg:8.4f} {m.recall:10.4f}")
        print(f"trained in {time.perf_counter() - started:.1f} s -> {opts.out_dir / NPZ_NAME}")
    return out


def cli(args: argparse.Namespace) -> int:
    """Entry point shared by ``python -m models.train`` and ``rankgate model train``."""
    try:
        run(train_options(args))
    except DataUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.train", description=__doc__.split("\n")[0]
    )
    add_train_arguments(parser)
    return cli(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
