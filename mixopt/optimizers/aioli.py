"""`aioli`: Aioli (arXiv 2411.05735) — estimate a linear dynamic mixing law while the proxy trains, and steer the
proportions by exponentiated gradient on it (docs/methods.md §4).

The law: L_i^{t+1} = L_i^t − Σ_j A_ij p_j, one interaction matrix A per round. Each round of `update_steps`
steps begins with LearnParams: for each of `lp_rounds` random permutations of the domains, train `lp_steps`
steps on the mixture biased towards one domain j (weight `one_hot_factor` on j, the rest spread evenly) and
add the drop of every validation loss to column j of Â. Those steps are ordinary training steps of the run
(same optimizer, same LR schedule), so they count against its token budget like every other step. Since each
probe is a mixture W_j rather than a one-hot, Â[i] = W·A[i] is solved for A[i]; A is shifted to be
non-negative and divided by its sum (`normalize_A`, as the official code always does), smoothed across rounds
(`ema`: Ā = (1−ema)·A + ema·Ā, the official convention) and the rest of the round trains on
p ∝ p₀ ⊙ exp(η·Σ_i Ā_ij). Without `ema` the update is cumulative: p ← p ⊙ exp(η·Σ_i A_ij).

Choices where the sources leave room, written down:
- p₀ is the proposal's mixture (uniform — the paper's stratified start — unless `initial: natural`); the
  official code restarts from all-ones, which is the same thing for the uniform start.
- The trainer only evaluates after steps, so the loss before the first probe needs a few steps first: the run
  opens with `prior_steps` steps on p₀, and with `lp_steps` steps when `prior_steps` is 0.
- A round is `update_steps` steps in all, LearnParams included (METHODS §4b). The official code subtracts the
  LearnParams *steps* from the round's *sequences* (update_steps·batch − lp_duration), which makes its rounds
  longer than `update_steps`; that unit mix-up is not reproduced.
- A round whose LearnParams would not finish before the end of training is skipped: the run ends on the current
  p. A run too short for even one round is an error, not a silent static run.
- Only domains with a positive initial weight take part. The loss that is minimised is the sum over `targets`
  (validation domains; default: those same training domains), so A is len(targets) × m.

As an optimizer: `propose` returns proxy runs with this schedule (each with its own seed for the probe order;
the driver gives each run its own training seed) and the initial mixture as `Proposal.weights`. `recommend`
reads the runs' trajectories back, drops the probes (LearnParams mixtures are measurements, not choices) and
returns the time-averaged proportions or the final ones (`static`), both reported in `details`, plus the mean
proportion path as a piecewise schedule the trainer can replay (`details["schedule"]`).

Resume: an online run has no mid-run checkpoint. A pending run (the driver was killed while it trained)
restarts from scratch with its stored schedule dict and seed; training, probe order and evaluation are
deterministic under those, so the rerun reproduces the run that was lost (tests/test_aioli.py checks it).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from mixopt.errors import InputError
from mixopt.optimizers._online import Path, online_recommendation, vector
from mixopt.optimizers.base import OptimizerBase, Proposal, Recommendation, mixture_dict
from mixopt.runs import RunTable
from mixopt.schedules.aioli import AioliParams, plan
from mixopt.spec import TargetSpec

# ---------------------------------------------------------------------------------------------------- optimizer


class AioliSettings(AioliParams):
    initial: Literal["uniform", "natural"] = Field(
        default="uniform", description="p₀: uniform (stratified, the paper's start) or token shares")
    static: Literal["average", "final", "sampled"] = Field(
        default="average", description="the static mixture recommended for a full-scale run: the time-average "
        "of Aioli's proportions (probes left out), the final proportions, or the time-average of everything "
        "the proxy sampled (probes included)")
    max_stages: int = Field(default=100, ge=1, description="most stages in the exported schedule; a path that "
                            "changes more often is time-averaged over this many equal slices of training")


def aioli_path(schedule: dict[str, Any], trajectory: list[dict[str, Any]], steps: int, domains: list[str]) -> Path:
    """Aioli's own proportions along a run: probes dropped, the previous p carried through each LearnParams."""
    params = AioliParams(**{k: v for k, v in schedule.items() if k in AioliParams.model_fields})
    m = sum(1 for v in trajectory[0]["weights"].values() if v > 0)
    points = [(int(p["step"]), vector(p["weights"], domains)) for p in trajectory]

    def at(step: int) -> np.ndarray:
        return [w for s, w in points if s <= step][-1]

    path: Path = [(0, points[0][1])]
    for seg in plan(steps, m, params):
        if seg.kind == "mix" and seg.start < steps:
            w = at(seg.start)
            if not np.array_equal(w, path[-1][1]):
                path.append((seg.start, w))
    return path


class Aioli(OptimizerBase):
    name = "aioli"
    verifies = False
    Settings = AioliSettings
    settings: AioliSettings

    def initial(self, history: RunTable) -> np.ndarray:
        if self.settings.initial == "natural":
            if history.prior is None:
                raise InputError(history.source, "initial: natural needs each domain's token count",
                                 "load the run table with token counts, or use initial: uniform")
            return history.prior
        return np.full(len(history.domains), 1.0 / len(history.domains))

    def schedule(self, seed: int) -> dict[str, Any]:
        params = self.settings.model_dump(include=set(AioliParams.model_fields))
        return {"name": "aioli", **params, "seed": int(seed)}

    def propose(self, history: RunTable, n: int) -> list[Proposal]:
        w0 = mixture_dict(history.domains, self.initial(history))
        seeds = self.rng(history, "probe-order").choice(2**31 - 1, size=n, replace=False)
        return [Proposal(dict(w0), schedule=self.schedule(int(s))) for s in seeds]

    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        return online_recommendation(self, history, "aioli", self.settings.static, path_fn=aioli_path,
                                     max_stages=self.settings.max_stages)
