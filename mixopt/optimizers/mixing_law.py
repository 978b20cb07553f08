"""`mixing_law`: the data mixing law (Ye et al., arXiv 2403.16952; docs/methods.md §7), fitted and optimised.

recommend: one law L_i(r) = c_i + k_i·exp(t_i·r) per loss column of the objective, aggregated with the
objective's weights (explicit aggregation with validation shares: give them as `objective.weights`) or their
mean; minimised over the simplex under per-domain caps (a convex problem, solved exactly). When the proxies
come at several sizes (`fid_params`) and/or budgets (`fid_tokens`), the losses are first carried to the target
size and budget by the nested pipeline step law → size law (mixopt.laws.pipeline), then the law is fitted on
those predictions. Bootstrap refits over mixtures give the uncertainty of the prediction and intervals for
every fitted parameter.

propose: mixtures from RegMix's Dirichlet generator around the token prior, each at every fidelity level of
`fidelities` (the nested pipeline needs the same mixture at every size); a mixture the history holds at only
some levels is completed first.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from mixopt.errors import InputError
from mixopt.laws.mixing import fit_mixing_law, optimise_mixture
from mixopt.laws.pipeline import MATCH_TOL, nested_predict
from mixopt.optimizers._law_common import domain_bounds, fidelity_values, fit_notes, propose_at_levels
from mixopt.optimizers.base import OptimizerBase, Proposal, Recommendation, mixture_dict
from mixopt.optimizers.random_search import history_prior
from mixopt.runs import RunTable
from mixopt.simplex import SamplerSettings, distance_to_prior, sample_mixtures
from mixopt.spec import TargetSpec


class MixingLawSettings(SamplerSettings):
    fidelities: list[dict[str, float]] = Field(default_factory=list, description="levels each proposed mixture "
                                               "is trained at, e.g. [{params: 2e7, tokens: 2e10}, ...]; empty: one")
    size_key: str = Field(default="params", description="the fid_ column holding model size N: params (what the "
                          "driver records), or e.g. a non-embedding count, which the size law prefers")
    target_params: float | None = Field(default=None, gt=0, description="N to predict for, in size_key's units "
                                        "(default: the target's params); needs proxies at 2+ sizes")
    target_tokens: float | None = Field(default=None, gt=0, description="training tokens to predict for "
                                        "(default: the target's tokens when the runs record fid_tokens)")
    size_delta: float | None = Field(default=0.02, gt=0, description="Huber δ of the size law (null: squares)")
    caps: dict[str, float] | None = Field(default=None, description="largest weight per domain (on top of the "
                                          "target's repetition caps)")
    bootstrap: int = Field(default=16, ge=0, description="refits on resampled mixtures for intervals")
    prior: dict[str, float] | None = Field(default=None, description="domain token shares for proposals and the "
                                           "regulariser, when the run table has no token counts")
    kl_lambda: float = Field(default=0.05, ge=0, description="the optimum minimises the law's prediction + "
                             "kl_lambda·KL(r ‖ prior) (convex); 0: the law's own optimum")
    kl_grid: list[float] = Field(default=[0.0, 0.01, 0.05, 0.2], description="other kl_lambda values whose "
                                 "optima are listed as candidates for the verification ladder")


class MixingLawOptimizer(OptimizerBase):
    name = "mixing_law"
    Settings = MixingLawSettings
    settings: MixingLawSettings

    # ------------------------------------------------------------------------------------------ propose

    def propose(self, history: RunTable, n: int) -> list[Proposal]:
        s = self.settings

        def sample(k: int) -> np.ndarray:
            return sample_mixtures(self._prior(history), k, self.rng(history), s, caps=self._caps(history, None))

        return propose_at_levels(history, n, s.fidelities, sample)

    def _prior(self, history: RunTable) -> np.ndarray:
        if self.settings.prior is not None:
            p = np.array([max(float(self.settings.prior.get(d, 0.0)), 0.0) for d in history.domains])
            if p.sum() <= 0:
                raise InputError("optimizer.prior", "all prior shares are 0", "give positive token shares")
            return p / p.sum()
        return history_prior(history)[0]

    def _caps(self, history: RunTable, target: TargetSpec | None) -> np.ndarray | None:
        caps = domain_bounds(history, self.settings.caps, "optimizer.caps", 1.0)
        if target is not None and target.tokens and history.token_counts:
            from mixopt.target import domain_caps

            tc = domain_caps(history.domains, history.token_counts, target)
            caps = tc if caps is None else np.minimum(caps, tc)
        if caps is not None and caps.sum() < 1:
            raise InputError("optimizer.caps", f"the per-domain caps sum to {caps.sum():.3g} < 1",
                             "raise the caps (or the target's max_epochs)")
        return caps

    # ------------------------------------------------------------------------------------------ recommend

    def _columns(self, history: RunTable) -> tuple[list[str], np.ndarray | None]:
        spec = self.objective
        cols = spec.metrics if spec.metrics is not None else history.loss_columns
        shares = None if spec.weights is None else np.asarray(spec.weights, dtype=float)
        return list(cols), shares

    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        s = self.settings
        ok, _ = history.usable(self.objective)
        cols, shares = self._columns(history)
        K = len(history.domains)
        if len(ok) < K + 2:
            raise InputError(history.source, f"mixing_law needs at least {K + 2} successful runs for {K} domains, "
                             f"has {len(ok)}", "train more proxies (raise budget.runs)")
        L = ok.df[cols].to_numpy(dtype=float)
        params = fidelity_values(ok, s.size_key, required=False, default=1.0)
        tokens = fidelity_values(ok, "tokens", required=False, default=1.0)
        multi = len(np.unique(params)) > 1
        t_params = s.target_params or (target.params if target is not None else None)
        has_tokens = "fid_tokens" in ok.df.columns
        t_tokens = s.target_tokens or (target.tokens if target is not None and has_tokens else None)
        if multi and t_params is None:
            raise InputError("optimizer.target_params", f"the runs come at {len(np.unique(params))} sizes but no "
                             "target size is given", "set target.params (or optimizer.target_params)")
        nested = nested_predict(ok.weights, params, tokens, L, t_params if multi else None,
                                t_tokens if has_tokens else None, size_delta=s.size_delta)
        if len(nested.mixtures) < K + 2:
            raise InputError(history.source, f"only {len(nested.mixtures)} distinct mixtures reach the target; "
                             f"the law over {K} domains needs {K + 2}", "train more mixtures")
        law = fit_mixing_law(nested.mixtures, nested.losses, names=cols, shares=shares, bootstrap=s.bootstrap,
                             seed=self.seed)
        caps = self._caps(history, target)
        start = nested.mixtures[int(np.argmin(law.aggregate(nested.mixtures)))]
        prior = self._prior(history)
        optima = {x: optimise_mixture(law, caps=caps, start=start, kl_lambda=x, prior=prior)
                  for x in sorted({s.kl_lambda, *s.kl_grid})}
        w = optima[s.kl_lambda]
        predicted = float(law.aggregate(w[None, :])[0])
        spread = [float(b.aggregate(w[None, :])[0]) for b in law.samples]
        uncertainty = float(np.std(spread, ddof=1)) if len(spread) > 1 else None
        fit_mae = float(np.abs(law.predict(nested.mixtures) - nested.losses).mean())
        notes = fit_notes(ok) + nested.notes
        notes.append(f"mixing law fitted on {len(nested.mixtures)} mixtures × {len(cols)} loss column(s); "
                     f"in-sample MAE {fit_mae:.4f}")
        dist = distance_to_prior(w, prior)
        notes.append(f"regularised optimum: kl_lambda {s.kl_lambda:g}; KL(w ‖ prior) {dist['kl']:.3f}, "
                     f"L1 {dist['l1']:.3f}")
        details: dict = {"law": law.summary(history.domains), "aggregation": "weights" if shares is not None
                         else "mean", "fit_mae": fit_mae, "mixtures_fitted": len(nested.mixtures),
                         "kl_lambda": s.kl_lambda, "prior": mixture_dict(history.domains, prior),
                         "distance_to_prior": dist,
                         "candidates": [{"label": f"mixing_law (kl_lambda {x:g})", "kl_lambda": x,
                                         "weights": mixture_dict(history.domains, ox),
                                         "predicted": float(law.aggregate(ox[None, :])[0]),
                                         **distance_to_prior(ox, prior)} for x, ox in optima.items()]}
        if nested.size_laws:
            details["size_law"] = {"target_params": t_params, "sizes": nested.sizes.tolist(),
                                   "alpha": {c: law_.alpha for c, law_ in zip(cols, nested.size_laws, strict=True)}}
            notes.append(f"losses carried to {t_params:.3g} parameters by a size law fitted on "
                         f"{len(nested.sizes)} proxy sizes")
        if has_tokens and t_tokens is not None:
            details["target_tokens"] = t_tokens
        if spread:
            lo, hi = np.quantile(spread, [0.025, 0.975])
            details["predicted_interval"] = [float(lo), float(hi)]
        if caps is not None:
            details["caps"] = mixture_dict(history.domains, caps)
            hit = [d for d, x, c in zip(history.domains, w, caps, strict=True) if c < 1 and x >= c - 1e-6]
            if hit:
                notes.append(f"cap binds for: {', '.join(hit)}")
        near = np.abs(ok.weights - w[None, :]).max(axis=1) <= MATCH_TOL
        if near.any():
            notes.append(f"the recommended mixture was itself run ({int(near.sum())} run(s))")
        return self._recommendation(w, history, predicted=predicted, uncertainty=uncertainty,
                                    runs_used=ok.run_ids(), notes=notes, details=details)
