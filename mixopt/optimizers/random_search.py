"""`random`: mixtures drawn from RegMix's Dirichlet generator; recommends the best run observed.

The baseline every model-based method must beat with the same number of proxy runs.
"""

from __future__ import annotations

import numpy as np

from mixopt.errors import InputError
from mixopt.optimizers.base import OptimizerBase, Proposal, Recommendation, mixture_dict
from mixopt.runs import RunTable
from mixopt.simplex import SamplerSettings, sample_mixtures
from mixopt.spec import TargetSpec


def history_prior(history: RunTable) -> tuple[np.ndarray, str | None]:
    """Token prior when known, else uniform (with a note saying so)."""
    if history.prior is not None:
        return history.prior, None
    k = len(history.domains)
    return np.full(k, 1.0 / k), "domain token counts unknown: the uniform mixture was used as the prior"


def best_observed(opt: OptimizerBase, history: RunTable) -> Recommendation:
    ok, y = history.usable(opt.objective)
    if len(ok) == 0:
        raise InputError(history.source, f"{opt.name} needs at least one successful run to recommend",
                         "train some proxies first (mixopt submit / resume)")
    i = int(np.argmin(y))
    ids = ok.run_ids()
    return opt._recommendation(ok.weights[i], history, predicted=float(y[i]), runs_used=ids,
                               notes=ok.notes + [f"best of {len(ok)} observed runs: {ids[i]}"])


class RandomSearch(OptimizerBase):
    name = "random"
    Settings = SamplerSettings

    def propose(self, history: RunTable, n: int) -> list[Proposal]:
        prior, _ = history_prior(history)
        W = sample_mixtures(prior, n, self.rng(history), self.settings)
        return [Proposal(mixture_dict(history.domains, w)) for w in W]

    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        return best_observed(self, history)
