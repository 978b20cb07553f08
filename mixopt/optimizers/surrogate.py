"""Shared machinery of optimizers that fit a predictor on the runs and search simulated mixtures with it.

RegMix and CLIMB differ in how they choose the mixtures to train (one shot vs rounds pruned by the predictor),
not in how they turn a fitted predictor into a recommendation: both take the token prior (or a given one), the
per-domain repetition caps, draw candidates from Dirichlet(prior · strength), score them in chunks (with a cheap
pre-ranking where the predictor has one), and average the k best. That part lives here, once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from mixopt.errors import InputError
from mixopt.optimizers.base import OptimizerBase, Recommendation, mixture_dict
from mixopt.optimizers.random_search import history_prior
from mixopt.predictors import make_predictor
from mixopt.runs import RunTable
from mixopt.simplex import SamplerSettings, dirichlet, repetition_caps
from mixopt.spec import TargetSpec


class SurrogateSettings(SamplerSettings):
    """Settings of the candidate simulation; subclasses add `predictor` (their own choices) and may re-default."""

    n_candidates: int = Field(default=1_000_000, ge=1, description="simulated mixtures scored by the predictor")
    top_k: int = Field(default=128, ge=1, description="mean of the k best-predicted candidates")
    candidate_strength: float = Field(default=1.0, gt=0, description="Dirichlet(prior·strength) candidates")
    chunk_size: int = Field(default=250_000, ge=1000, description="candidates scored per chunk (memory)")
    screen_keep: float = Field(default=0.01, ge=0, le=1, description="share of each chunk a cheap pre-ranking "
                               "keeps for exact scoring (0: score every candidate exactly)")
    max_epochs: float | None = Field(default=15.0, gt=0, description="cap: a domain may repeat at most this "
                                     "often in the target run (RegMix's MAXIMUM_USAGE); null: no cap")
    target_tokens: float | None = Field(default=None, gt=0, description="tokens of the run the caps protect; "
                                        "default: the target's tokens, else the corpus size (RegMix)")
    prior: dict[str, float] | None = Field(default=None, description="domain token shares, when the run table "
                                           "has no token counts (offline tables)")
    n_bootstrap: int = Field(default=8, ge=0, description="refits on resampled runs for the uncertainty of "
                             "predictors without their own")
    n_estimators: int = Field(default=1000, ge=1)
    learning_rate: float = Field(default=0.01, gt=0)
    min_child_samples: int | None = Field(default=None, ge=1, description="None: min(20, runs/4)")
    min_runs: int = Field(default=4, ge=2, description="successful runs needed before fitting")


class SurrogateOptimizer(OptimizerBase):
    """Prior, caps, predictor, simulation and the top-k recommendation; subclasses write `propose`."""

    settings: Any  # a SurrogateSettings subclass with a `predictor` field

    # ------------------------------------------------------------------------------------------ helpers

    def prior(self, history: RunTable) -> tuple[np.ndarray, str | None]:
        s = self.settings
        if s.prior is not None:
            unknown = sorted(set(s.prior) - set(history.domains))
            if unknown:
                raise InputError("optimizer.prior", f"unknown domain(s) {unknown}",
                                 f"use the run table's domains: {', '.join(history.domains)}")
            p = np.array([max(float(s.prior.get(d, 0.0)), 0.0) for d in history.domains])
            if p.sum() <= 0:
                raise InputError("optimizer.prior", "all prior shares are 0", "give positive token shares")
            return p / p.sum(), None
        return history_prior(history)

    def caps(self, history: RunTable, prior: np.ndarray, target: TargetSpec | None
             ) -> tuple[np.ndarray | None, str | None]:
        s = self.settings
        if s.max_epochs is None:
            return None, None
        counts = (np.array([history.token_counts[d] for d in history.domains]) if history.token_counts
                  else None)
        if counts is None:
            if s.prior is None or s.target_tokens is not None:
                return None, "no domain token counts: repetition caps not applied"
            # Token shares alone fix the caps relative to the corpus size: RegMix's bound min(15·p, 1).
            counts = prior
        tokens = s.target_tokens or (target.tokens if target and target.tokens else None) or counts.sum()
        caps = repetition_caps(counts, tokens, s.max_epochs)
        if target is not None and target.tokens and history.token_counts and s.target_tokens is None:
            from mixopt.target import domain_caps

            # The target's own limits (4 epochs by default, per-domain overrides) bound the search itself, so
            # the recommendation needs no re-balancing afterwards when a feasible mixture exists.
            caps = np.minimum(caps, domain_caps(history.domains, history.token_counts, target))
        if caps.sum() < 1:  # no mixture fits: search unconstrained, the target step reports the overrun
            return None, (f"{tokens:.3g} target tokens exceed what the corpus holds at {s.max_epochs:g} epochs per "
                          f"domain ({s.max_epochs * counts.sum():.3g}): repetition caps not applied in the search")
        return caps, None

    def _model(self, seed: int):
        s = self.settings
        if s.predictor == "lightgbm":
            return make_predictor("lightgbm", n_estimators=s.n_estimators, learning_rate=s.learning_rate,
                                  min_child_samples=s.min_child_samples, seed=seed)
        return make_predictor(s.predictor, seed=seed)

    def _fit(self, history: RunTable) -> tuple[Any, RunTable, np.ndarray]:
        """The predictor fitted on the usable runs; an error naming the fix when there are too few."""
        s = self.settings
        ok, y = history.usable(self.objective)
        if len(ok) < s.min_runs:
            raise InputError(history.source,
                             f"{self.name} needs at least {s.min_runs} successful runs, has {len(ok)}",
                             "train more proxies (raise budget.runs) or lower optimizer.min_runs")
        return self._model(self.seed).fit(ok.weights, y), ok, y

    # ------------------------------------------------------------------------------------------ recommend

    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        s = self.settings
        model, ok, y = self._fit(history)
        prior, prior_note = self.prior(history)
        caps, caps_note = self.caps(history, prior, target)
        top_w, top_y, n_exact, n_feasible = self._simulate(model, prior, caps, self.rng(history, "candidates"))
        w = top_w.mean(axis=0)
        w = w / w.sum()
        predicted = float(model.predict(w[None, :])[0])
        uncertainty = self._uncertainty(model, ok, y, w)
        notes = list(ok.notes) + [n for n in (prior_note, caps_note) if n]
        picked = (f"the best of {n_feasible:,}" if len(top_w) == 1
                  else f"mean of the top {len(top_w)} of {n_feasible:,}")
        notes.append(f"{s.predictor} fitted on {len(ok)} runs; {picked} feasible candidates "
                     f"({n_exact:,} scored exactly)")
        details: dict = {"predictor": s.predictor, "candidates": s.n_candidates, "feasible": n_feasible,
                         "scored_exactly": n_exact,
                         "top_k_spread": mixture_dict(history.domains, top_w.std(axis=0)),
                         "top_k_predicted": [float(top_y.min()), float(top_y.max())]}
        if caps is not None:
            details["caps"] = mixture_dict(history.domains, caps)
            # A cap binds when most of the top-k press against it: the predictor wanted more of that domain.
            pressed = (top_w >= 0.75 * caps[None, :]).mean(axis=0)
            hit = [d for d, f, c in zip(history.domains, pressed, caps, strict=True) if c < 1 and f >= 0.5]
            if hit:
                notes.append(f"the repetition cap binds for: {', '.join(hit)}")
        return self._recommendation(w, history, predicted=predicted, uncertainty=uncertainty,
                                    runs_used=ok.run_ids(), notes=notes, details=details)

    def _simulate(self, model, prior: np.ndarray, caps: np.ndarray | None, rng: np.random.Generator,
                  k: int | None = None) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Stream candidates in chunks; keep the running top-k (default: `top_k`). A cheap screen pre-ranks
        where the predictor has one."""
        s = self.settings
        k = min(s.top_k if k is None else k, s.n_candidates)
        best_w, best_y = np.empty((0, len(prior))), np.empty(0)
        n_exact = n_feasible = 0
        left = s.n_candidates
        while left > 0:
            m = min(left, s.chunk_size)
            left -= m
            C = dirichlet(prior * s.candidate_strength, m, rng)
            if caps is not None:
                C = C[(C <= caps[None, :]).all(axis=1)]
            n_feasible += len(C)
            if len(C) == 0:
                continue
            if s.screen_keep > 0 and hasattr(model, "screen"):
                keep = max(int(np.ceil(s.screen_keep * len(C))), 4 * k)
                if keep < len(C):
                    C = C[np.argpartition(model.screen(C), keep - 1)[:keep]]
            pred = model.predict(C)
            n_exact += len(C)
            best_w = np.concatenate([best_w, C])
            best_y = np.concatenate([best_y, pred])
            order = np.argsort(best_y, kind="stable")[:k]
            best_w, best_y = best_w[order], best_y[order]
        if len(best_w) == 0 and caps is not None:
            # Caps so tight that random draws never land inside them: move a sample of draws onto the capped
            # simplex (water-filling, the same rule a target applies afterwards) and rank those instead.
            from mixopt.target import rebalance

            C = dirichlet(prior * s.candidate_strength, min(s.n_candidates, 4096), rng)
            C = np.stack([rebalance(c, caps) for c in C])
            pred = model.predict(C)
            n_exact += len(C)
            order = np.argsort(pred, kind="stable")[:k]
            best_w, best_y = C[order], pred[order]
        if len(best_w) == 0:
            raise InputError("optimizer", "no simulated mixture satisfies the repetition caps",
                             "raise max_epochs or n_candidates, or lower the target tokens")
        return best_w, best_y, n_exact, n_feasible

    def _uncertainty(self, model, ok: RunTable, y: np.ndarray, w: np.ndarray) -> float | None:
        if hasattr(model, "predict_with_std"):
            return float(model.predict_with_std(w[None, :])[1][0])
        if self.settings.n_bootstrap < 2:
            return None
        rng = self.rng(ok, "bootstrap")
        preds = []
        for b in range(self.settings.n_bootstrap):  # refits on resampled runs: the spread of the prediction
            idx = rng.integers(0, len(y), len(y))
            preds.append(float(self._model(self.seed + b + 1).fit(ok.weights[idx], y[idx]).predict(w[None, :])[0]))
        return float(np.std(preds, ddof=1))
