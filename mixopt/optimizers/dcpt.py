"""`dcpt`: the D-CPT law (arXiv 2406.01375; docs/methods.md §5) for continual pretraining on a general/domain pair.

propose: the paper's design — every domain share of `ratios` at every fidelity level (`params_levels` ×
`tokens_levels`), design points the history already holds skipped. Each proposal carries its fidelity as
{"params": N, "tokens": D}; the runs must come back with `fid_params` (or the column `size_key` names) and
`fid_tokens`.
recommend: fit L_g(N, D, 1−r_d) and L_d(N, D, r_d) on the successful runs, then pick the domain share for the
target N, D (target.params / target.tokens, or the settings):
- usage "tradeoff" (default): the largest r_d whose general loss stays within (1 + tolerance)·the general loss
  of general-only training (§5d usage 1);
- usage "limited_data": with only `domain_tokens` of domain data (default: the domain's token count), the r_d
  minimising the domain loss when every domain token is used once, D = D_d/r_d (usage 2; no repetition model);
and report usage 3 (the compute-optimal N, D split of 6·N·D at that share) in the details. Shares are kept
within [min_domain_ratio, max_domain_ratio] and the target's repetition caps.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from mixopt.errors import InputError
from mixopt.laws.dcpt import DCPTLaws, fit_dcpt_pair
from mixopt.optimizers._law_common import (
    TwoDomainOptimizer,
    TwoDomains,
    TwoDomainSettings,
    fidelity_values,
    fit_notes,
    levels_from,
    points_note,
    source_runs,
)
from mixopt.optimizers.base import Recommendation
from mixopt.runs import RunTable
from mixopt.spec import TargetSpec

PAPER_RATIOS = [0.0, 0.1, 0.2, 1 / 3, 0.5, 2 / 3, 0.8, 0.9, 1.0]  # domain shares of the paper's design (§5e)


class DCPTSettings(TwoDomainSettings):
    ratios: list[float] = Field(default_factory=lambda: list(PAPER_RATIOS), min_length=3,
                                description="domain shares r_d of the design")
    params_levels: list[float] = Field(default_factory=list, description="proxy sizes N of the design")
    tokens_levels: list[float] = Field(default_factory=list, description="proxy token budgets D of the design")
    usage: Literal["tradeoff", "limited_data"] = "tradeoff"
    tolerance: float = Field(default=0.03, gt=0, description="usage tradeoff: allowed relative rise of L_g")
    domain_tokens: float | None = Field(default=None, gt=0, description="usage limited_data: domain tokens "
                                        "available (default: the domain's token count)")
    target_params: float | None = Field(default=None, gt=0, description="default: target.params")
    target_tokens: float | None = Field(default=None, gt=0, description="default: target.tokens")
    min_domain_ratio: float = Field(default=0.0, ge=0, le=1)
    max_domain_ratio: float = Field(default=1.0, ge=0, le=1)
    min_runs: int = Field(default=12, ge=10, description="successful runs needed (each law has 9 parameters)")


class DCPT(TwoDomainOptimizer):
    name = "dcpt"
    verifies = False
    Settings = DCPTSettings
    settings: DCPTSettings

    def _levels(self) -> list[dict[str, float]]:
        return levels_from(self.settings.params_levels, self.settings.tokens_levels)

    def _bounds(self, pair: TwoDomains, history: RunTable, target: TargetSpec | None) -> tuple[float, float, list]:
        s = self.settings
        lo, hi, notes = s.min_domain_ratio, s.max_domain_ratio, []
        if target is not None and target.tokens and history.token_counts:
            from mixopt.target import domain_caps

            caps = domain_caps(history.domains, history.token_counts, target)
            cap_d, cap_g = float(caps[pair.j]), float(caps[1 - pair.j])
            if cap_d < hi:
                hi = cap_d
                notes.append(f"repetition cap: domain share ≤ {cap_d:.3g}")
            if 1 - cap_g > lo:
                lo = 1 - cap_g
                notes.append(f"repetition cap: general share ≤ {cap_g:.3g}")
        if lo > hi:
            raise InputError("optimizer", f"no domain share satisfies the bounds [{lo:.3g}, {hi:.3g}]",
                             "relax min/max_domain_ratio or the target's max_epochs")
        return lo, hi, notes

    def fit(self, history: RunTable) -> tuple[DCPTLaws, RunTable]:
        s = self.settings
        pair = self._pair(history)
        ok = pair.usable(self._points(history))
        if "fid_tokens" in ok.df.columns:  # a pre-CPT checkpoint (D = 0) is outside the law's domain
            ok = ok.select((ok.df["fid_tokens"].astype(float) > 0).to_numpy())
        if len(ok) < s.min_runs:
            raise InputError(history.source, f"dcpt needs at least {s.min_runs} successful runs, has {len(ok)}",
                             "train the proposed design (several N, D and shares)")
        N = fidelity_values(ok, s.size_key, required=True)
        D = fidelity_values(ok, "tokens", required=True)
        g, d = pair.losses(ok)
        r_d = ok.weights[:, pair.j]
        for name, v in ((f"fid_{s.size_key}", N), ("fid_tokens", D)):
            if len(np.unique(v)) < 2:
                raise InputError(f"{history.source}: {name}", f"all runs share one {name[4:]} value",
                                 f"train proxies at 2+ values of {name[4:]} (params_levels / tokens_levels)")
        laws = fit_dcpt_pair(N, D, r_d, g, d, delta=s.delta, bootstrap=s.bootstrap, seed=self.seed)
        return laws, ok

    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        s = self.settings
        pair = self._pair(history)
        n_t = s.target_params or (target.params if target is not None else None)
        d_t = s.target_tokens or (target.tokens if target is not None else None)
        if n_t is None or d_t is None:
            raise InputError("target", "dcpt needs the target's parameters and tokens",
                             "set target.params and target.tokens (or optimizer.target_params / target_tokens)")
        laws, ok = self.fit(history)
        lo, hi, notes = self._bounds(pair, history, target)
        details: dict = {"laws": laws.params(), "target": {"params": n_t, "tokens": d_t}, "usage": s.usage}
        if s.usage == "tradeoff":
            r, ref = laws.max_domain_ratio(n_t, d_t, s.tolerance, lo, hi)
            details["general_loss_reference"] = ref
            notes.append(f"usage 1: largest domain share with general loss ≤ (1+{s.tolerance:g})·{ref:.4f}")
            d_eval = d_t
        else:
            dd = s.domain_tokens or (history.token_counts or {}).get(pair.domain)
            if dd is None:
                raise InputError("optimizer.domain_tokens", "usage limited_data needs the domain tokens available",
                                 "set optimizer.domain_tokens (or give the run table token counts)")
            r, _ = laws.best_ratio_limited_data(n_t, dd, max(lo, 1e-3), hi)
            d_eval = dd / r
            details["domain_tokens"] = dd
            details["implied_tokens"] = d_eval
            notes.append(f"usage 2: {dd:.3g} domain tokens used once at share {r:.3f} → {d_eval:.3g} tokens "
                         "(the law does not model repetition)")
        pred_d = float(laws.loss_domain(n_t, d_eval, r)[0])
        pred_g = float(laws.loss_general(n_t, d_eval, r)[0])
        x = np.array([[n_t, d_eval, r]])
        boot = [float(laws.domain.form.predict(p, x)[0]) for p in laws.domain.samples]
        details.update({"domain_ratio": r, "predicted_general_loss": pred_g, "predicted_domain_loss": pred_d,
                        "compute_allocation": {"domain": laws.allocate_compute(6 * n_t * d_t, r, "domain"),
                                               "general": laws.allocate_compute(6 * n_t * d_t, r, "general")}})
        if boot:
            details["predicted_domain_loss_interval"] = [float(np.quantile(boot, 0.025)),
                                                         float(np.quantile(boot, 0.975))]
        notes.append(f"D-CPT laws fitted on {points_note(ok)}: R² general {laws.general.r2:.4f}, "
                     f"domain {laws.domain.r2:.4f}")
        if n_t > 2 * fidelity_values(ok, s.size_key, required=True).max():
            notes.append("the target is over twice the largest proxy: the law extrapolates in N")
        w = np.zeros(2)
        w[pair.j], w[1 - pair.j] = r, 1 - r
        rec = self._recommendation(w, history, predicted=pred_d,
                                   uncertainty=float(np.std(boot, ddof=1)) if len(boot) > 1 else None,
                                   runs_used=source_runs(ok), notes=fit_notes(ok) + notes, details=details)
        rec.objective = f"{pair.domain_loss} (domain loss at the target; general loss reported in details)"
        return rec

