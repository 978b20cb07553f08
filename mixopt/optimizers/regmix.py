"""`regmix`: RegMix (arXiv 2407.01492) — regress the objective on mixture weights, simulate, average the top-k.

propose: RegMix's Dirichlet generator around the tempered token prior (non-adaptive, as in the paper).
recommend: fit LightGBM on the successful runs, score `n_candidates` mixtures drawn from Dirichlet(prior ·
`candidate_strength`) in chunks, and return the mean of the `top_k` lowest predictions (METHODS.md §1c–d).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from mixopt.errors import InputError
from mixopt.optimizers.base import OptimizerBase, Proposal, Recommendation, mixture_dict
from mixopt.optimizers.random_search import history_prior
from mixopt.predictors import LightGBMPredictor
from mixopt.runs import RunTable
from mixopt.simplex import SamplerSettings, dirichlet, sample_mixtures
from mixopt.spec import TargetSpec


class RegMixSettings(SamplerSettings):
    n_candidates: int = Field(default=100_000, ge=1, description="simulated mixtures scored by the predictor")
    top_k: int = Field(default=128, ge=1, description="mean of the k best-predicted candidates")
    candidate_strength: float = Field(default=1.0, gt=0, description="Dirichlet(prior·strength) candidates")
    chunk_size: int = Field(default=250_000, ge=1000, description="candidates scored per chunk (memory)")
    n_estimators: int = Field(default=1000, ge=1)
    learning_rate: float = Field(default=0.01, gt=0)
    min_child_samples: int | None = Field(default=None, ge=1, description="None: min(20, runs/4)")
    min_runs: int = Field(default=4, ge=2, description="successful runs needed before fitting")


class RegMix(OptimizerBase):
    name = "regmix"
    Settings = RegMixSettings

    def propose(self, history: RunTable, n: int) -> list[Proposal]:
        prior, _ = history_prior(history)
        W = sample_mixtures(prior, n, self.rng(history), self.settings)
        return [Proposal(mixture_dict(history.domains, w)) for w in W]

    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        s = self.settings
        ok, y = history.usable(self.objective)
        if len(ok) < s.min_runs:
            raise InputError(history.source,
                             f"regmix needs at least {s.min_runs} successful runs, has {len(ok)}",
                             "train more proxies (raise budget.runs) or lower optimizer.min_runs")
        model = LightGBMPredictor(n_estimators=s.n_estimators, learning_rate=s.learning_rate,
                                  min_child_samples=s.min_child_samples, seed=self.seed)
        model.fit(ok.weights, y)
        prior, prior_note = history_prior(history)
        rng = self.rng(history, salt="candidates")
        k = min(s.top_k, s.n_candidates)
        best_w = np.empty((0, len(prior)))
        best_y = np.empty(0)
        left = s.n_candidates
        while left > 0:  # streamed so that 10M candidates never sit in memory at once
            m = min(left, s.chunk_size)
            C = dirichlet(prior * s.candidate_strength, m, rng)
            pred = model.predict(C)
            best_w = np.concatenate([best_w, C])
            best_y = np.concatenate([best_y, pred])
            keep = np.argsort(best_y, kind="stable")[:k]
            best_w, best_y = best_w[keep], best_y[keep]
            left -= m
        w = best_w.mean(axis=0)
        notes = list(ok.notes) + ([prior_note] if prior_note else [])
        notes.append(f"LightGBM fitted on {len(ok)} runs; mean of the top {k} of {s.n_candidates} candidates")
        spread = best_w.std(axis=0)
        notes.append("top-k spread per domain: " + ", ".join(
            f"{d} ±{v:.3f}" for d, v in zip(history.domains, spread, strict=True)))
        predicted = float(model.predict(w[None, :])[0])
        return self._recommendation(w, history, predicted=predicted, runs_used=ok.run_ids(), notes=notes)
