"""`natural`: weights proportional to each domain's token count — what "just concatenate it all" trains on."""

from __future__ import annotations

import numpy as np

from mixopt.errors import InputError
from mixopt.optimizers.base import OptimizerBase, Proposal, Recommendation, mixture_dict
from mixopt.optimizers.uniform import fixed_mixture_recommendation
from mixopt.runs import RunTable
from mixopt.spec import TargetSpec


class Natural(OptimizerBase):
    name = "natural"
    verifies = False

    def _w(self, history: RunTable) -> np.ndarray:
        if history.prior is None:
            raise InputError(history.source, "the natural mixture needs each domain's token count",
                             "load the run table with token_counts={domain: tokens, ...}")
        return history.prior

    def propose(self, history: RunTable, n: int) -> list[Proposal]:
        return [Proposal(mixture_dict(history.domains, self._w(history))) for _ in range(n)]

    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        return fixed_mixture_recommendation(self, history, self._w(history))
