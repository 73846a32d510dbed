"""The reference ranking model: an MLP over concat(user embedding, item embedding).

Its ONNX export is the model contract rankgate serves: inputs ``user_embedding`` [N, D]
and ``item_embedding`` [N, D] float32, output ``score`` [N, 1]. Embeddings come from
matrix factorization (models.train) and live in Redis, outside the model, so one model
file serves any number of users and items.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

DEFAULT_DIM = 32
DEFAULT_HIDDEN = (64, 32)


class Ranker(nn.Module):
    def __init__(self, dim: int = DEFAULT_DIM, hidden: Sequence[int] = DEFAULT_HIDDEN) -> None:
        super().__init__()
        self.dim = dim
        self.hidden = tuple(hidden)
        layers: list[nn.Module] = []
        width = 2 * dim
        for size in self.hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, user_embedding: torch.Tensor, item_embedding: torch.Tensor) -> torch.Tensor:
        """[N, D], [N, D] -> score [N, 1]; higher ranks first."""
        return self.mlp(torch.cat([user_embedding, item_embedding], dim=1))


def build(config: dict[str, object]) -> Ranker:
    """A Ranker from the ``ranker`` part of a checkpoint's config."""
    dim = config.get("dim", DEFAULT_DIM)
    hidden = config.get("hidden", DEFAULT_HIDDEN)
    assert isinstance(dim, int) and isinstance(hidden, list | tuple)
    return Ranker(dim, [int(h) for h in hidden])
