"""Simulated clicks for the demo's traffic button: users who click what they like.

A user scans the served list from the top and stops at the first click (a cascade):
position k (from 0) is looked at with probability 0.7**k, and an item is clicked with
probability 0.25 when it is among the items the user likes most (a user-item affinity in
the top 10% of the user's own over the whole catalogue), else 0.02. Affinity is the dot
product of the user's and the item's MovieLens factor vectors (models/README.md), the
signal the models learned from; so a better ranker earns more clicks, as in a real test.
"""

from __future__ import annotations

import random

import numpy as np

from demo.data import Catalogue

DEPTH = 10
LOOK = 0.7
LIKED, OTHER = 0.25, 0.02
LIKED_SHARE = 0.10


class ClickModel:
    def __init__(self, catalogue: Catalogue, seed: int | None = None) -> None:
        self.catalogue = catalogue
        self.index = {item: k for k, item in enumerate(catalogue.item_ids)}
        self.rng = random.Random(seed)
        self._liked: dict[str, float] = {}

    def threshold(self, user: np.ndarray, user_id: str) -> float:
        cut = self._liked.get(user_id)
        if cut is None:
            affinity = self.catalogue.item_vectors @ user
            cut = self._liked[user_id] = float(np.quantile(affinity, 1 - LIKED_SHARE))
        return cut

    def click(self, user_id: str, served: list[str]) -> str | None:
        """The item this user clicks in ``served`` (ids in served order), or None."""
        user = self.catalogue.user_vector(user_id)
        if user is None:
            return None
        cut = self.threshold(user, user_id)
        vectors = self.catalogue.item_vectors
        for k, item in enumerate(served[:DEPTH]):
            if k and self.rng.random() >= LOOK:
                return None  # looked no further: position k is reached with LOOK**k
            row = self.index.get(item)
            liked = row is not None and float(vectors[row] @ user) >= cut
            if self.rng.random() < (LIKED if liked else OTHER):
                return item
        return None
