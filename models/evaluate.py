"""Ranking metrics in numpy (no torch, no scipy): NDCG@k, recall@k, Kendall tau, top-k overlap."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RankMetrics:
    ndcg: float
    recall: float
    users: int


def heldout_ranks(scores: np.ndarray, seen: np.ndarray, heldout: np.ndarray) -> np.ndarray:
    """0-based rank of each user's held-out item among the items they have not seen.

    ``scores`` [H, I] one row per evaluated user, ``seen`` [H, I] their training items
    (excluded), ``heldout`` [H] item indices. Ties are broken by item index, as a stable
    sort would, so a constant scorer (or popularity with equal counts) is not flattered.
    """
    rows = np.arange(len(heldout))
    masked = np.where(seen, -np.inf, scores.astype(np.float64))
    masked[rows, heldout] = scores[rows, heldout]  # the held-out item is never masked
    target = masked[rows, heldout][:, None]
    before = np.arange(scores.shape[1])[None, :] < heldout[:, None]
    return ((masked > target) | ((masked == target) & before)).sum(axis=1)


def rank_metrics(ranks: np.ndarray, k: int = 10) -> RankMetrics:
    """NDCG@k and recall@k with one relevant item per user (leave-last-out)."""
    hit = ranks < k
    gains = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    return RankMetrics(ndcg=float(gains.mean()), recall=float(hit.mean()), users=len(ranks))


def kendall_tau(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's tau-b between rows of ``a`` and ``b`` [B, n] (ties counted as in scipy)."""
    a = np.atleast_2d(a).astype(np.float64)
    b = np.atleast_2d(b).astype(np.float64)
    n = a.shape[1]
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    out = np.empty(a.shape[0])
    step = max(1, 2_000_000 // (n * n))  # bound memory: B*n*n sign matrices
    for start in range(0, a.shape[0], step):
        sa = np.sign(a[start : start + step, :, None] - a[start : start + step, None, :])[:, upper]
        sb = np.sign(b[start : start + step, :, None] - b[start : start + step, None, :])[:, upper]
        pairs = upper.sum()
        tied_a = (sa == 0).sum(axis=1)
        tied_b = (sb == 0).sum(axis=1)
        denom = np.sqrt((pairs - tied_a) * (pairs - tied_b).astype(np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + step] = np.where(denom > 0, (sa * sb).sum(axis=1) / denom, 1.0)
    return out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores per row, best first (stable on ties)."""
    return np.argsort(-scores, axis=-1, kind="stable")[..., :k]


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> np.ndarray:
    """How many of the top k of ``a`` are also in the top k of ``b``, per row."""
    ta, tb = top_k(np.atleast_2d(a), k), top_k(np.atleast_2d(b), k)
    return np.asarray([len(np.intersect1d(x, y)) for x, y in zip(ta, tb, strict=True)])
