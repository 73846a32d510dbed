"""``demo_embeddings.npz``: the trained embeddings and what the demo shows about each item.

Arrays (``np.load(..., allow_pickle=False)`` reads them; no pickles inside):

=================  ==============  =====================================================
user_ids           str [U]         MovieLens user ids ("1".."943")
user_vectors       float16 [U, D]  user embeddings (load as float32: ``load_embeddings``)
item_ids           str [I]         MovieLens item ids ("1".."1682")
item_vectors       float16 [I, D]  item embeddings
item_titles        str [I]         public movie titles
item_genres        str [I]         "|"-joined genres, e.g. "Action|Sci-Fi"
item_years         int16 [I]       release year, 0 when unknown
item_popularity    int32 [I]       number of ratings in the whole data set
item_mean_rating   float16 [I]     mean rating (1-5), 0 when none
heldout_users      int32 [H]       row indices into user_ids: users evaluated
heldout_items      int32 [H]       row indices into item_ids: each one's held-out item
dataset            str []          "movielens-100k" or "synthetic-..."
seed               int64 []        training seed
=================  ==============  =====================================================

Vectors are stored as float16 to keep the file small (~0.2 MB); training rounds the MF
embeddings to float16 precision *before* the rankers are trained and evaluated, so the
float32 values loaded back are exactly the ones the models were fitted on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

REQUIRED = (
    "user_ids",
    "user_vectors",
    "item_ids",
    "item_vectors",
    "item_titles",
    "item_genres",
    "item_years",
    "item_popularity",
    "heldout_users",
    "heldout_items",
)


@dataclass(frozen=True)
class Embeddings:
    user_ids: np.ndarray
    user_vectors: np.ndarray  # float32
    item_ids: np.ndarray
    item_vectors: np.ndarray  # float32
    item_titles: np.ndarray
    item_genres: np.ndarray
    item_years: np.ndarray
    item_popularity: np.ndarray
    heldout_users: np.ndarray
    heldout_items: np.ndarray
    dataset: str
    seed: int

    @property
    def dim(self) -> int:
        return int(self.item_vectors.shape[1])


def round_f16(vectors: np.ndarray) -> np.ndarray:
    """float32 values exactly representable in float16: what the npz will give back."""
    return np.asarray(vectors, dtype=np.float32).astype(np.float16).astype(np.float32)


def save_embeddings(
    path: Path,
    *,
    user_ids: np.ndarray,
    user_vectors: np.ndarray,
    item_ids: np.ndarray,
    item_vectors: np.ndarray,
    item_titles: np.ndarray,
    item_genres: np.ndarray,
    item_years: np.ndarray,
    item_popularity: np.ndarray,
    item_mean_rating: np.ndarray,
    heldout_users: np.ndarray,
    heldout_items: np.ndarray,
    dataset: str,
    seed: int,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written through a file object so numpy does not append ".npz" to other names.
    with open(path, "wb") as fh:
        np.savez_compressed(
            fh,
            user_ids=np.asarray(user_ids, dtype=str),
            user_vectors=np.asarray(user_vectors, dtype=np.float16),
            item_ids=np.asarray(item_ids, dtype=str),
            item_vectors=np.asarray(item_vectors, dtype=np.float16),
            item_titles=np.asarray(item_titles, dtype=str),
            item_genres=np.asarray(item_genres, dtype=str),
            item_years=np.asarray(item_years, dtype=np.int16),
            item_popularity=np.asarray(item_popularity, dtype=np.int32),
            item_mean_rating=np.asarray(item_mean_rating, dtype=np.float16),
            heldout_users=np.asarray(heldout_users, dtype=np.int32),
            heldout_items=np.asarray(heldout_items, dtype=np.int32),
            dataset=np.asarray(dataset),
            seed=np.asarray(seed, dtype=np.int64),
        )


def load_embeddings(path: Path) -> Embeddings:
    """Read the npz back, vectors as float32; raise ValueError naming missing arrays."""
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in REQUIRED if k not in npz.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}")
        return Embeddings(
            user_ids=npz["user_ids"],
            user_vectors=npz["user_vectors"].astype(np.float32),
            item_ids=npz["item_ids"],
            item_vectors=npz["item_vectors"].astype(np.float32),
            item_titles=npz["item_titles"],
            item_genres=npz["item_genres"],
            item_years=npz["item_years"].astype(np.int64),
            item_popularity=npz["item_popularity"].astype(np.int64),
            heldout_users=npz["heldout_users"].astype(np.int64),
            heldout_items=npz["heldout_items"].astype(np.int64),
            dataset=str(npz["dataset"]) if "dataset" in npz.files else "unknown",
            seed=int(npz["seed"]) if "seed" in npz.files else 0,
        )
