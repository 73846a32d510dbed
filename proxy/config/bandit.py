"""``bandit:`` on an experiment in ``routes.yaml``: the experiment's users are spread over
several models by how well each does (proxy/experiments/bandit.py, weights.py).

    - name: versions
      when: {percent: 100}
      bandit: {models: [ranker_v1, ranker_v2, ranker_v3], update_s: 60, min_share: 0.05,
               burn_in: 500}
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Bandit"]


class Bandit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[str, ...]
    metric: Literal["ctr"] = "ctr"  # clicked exposures over exposures, users as units
    update_s: Annotated[float, Field(ge=1, le=86_400)] = 60.0
    min_share: Annotated[float, Field(ge=0, lt=0.5)] = 0.05
    burn_in: Annotated[int, Field(ge=0)] = 500  # exposures per model before weights move
    top_two: bool = False

    @model_validator(mode="after")
    def _models(self) -> Bandit:
        if len(self.models) < 2 or len(set(self.models)) != len(self.models):
            raise ValueError("models: at least two different models")
        if "none" in self.models:
            raise ValueError("models: 'none' is not a model (use a route's default arm)")
        if self.min_share * len(self.models) > 1:
            raise ValueError(f"min_share: {len(self.models)} models cannot each keep it")
        return self
