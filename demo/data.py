"""The demo's catalogue and users, read from the model workshop's ``demo_embeddings.npz``
(format: ``models/embeddings.py``).

Used: ``user_ids``/``user_vectors`` and ``item_ids``/``item_vectors`` (loaded into
Valkey; float16 in the file, float32 in Redis), and the item metadata the page shows:
``item_titles``, ``item_genres`` (``"Action|Sci-Fi"``), ``item_years`` (0: unknown),
``item_popularity`` (rating counts: the origin's order) and ``item_mean_rating``.
Metadata that is missing degrades to ids and the file's order, never to an error.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


class DataError(Exception):
    pass


@dataclass(frozen=True)
class Catalogue:
    """Items in the origin's order (most popular first) and the users' vectors."""

    items: list[dict[str, Any]]
    item_ids: list[str]
    item_vectors: np.ndarray
    user_ids: list[str]
    user_vectors: np.ndarray
    source: Path
    _by_user: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def dim(self) -> int:
        return int(self.item_vectors.shape[1])

    def user_vector(self, user_id: str) -> np.ndarray | None:
        if not self._by_user:
            self._by_user.update((u, k) for k, u in enumerate(self.user_ids))
        k = self._by_user.get(user_id)
        return None if k is None else self.user_vectors[k]

    def page(self, offset: int, limit: int) -> list[dict[str, Any]]:
        return self.items[offset : offset + limit]


def _first(npz: Any, *names: str) -> np.ndarray | None:
    for name in names:
        if name in npz.files:
            return np.asarray(npz[name])
    return None


def _genres(npz: Any, count: int) -> list[list[str]]:
    raw = _first(npz, "item_genres")
    if raw is None:
        return [[] for _ in range(count)]
    return [[g.strip() for g in str(s).split("|") if g.strip()] for s in raw]


def load_catalogue(path: Path) -> Catalogue:
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: {exc}") from None
    with npz:
        missing = [
            k
            for k in ("user_ids", "user_vectors", "item_ids", "item_vectors")
            if k not in npz.files
        ]
        if missing:
            raise DataError(f"{path}: missing arrays {missing}; found {sorted(npz.files)}")
        user_ids = [str(u) for u in npz["user_ids"].tolist()]
        item_ids = [str(i) for i in npz["item_ids"].tolist()]
        user_vectors = np.ascontiguousarray(npz["user_vectors"], dtype=np.float32)
        item_vectors = np.ascontiguousarray(npz["item_vectors"], dtype=np.float32)
        n = len(item_ids)
        titles = _first(npz, "item_titles")
        years = _first(npz, "item_years")
        genres = _genres(npz, n)
        counts = _first(npz, "item_popularity")
        ratings = _first(npz, "item_mean_rating")
    # Most rated first; ties keep the file's order (a stable sort).
    order = np.arange(n) if counts is None else np.argsort(-counts.astype(np.int64), kind="stable")

    items: list[dict[str, Any]] = []
    for pos, k in enumerate(order.tolist(), start=1):
        title = str(titles[k]) if titles is not None else f"Item {item_ids[k]}"
        year: int | None = None
        if years is not None and int(years[k]) > 0:
            year = int(years[k])
        elif match := _YEAR_IN_TITLE.search(title):
            year = int(match.group(1))
        item: dict[str, Any] = {
            "id": item_ids[k],
            "title": title,
            "year": year,
            "genres": genres[k],
            "popularity": pos,
        }
        if counts is not None:
            item["ratings"] = int(counts[k])
        if ratings is not None:
            item["mean_rating"] = round(float(ratings[k]), 2)
        items.append(item)
    return Catalogue(
        items=items,
        item_ids=[item_ids[k] for k in order.tolist()],
        item_vectors=item_vectors[order],
        user_ids=user_ids,
        user_vectors=user_vectors,
        source=path,
    )


@dataclass(frozen=True)
class Persona:
    """A user shown on the page, labelled by the genre the model pushes up for them."""

    user_id: str
    label: str
    genre: str
    top: list[str]  # titles of the model's first picks in the feed

    def as_json(self) -> dict[str, Any]:
        return {"id": self.user_id, "label": self.label, "genre": self.genre, "top": self.top}


Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def pick_personas(
    catalogue: Catalogue,
    score: Scorer,
    feed_size: int,
    *,
    count: int = 5,
    top_k: int = 10,
    max_shared: int = 1,
    eligible: Callable[[str], bool] = lambda _: True,
) -> list[Persona]:
    """Users whose re-ranked feeds lean to clearly different genres, strongest first.

    The model scores the feed the page shows for every user. A genre stands out in a
    user's top ``top_k`` by ``p * ln(p / q)`` (p: its share there, q: its share of the
    whole feed; the term of a KL divergence), so both a strong lean and a rare genre
    count. Users are taken greedily by that figure, one per genre, and only if their
    top ``top_k`` shares at most ``max_shared`` items with every user taken before:
    the page then offers tastes that are really different, not five shades of Action.
    """
    feed = catalogue.items[:feed_size]
    vectors = catalogue.item_vectors[:feed_size]
    base: Counter[str] = Counter(g for item in feed for g in item["genres"])
    candidates: list[tuple[float, str, str]] = []
    tops: dict[str, list[int]] = {}
    for uid in catalogue.user_ids:
        if not eligible(uid):
            continue
        top = tops[uid] = _top(score, catalogue, uid, vectors, top_k)
        picked: Counter[str] = Counter(g for k in top for g in feed[k]["genres"])
        for genre, n in picked.items():
            if n >= 3:  # a lean, not one or two films
                p, q = n / len(top), base[genre] / len(feed)
                candidates.append((p * math.log(p / q), uid, genre))
    if not base:
        # No genre metadata: the first users, labelled by their ids.
        candidates = [(0.0, uid, "") for uid in tops]
    candidates.sort(key=lambda c: (-c[0], _numeric(c[1])))
    out: list[Persona] = []
    for _, uid, genre in candidates:
        if any(p.user_id == uid or (genre and p.genre == genre) for p in out):
            continue
        mine = set(tops[uid])
        if any(len(mine.intersection(tops[p.user_id])) > max_shared for p in out):
            continue
        label = f"user {uid} \u2014 loves {genre}" if genre else f"user {uid}"
        out.append(Persona(uid, label, genre, [feed[k]["title"] for k in tops[uid][:3]]))
        if len(out) == count:
            break
    return out


def _top(
    score: Scorer, catalogue: Catalogue, uid: str, vectors: np.ndarray, top_k: int
) -> list[int]:
    user = catalogue.user_vector(uid)
    assert user is not None
    scores = score(user, vectors)
    return np.argsort(-scores, kind="stable")[:top_k].tolist()


def _numeric(ident: str) -> tuple[int, str]:
    return (int(ident), "") if ident.isdigit() else (1 << 62, ident)
