"""`doremi`: DoReMi (Xie et al., 2023; docs/methods.md §8a) — Group DRO proportions against a reference run, on the
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
also carries the α path as a piecewise schedule (see `mixopt.optimizers._online`).

Why an optimizer of its own rather than a mode of `aioli`: it needs a reference run before it can propose
anything, Aioli needs none; keeping them apart keeps each propose() a short function of the history.

Resume: like Aioli, a pending DoReMi run restarts from scratch with its stored schedule (which holds the
reference losses) and seed, and reproduces the lost run.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from mixopt.errors import InputError
from mixopt.optimizers._online import online_recommendation, schedule_name
from mixopt.optimizers.base import OptimizerBase, Proposal, Recommendation, mixture_dict
from mixopt.runs import RunTable
from mixopt.schedules.doremi import DoReMiParams
from mixopt.spec import TargetSpec


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
