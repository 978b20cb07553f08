"""`uniform`: equal weight on every domain — the simplest human baseline."""

from __future__ import annotations

import numpy as np

from mixopt.optimizers.base import OptimizerBase, Proposal, Recommendation, mixture_dict
from mixopt.runs import RunTable
from mixopt.spec import TargetSpec


def fixed_mixture_recommendation(opt: OptimizerBase, history: RunTable, w: np.ndarray) -> Recommendation:
    """Recommend a fixed mixture; its predicted objective is the mean over runs that trained exactly it."""
    ok, y = history.usable(opt.objective)
    same = np.abs(ok.weights - w[None, :]).max(axis=1) < 1e-6 if len(ok) else np.zeros(0, bool)
    notes = list(ok.notes)
    predicted = uncertainty = None
    if same.any():
        predicted = float(y[same].mean())
        uncertainty = float(y[same].std(ddof=1)) if same.sum() > 1 else None
        notes.append(f"objective measured on {int(same.sum())} run(s) of this mixture")
    else:
        notes.append("no run trained this exact mixture: no measured objective")
    ids = [r for r, s in zip(ok.run_ids(), same, strict=True) if s]
    return opt._recommendation(w, history, predicted=predicted, uncertainty=uncertainty, runs_used=ids,
                               notes=notes)


class Uniform(OptimizerBase):
    name = "uniform"
    verifies = False

    def _w(self, history: RunTable) -> np.ndarray:
        return np.full(len(history.domains), 1.0 / len(history.domains))

    def propose(self, history: RunTable, n: int) -> list[Proposal]:
        return [Proposal(mixture_dict(history.domains, self._w(history))) for _ in range(n)]

    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        return fixed_mixture_recommendation(self, history, self._w(history))
