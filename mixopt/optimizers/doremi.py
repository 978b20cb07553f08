"""`doremi`: DoReMi (Xie et al., 2023; METHODS.md §8a) — Group DRO proportions against a reference run, on the
same schedule callback as Aioli, so the online family shares one mechanism.

The search has two phases, both read from the run table:
1. `reference_runs` static runs on the reference mixture (token shares by default, as in DoReMi);
2. runs with the `doremi` schedule, whose reference losses are the mean validation losses of the successful
   reference runs. Every `every` steps (1: each step, as in DoReMi) the schedule sets the excess loss
   λ_j = max(L_j − L_ref,j, 0) of each domain seen since the last update (a domain absent from those batches
   keeps its previous λ), then α ← softmax(log α + η·λ) and α ← (1−c)·α + c/k.

Deviations from the official trainer, because mixopt's proxy trainer changes what it samples, not how it
weighs the loss: α drives the sampler (resampling instead of DoReMi's reweighted loss, the same objective in
expectation), and the excess is per domain, not per token, because the reference is a run's per-domain
validation loss rather than a reference model scoring the same tokens. `signal: val` uses the current
validation losses instead of the training batches (one evaluation per update: costly with `every: 1`).

The output is DoReMi's ᾱ, the time-average of α (`static: average`), or the final α; the recommendation
also carries the α path as a piecewise schedule (see `mixopt.optimizers.online`).

Why an optimizer of its own rather than a mode of `aioli`: it needs a reference run before it can propose
anything, Aioli needs none; keeping them apart keeps each propose() a short function of the history.

Resume: like Aioli, a pending DoReMi run restarts from scratch with its stored schedule (which holds the
reference losses) and seed, and reproduces the lost run.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mixopt.errors import InputError
from mixopt.optimizers.base import OptimizerBase, Proposal, Recommendation, mixture_dict, validate_settings
from mixopt.optimizers.online import online_recommendation, schedule_name
from mixopt.proxies.schedules import Feedback
from mixopt.runs import RunTable
from mixopt.spec import TargetSpec


class DoReMiParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    eta: float = Field(default=1.0, gt=0, description="step size of the multiplicative update (DoReMi's scripts)")
    smoothing: float = Field(default=1e-3, ge=0, lt=1, description="c: α ← (1−c)·α + c/k (DoReMi's scripts)")
    every: int = Field(default=1, ge=1, description="steps between updates (DoReMi: every step)")
    signal: Literal["train", "val"] = Field(default="train", description="losses compared with the reference: "
                                            "the training batches since the last update, or validation")


class DoReMiScheduleSettings(DoReMiParams):
    reference: dict[str, float] = Field(description="reference loss per training domain")


class DoReMiSchedule:
    """Group DRO proportions (`{"name": "doremi", "reference": {...}, ...}`); `alphas` records every α."""

    def __init__(self, weights: dict[str, float], **settings: Any) -> None:
        self.settings: DoReMiScheduleSettings = validate_settings("doremi schedule", DoReMiScheduleSettings,
                                                                  settings)
        self.initial = dict(weights)
        self.every = self.settings.every

    def start(self, domains: list[str], total_steps: int) -> dict[str, float]:
        self.domains = [d for d in domains if self.initial.get(d, 0.0) > 0]
        missing = [d for d in self.domains if d not in self.settings.reference]
        if missing:
            raise ValueError(f"doremi: no reference loss for domain(s) {missing}")
        bad = [d for d in self.domains if not math.isfinite(self.settings.reference[d])]
        if bad:
            raise ValueError(f"doremi: the reference loss of {bad} is not a finite number")
        self.ref = np.array([self.settings.reference[d] for d in self.domains])
        a = np.array([self.initial[d] for d in self.domains], dtype=float)
        self.alpha = a / a.sum()
        self.excess = np.zeros(len(self.domains))
        self.alphas = [self.alpha.copy()]
        return self._mixture()

    def update(self, feedback: Feedback) -> dict[str, float] | None:
        losses = feedback.train_losses if self.settings.signal == "train" else feedback.evaluate()
        for j, d in enumerate(self.domains):
            if d in losses and math.isfinite(losses[d]):
                self.excess[j] = max(losses[d] - self.ref[j], 0.0)
        logits = np.log(self.alpha) + self.settings.eta * self.excess
        a = np.exp(logits - logits.max())
        c = self.settings.smoothing
        self.alpha = (1 - c) * a / a.sum() + c / len(a)
        self.alphas.append(self.alpha.copy())
        return self._mixture()

    def _mixture(self) -> dict[str, float]:
        return {d: float(x) for d, x in zip(self.domains, self.alpha, strict=True)}


class DoReMiSettings(DoReMiParams):
    reference_mixture: Literal["natural", "uniform"] = Field(
        default="natural", description="static mixture of the reference runs (DoReMi: token shares)")
    reference_runs: int = Field(default=1, ge=1, description="reference runs to train before DoReMi runs")
    initial: Literal["uniform", "natural"] = Field(default="uniform", description="α₀ (DoReMi: uniform)")
    static: Literal["average", "final", "sampled"] = Field(
        default="average", description="recommended static mixture: ᾱ (DoReMi's output) or the final α; "
        "'sampled' is the same as 'average' here (DoReMi has no probes)")
    max_stages: int = Field(default=100, ge=1, description="most stages in the exported schedule; a path that "
                            "changes more often is time-averaged over this many equal slices of training")


class DoReMi(OptimizerBase):
    name = "doremi"
    verifies = False
    Settings = DoReMiSettings
    settings: DoReMiSettings

    def _mixture(self, history: RunTable, which: str) -> np.ndarray:
        if which == "natural":
            if history.prior is None:
                raise InputError(history.source, "the natural mixture needs each domain's token count",
                                 "load the run table with token counts, or choose the uniform mixture")
            return history.prior
        return np.full(len(history.domains), 1.0 / len(history.domains))

    def reference_rows(self, history: RunTable) -> np.ndarray:
        """Rows that trained the reference mixture statically (proposed here or included by the user)."""
        if len(history) == 0:
            return np.zeros(0, dtype=bool)
        ref = self._mixture(history, self.settings.reference_mixture)
        same = np.abs(history.weights - ref[None, :]).max(axis=1) < 1e-6
        static = (history.df["schedule"].map(lambda s: schedule_name(s) in (None, "static")).to_numpy()
                  if "schedule" in history.df.columns else np.ones(len(history), dtype=bool))
        return same & static

    def reference_losses(self, history: RunTable) -> dict[str, float]:
        rows = self.reference_rows(history) & (history.df["status"] == "ok").to_numpy()
        missing = [d for d in history.domains if f"loss_{d}" not in history.df.columns]
        if missing:
            raise InputError(history.source, f"reference runs lack validation losses for {missing}",
                             "record loss_<domain> for every training domain")
        losses = history.df.loc[rows, [f"loss_{d}" for d in history.domains]].astype(float).mean(axis=0)
        return {d: float(v) for d, v in zip(history.domains, losses, strict=True)}

    def propose(self, history: RunTable, n: int) -> list[Proposal]:
        s = self.settings
        rows = self.reference_rows(history)
        status = history.df["status"].to_numpy() if len(history) else np.zeros(0, dtype=object)
        n_ok, n_pending = int((rows & (status == "ok")).sum()), int((rows & (status == "pending")).sum())
        if n_ok + n_pending < s.reference_runs:
            ref = mixture_dict(history.domains, self._mixture(history, s.reference_mixture))
            return [Proposal(dict(ref)) for _ in range(min(n, s.reference_runs - n_ok - n_pending))]
        if n_ok == 0:
            raise InputError(history.source, "doremi's reference runs have not finished",
                             "let them finish (mixopt resume) before proposing DoReMi runs")
        params = s.model_dump(include=set(DoReMiParams.model_fields))
        sched = {"name": "doremi", **params, "reference": self.reference_losses(history)}
        w0 = mixture_dict(history.domains, self._mixture(history, s.initial))
        return [Proposal(dict(w0), schedule=dict(sched)) for _ in range(n)]

    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        n_ref = int((self.reference_rows(history) & (history.df["status"] == "ok").to_numpy()).sum()) \
            if len(history) else 0
        return online_recommendation(self, history, "doremi", self.settings.static,
                                     notes=[f"reference: {n_ref} static run(s) on the "
                                            f"{self.settings.reference_mixture} mixture"],
                                     max_stages=self.settings.max_stages)
