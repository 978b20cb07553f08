"""`regmix`: RegMix (arXiv 2407.01492) — regress the objective on mixture weights, simulate, average the top-k.

propose: RegMix's Dirichlet generator around the tempered token prior, under the per-domain repetition caps
(non-adaptive, as in the paper; docs/methods.md §1a).
recommend: fit the predictor (the mean of LightGBM with RegMix's settings and a GP on sqrt-weights by default;
`predictor: lightgbm` is the paper's exact recipe) on the successful runs, score
`n_candidates` mixtures drawn from Dirichlet(prior · `candidate_strength`) in chunks, keep only those within
the caps, and return the mean of the `top_k` lowest predictions (§1c–d). The caps are linear constraints, so
the mean of feasible candidates is feasible too — the paper's simulation ignored them (§1f). The simulation
and recommendation are shared with CLIMB (mixopt/optimizers/_surrogate.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mixopt.optimizers._surrogate import SurrogateOptimizer, SurrogateSettings
from mixopt.optimizers.base import Proposal, mixture_dict
from mixopt.runs import RunTable
from mixopt.simplex import sample_mixtures


class RegMixSettings(SurrogateSettings):
    predictor: Literal["lightgbm", "linear", "gp", "ensemble"] = Field(
        default="ensemble", description="ensemble = mean of lightgbm and gp (best ρ on RegMix's runs, see "
        "benchmarks/regmix_pile.py); lightgbm = the paper's predictor")


class RegMix(SurrogateOptimizer):
    name = "regmix"
    Settings = RegMixSettings
    settings: RegMixSettings

    def propose(self, history: RunTable, n: int) -> list[Proposal]:
        prior, _ = self.prior(history)
        caps, _ = self.caps(history, prior, None)
        W = sample_mixtures(prior, n, self.rng(history), self.settings, caps=caps)
        return [Proposal(mixture_dict(history.domains, w)) for w in W]
