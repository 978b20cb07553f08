"""`cmr`: the critical mixture ratio (CMR scaling law, arXiv 2407.17467; docs/methods.md §6) of continual pretraining.

propose: every domain share of `ratios` at every token budget of `tokens_levels` (and the one proxy size
`params`, when given): design points the history already holds are skipped.
recommend: per share R, fit the loss changes ΔL_gen(T), ΔL_dom(T) relative to the pre-CPT checkpoint (its
losses: `base_losses`, or runs recorded with fid_tokens = 0), then the largest R whose general-loss change at
the target budget stays ≤ `epsilon` (the CMR), capped by `max_domain_ratio` and the target's repetition caps.
Details carry the per-share fits with intervals, CMR at every observed budget, and the fitted CMR scaling law
R_CMR(T) = a4·T^s4 + b3. CMR is a property of one model size (the paper does not transfer it, §6e): runs of
other sizes than `params` (default: the largest in the history) are ignored.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from mixopt.errors import InputError
from mixopt.laws.cmr import TOKEN_UNIT, fit_cmr, fit_cmr_scaling
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


class CMRSettings(TwoDomainSettings):
    ratios: list[float] = Field(default_factory=lambda: [1 / 8, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4], min_length=2,
                                description="domain shares R of the design")
    tokens_levels: list[float] = Field(default_factory=list, description="CPT token budgets T of the design")
    params: float | None = Field(default=None, gt=0, description="the proxy size (CMR is per size); default: "
                                 "the largest size in the history")
    epsilon: float = Field(default=0.05, gt=0, description="allowed rise of the general loss (absolute)")
    check: Literal["final", "trajectory"] = Field(default="final", description="constraint at the budget only, "
                                                  "or along the whole run (the sources do not say; §6c)")
    base_losses: dict[str, float] | None = Field(default=None, description="pre-CPT checkpoint losses "
                                                 "{general: …, domain: …}; default: runs with fid_tokens = 0")
    target_tokens: float | None = Field(default=None, gt=0, description="CPT budget (default: target.tokens)")
    token_unit: float = Field(default=TOKEN_UNIT, gt=0, description="tokens per unit of T in the fitted laws")
    max_domain_ratio: float = Field(default=1.0, ge=0, le=1)
    min_checkpoints: int = Field(default=4, ge=3, description="budgets needed per share for its fit")


class CMR(TwoDomainOptimizer):
    name = "cmr"
    verifies = False
    Settings = CMRSettings
    settings: CMRSettings

    def _levels(self) -> list[dict[str, float]]:
        return levels_from([self.settings.params] if self.settings.params else None, self.settings.tokens_levels)

    def _base(self, pair: TwoDomains, ok: RunTable, T: np.ndarray) -> tuple[float, float, str]:
        s = self.settings
        if s.base_losses is not None:
            missing = [k for k in ("general", "domain") if k not in s.base_losses]
            if missing or set(s.base_losses) - {"general", "domain"}:
                raise InputError("optimizer.base_losses", "give exactly the keys general and domain",
                                 "e.g. base_losses: {general: 2.91, domain: 3.40}")
            return float(s.base_losses["general"]), float(s.base_losses["domain"]), "settings"
        zero = T == 0
        if not zero.any():
            raise InputError(f"{ok.source}: fid_tokens", "no pre-CPT reference: no run with fid_tokens = 0",
                             "evaluate the starting checkpoint and record it with fid_tokens 0, or set "
                             "optimizer.base_losses")
        g, d = pair.losses(ok)
        return float(g[zero].mean()), float(d[zero].mean()), f"{int(zero.sum())} run(s) at 0 tokens"

    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        s = self.settings
        pair = self._pair(history)
        t_tokens = s.target_tokens or (target.tokens if target is not None else None)
        if t_tokens is None:
            raise InputError("target.tokens", "cmr needs the CPT token budget", "set target.tokens (or "
                             "optimizer.target_tokens)")
        ok = pair.usable(self._points(history))
        notes = fit_notes(ok)
        if len(ok) == 0:
            raise InputError(history.source, "cmr needs successful runs", "train the proposed design")
        T = fidelity_values(ok, "tokens", required=True)
        N = fidelity_values(ok, s.size_key, required=False)
        if np.isfinite(N).any():
            size = s.params or float(np.nanmax(N))
            keep = np.isclose(N, size, rtol=1e-6) | ~np.isfinite(N)
            if not keep.all():
                notes.append(f"CMR fitted at {size:.3g} parameters; {int((~keep).sum())} point(s) of other sizes "
                             "ignored (CMR does not transfer across sizes)")
            ok, T = ok.select(keep), T[keep]
        base_g, base_d, base_src = self._base(pair, ok, T)
        g, d = pair.losses(ok)
        R = ok.weights[:, pair.j]
        cpt = T > 0
        fit = fit_cmr(R[cpt], T[cpt], g[cpt] - base_g, d[cpt] - base_d, token_unit=s.token_unit, delta=s.delta,
                      bootstrap=s.bootstrap, seed=self.seed, min_points=s.min_checkpoints)
        hi = s.max_domain_ratio
        if target is not None and target.tokens and history.token_counts:
            from mixopt.target import domain_caps

            cap = float(domain_caps(history.domains, history.token_counts, target)[pair.j])
            if cap < hi:
                hi = cap
                notes.append(f"repetition cap: domain share ≤ {cap:.3g}")
        r = fit.critical_ratio(t_tokens, s.epsilon, s.check, r_max=hi)
        if r is None:
            r = 0.0
            notes.append(f"no fitted share keeps the general loss within +{s.epsilon:g}: general-only recommended")
        budgets = np.unique(T[cpt])
        curve = fit.cmr_curve(budgets, s.epsilon, s.check)
        details: dict = {"critical_ratio": r, "epsilon": s.epsilon, "check": s.check, "target_tokens": t_tokens,
                         "base_losses": {"general": base_g, "domain": base_d, "source": base_src},
                         "ratios_fitted": fit.ratios.tolist(),
                         "per_ratio": {f"{q:.4g}": {"general": gl.summary() | {"r2": {"value": gl.r2}},
                                                     "domain": dl.summary() | {"r2": {"value": dl.r2}}}
                                       for q, gl, dl in zip(fit.ratios, fit.general, fit.domain, strict=True)},
                         "cmr_by_tokens": {f"{t:.4g}": (None if np.isnan(c) else float(c))
                                           for t, c in zip(budgets, curve, strict=True)}}
        if np.isfinite(curve).sum() >= 3:
            law = fit_cmr_scaling(budgets, curve, token_unit=s.token_unit)
            details["cmr_scaling"] = {"formula": law.form.formula, **law.summary(), "r2": law.r2,
                                      "at_target": float(law.predict(np.array([[t_tokens / s.token_unit]]))[0])}
        dl_dom = fit.delta_domain(t_tokens)[:, 0]
        predicted = base_d + fit.at_ratio(dl_dom, r) if r >= fit.ratios[0] else None
        details["predicted_general_loss"] = base_g + fit.at_ratio(fit.delta_general(t_tokens)[:, 0], r)
        if t_tokens > 1.5 * budgets.max():
            notes.append(f"the target budget {t_tokens:.3g} is beyond the largest proxy budget {budgets.max():.3g}: "
                         "the per-share laws extrapolate in T")
        notes.append(f"critical mixture ratio {r:.3f} for ΔL_gen ≤ {s.epsilon:g} at {t_tokens:.3g} tokens; fitted on "
                     f"{points_note(ok)}")
        w = np.zeros(2)
        w[pair.j], w[1 - pair.j] = r, 1 - r
        rec = self._recommendation(w, history, predicted=predicted, runs_used=source_runs(ok), notes=notes,
                                   details=details)
        rec.objective = f"{pair.domain_loss} (domain loss at the CMR; general loss change ≤ {s.epsilon:g})"
        return rec

