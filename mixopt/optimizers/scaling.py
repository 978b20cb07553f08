"""`scaling`: a scale-aware optimizer — proxies at 2–3 (N, D) points, a law of loss in (N, D, w), solved at the
target's N and D (docs/methods.md §10c).

A single proxy scale cannot show the optimal mixture move with model size and tokens. This optimizer trains
every proposed mixture at every level of `fidelities`, fits per loss column one of three law forms, and solves
for the mixture at the target:

- `nested`: the data mixing law's pipeline — a size law per mixture carries each mixture's losses to the
  target size, then L_i(r) = c_i + k_i·exp(t_i·r) is fitted on those predictions (mixopt.laws.pipeline);
- `additive`: E + A/N^α + B/D^β + k·exp(t·w): scale and mixture separate, so the optimum does not move;
- `joint`: the additive form with the mixture term scaled by (N·D/C0)^−γ per loss column, which lets the
  optimum of the aggregate move with scale (mixopt.laws.scalemix says why).

The form is chosen by held-out error across scales: with three or more scales the forms are fitted on the
smaller ones and predict the largest scale's runs; with two, they are fitted on the smaller scale plus half the
mixtures of the larger and predict the other half (nothing else is held out of a two-point scale axis). The
chosen form is refitted on every run. Its optimum minimises the predicted objective + kl_lambda·KL(w ‖ prior)
under repetition caps and per-domain bounds (convex at a fixed scale: every form reduces there to a data mixing
law), from several starts.

propose: RegMix's Dirichlet sampler around the prior, each mixture at every level, completing mixtures the
history holds at only some levels first (as `mixing_law`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field
from scipy.stats import spearmanr
from threadpoolctl import threadpool_limits

from mixopt.errors import InputError
from mixopt.laws.mixing import MixingLaw, fit_mixing_law, optimise_mixture
from mixopt.laws.pipeline import mixture_keys, nested_predict
from mixopt.laws.scalemix import FORMS, ScaleMixLaw, fit_scalemix, scale_levels
from mixopt.optimizers._law_common import domain_bounds, fidelity_values, fit_notes, propose_at_levels
from mixopt.optimizers._surrogate import CapSettings, resolve_caps, resolve_prior
from mixopt.optimizers.base import OptimizerBase, Proposal, Recommendation, mixture_dict
from mixopt.runs import RunTable
from mixopt.simplex import distance_to_prior, kl_to_prior, sample_mixtures
from mixopt.spec import TargetSpec

ALL_FORMS = ("nested", *FORMS)


class ScalingSettings(CapSettings):
    fidelities: list[dict[str, float]] = Field(default_factory=list, description="levels each proposed mixture "
                                               "is trained at, e.g. [{level: 0}, {level: 1}] or [{params: 2e7, "
                                               "tokens: 4e8}, ...]; the law needs 2-3 distinct (N, D)")
    form: Literal["auto", "nested", "additive", "joint"] = Field(default="auto", description="law form; auto: "
                                                                 "the lowest held-out error across scales")
    kl_lambda: float = Field(default=0.05, ge=0, description="weight of KL(w ‖ prior) added to the predicted "
                             "objective (olmix's default; 0: the law's own optimum)")
    size_key: str = Field(default="params", description="the fid_ column holding model size N (params, or e.g. "
                          "nonembedding_params); target_params is read in its units")
    target_params: float | None = Field(default=None, gt=0, description="N to solve at (default: target.params)")
    target_tokens: float | None = Field(default=None, gt=0, description="D to solve at and to cap repetition "
                                        "for (default: target.tokens)")
    caps: dict[str, float] | None = Field(default=None, description="largest weight per domain")
    floors: dict[str, float] | None = Field(default=None, description="smallest weight per domain")
    alpha: float = Field(default=0.34, gt=0, description="exponent of N when the scales cannot fit it "
                         "(Chinchilla's value)")
    beta: float = Field(default=0.28, gt=0, description="exponent of D when the scales cannot fit it")
    size_delta: float | None = Field(default=0.02, gt=0, description="Huber δ of the nested form's size law")


class Scaling(OptimizerBase):
    name = "scaling"
    Settings = ScalingSettings
    settings: ScalingSettings

    # ------------------------------------------------------------------------------------------ propose

    def propose(self, history: RunTable, n: int) -> list[Proposal]:
        s = self.settings

        def sample(k: int) -> np.ndarray:
            prior, _ = resolve_prior(s, history)
            caps = domain_bounds(history, s.caps, "optimizer.caps", 1.0)
            return sample_mixtures(prior, k, self.rng(history), s, caps=caps)

        return propose_at_levels(history, n, s.fidelities, sample)

    # ------------------------------------------------------------------------------------------ recommend

    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        # One BLAS thread: many tiny fits, which threaded BLAS only slows down on a busy machine.
        with threadpool_limits(1):
            return self._recommend(history, target)

    def _recommend(self, history: RunTable, target: TargetSpec | None) -> Recommendation:
        s = self.settings
        ok, y = history.usable(self.objective)
        spec = self.objective
        cols = list(spec.metrics if spec.metrics is not None else ok.loss_columns)
        shares = None if spec.weights is None else np.asarray(spec.weights, dtype=float)
        has_tokens = "fid_tokens" in ok.df.columns
        N = fidelity_values(ok, s.size_key, required=False, default=1.0)
        D = fidelity_values(ok, "tokens", required=False, default=1.0)
        keep = np.isfinite(N) & np.isfinite(D) & (N > 0) & (D > 0)
        notes = fit_notes(ok)
        if not keep.all():
            notes.append(f"{int((~keep).sum())} run(s) without a recorded size or token count left out")
            ok, y, N, D = ok.select(keep), y[keep], N[keep], D[keep]
        Nl, Dl, idx = scale_levels(N, D) if len(ok) else (np.zeros(0), np.zeros(0), np.zeros(0, dtype=int))
        if len(Nl) < 2:
            at = f" (N={Nl[0]:.3g}, D={Dl[0]:.3g})" if len(Nl) else ""
            raise InputError("optimizer.fidelities", f"the {len(ok)} usable run(s) come at {len(Nl)} scale(s)"
                             f"{at}; the scaling law needs proxies at two or more (N, D) points",
                             "give the search 2-3 proxies of different size and tokens (`fidelities:`) and list "
                             "them in optimizer.fidelities, e.g. [{level: 0}, {level: 1}, {level: 2}]")
        t_params = s.target_params or (target.params if target is not None else None)
        t_tokens = s.target_tokens or (target.tokens if target is not None else None)
        if t_params is None or (has_tokens and t_tokens is None):
            missing = "params" if t_params is None else "tokens"
            raise InputError(f"target.{missing}", f"no target {missing}: the law is solved at the target's "
                             "size N and tokens D", "give the search a `target:` block with params and tokens "
                             "(or set optimizer.target_params and optimizer.target_tokens)")
        if not has_tokens:
            t_tokens = 1.0
            notes.append("the runs record no fid_tokens: the law is fitted and solved in model size only")
        L = ok.df[cols].to_numpy(dtype=float)
        W = ok.weights
        order = np.argsort(Nl * Dl, kind="stable")
        scales = [{"params": float(Nl[i]), "tokens": float(Dl[i]), "runs": int((idx == i).sum())} for i in order]
        if "fid_level" in ok.df.columns:  # the search's level index of each scale, where recorded
            lv = ok.df["fid_level"].to_numpy()
            for sc, i in zip(scales, order, strict=True):
                first = lv[np.flatnonzero(idx == i)[0]]
                sc["level"] = int(first) if np.isfinite(float(first)) else None

        # ---- held-out comparison across scales
        train, test, how = self._holdout(history, W, idx, order)
        errors: dict[str, dict] = {}
        for form in ALL_FORMS:
            try:
                big = order[-1]
                pred = self._fit(form, W[train], N[train], D[train], L[train], shares, cols, float(Nl[big]),
                                 float(Dl[big]))[0].aggregate(W[test])
                rho = spearmanr(pred, y[test])[0] if test.sum() >= 3 else float("nan")
                errors[form] = {"mae": float(np.abs(pred - y[test]).mean()), "spearman":
                                None if not np.isfinite(rho) else float(rho), "n_test": int(test.sum())}
            except (ValueError, InputError) as e:
                errors[form] = {"error": str(e)}
        fitted = [f for f in ALL_FORMS if "mae" in errors[f]]
        if s.form != "auto":
            chosen = s.form
        elif fitted:
            chosen = min(fitted, key=lambda f: errors[f]["mae"])
        else:
            raise InputError(history.source, "no law form could be fitted on the smaller scales: "
                             + "; ".join(f"{f}: {errors[f]['error']}" for f in ALL_FORMS),
                             "train more mixtures at every fidelity level (raise budget.runs)")
        try:
            law, full = self._fit(chosen, W, N, D, L, shares, cols, float(t_params), float(t_tokens), notes)
        except ValueError as e:
            raise InputError(f"optimizer.form ({chosen})", str(e), "train more mixtures at every level, or "
                             "choose another form") from None

        # ---- regularised optimum at the target
        prior, prior_note = resolve_prior(s, history)
        caps, caps_note = resolve_caps(s, history, prior, target)
        user_caps = domain_bounds(history, s.caps, "optimizer.caps", 1.0)
        if user_caps is not None:
            caps = user_caps if caps is None else np.minimum(caps, user_caps)
        floors = domain_bounds(history, s.floors, "optimizer.floors", 0.0)
        big_rows = np.flatnonzero(idx == order[-1])
        starts = [prior, np.full(len(prior), 1 / len(prior)), W[big_rows[np.argmin(y[big_rows])]]]
        w = self._solve(law, caps, floors, starts, s.kl_lambda, prior)
        w0 = w if s.kl_lambda == 0 else self._solve(law, caps, floors, starts, 0.0, prior)
        predicted = float(law.aggregate(w[None, :])[0])
        pred0 = float(law.aggregate(w0[None, :])[0])
        dist, dist0 = distance_to_prior(w, prior), distance_to_prior(w0, prior)

        # ---- evidence
        notes += [n for n in (prior_note, caps_note) if n]
        scale_txt = "; ".join(f"N={c['params']:.3g}, D={c['tokens']:.3g} ({c['runs']} runs)" for c in scales)
        notes.append(f"The proxies come at {len(scales)} scales: {scale_txt}.")
        err_txt = "; ".join(f"{f} MAE {e['mae']:.4f}" + (f" (Spearman {e['spearman']:.3f})" if e["spearman"]
                                                          is not None else "")
                            if "mae" in e else f"{f} could not be fitted" for f, e in errors.items())
        notes.append(f"The law forms were compared by {how}: {err_txt}.")
        notes.append(f"The {chosen} form " + ("was set by optimizer.form" if s.form != "auto" else
                                              "has the lowest held-out error")
                     + f"; it was refitted on all {len(ok)} runs and solved at the target N={t_params:.3g}, "
                     f"D={t_tokens:.3g}, where it predicts {predicted:.4f}.")
        if s.kl_lambda > 0:
            notes.append(f"A KL penalty of {s.kl_lambda:g} toward the prior keeps the mixture at KL {dist['kl']:.3f} "
                         f"(L1 {dist['l1']:.3f}) from it, against KL {dist0['kl']:.3f} for the unregularised "
                         f"optimum, at a predicted cost of {predicted - pred0:+.4f}.")
        else:
            notes.append(f"No KL penalty (kl_lambda 0): the law's own optimum, KL {dist['kl']:.3f} from the prior.")
        if caps is not None:
            hit = [d for d, x, c in zip(history.domains, w, caps, strict=True) if c < 1 and x >= c - 1e-6]
            if hit:
                notes.append(f"cap binds for: {', '.join(hit)}")
        details: dict = {
            "form": chosen, "forms": errors, "selection": how, "kl_lambda": s.kl_lambda,
            "distance_to_prior": dist, "unregularised": {"weights": mixture_dict(history.domains, w0),
                                                         "predicted": pred0, "distance_to_prior": dist0},
            "prior": mixture_dict(history.domains, prior), "scales": scales,
            "target": {"params": float(t_params), "tokens": float(t_tokens)},
            "aggregation": "weights" if shares is not None else "mean",
            "law": {"at_target": law.summary(history.domains)}}
        if full is not None:
            details["law"]["scale_law"] = full.summary(history.domains)
        if caps is not None:
            details["caps"] = mixture_dict(history.domains, caps)
        return self._recommendation(w, history, predicted=predicted, runs_used=ok.run_ids(), notes=notes,
                                    details=details)

    # ------------------------------------------------------------------------------------------ helpers

    def _holdout(self, history: RunTable, W: np.ndarray, idx: np.ndarray, order: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, str]:
        """Train/test masks: the largest scale held out (3+ scales), or half its mixtures (2 scales)."""
        big = idx == order[-1]
        if len(order) >= 3:
            return ~big, big, "fitting on the smaller scales and predicting the largest scale's runs"
        keys, mix = mixture_keys(W[big])
        perm = self.rng(history, "holdout").permutation(len(keys))
        held = set(perm[: len(keys) // 2].tolist())
        test = np.zeros(len(W), dtype=bool)
        test[np.flatnonzero(big)[[m in held for m in mix]]] = True
        return ~test, test, ("fitting on the smaller scale and half the larger scale's mixtures, and predicting "
                             "the other half at the larger scale")

    def _fit(self, form: str, W: np.ndarray, N: np.ndarray, D: np.ndarray, L: np.ndarray, shares: np.ndarray | None,
             cols: list[str], t_params: float, t_tokens: float, notes: list[str] | None = None
             ) -> tuple[MixingLaw, ScaleMixLaw | None]:
        """A form fitted on these runs: the data mixing law it implies at (t_params, t_tokens), and the law in
        (N, D, w) itself (None for the nested form, whose scale laws live per mixture)."""
        s = self.settings
        if form == "nested":
            multi = len(np.unique(N)) > 1
            res = nested_predict(W, N, D, L, t_params if multi else None, None, size_delta=s.size_delta)
            if notes is not None:
                notes += res.notes
                if len(np.unique(D)) > 1:
                    notes.append("the nested form carries losses across sizes only; each run's tokens are those "
                                 "its size was trained for")
            return fit_mixing_law(res.mixtures, res.losses, names=cols, shares=shares, seed=self.seed), None
        law = fit_scalemix(W, N, D, L, form, names=cols, shares=shares, alpha=s.alpha, beta=s.beta)
        if notes is not None:
            notes += law.offsets.notes
        return law.at(t_params, t_tokens), law

    def _solve(self, law: MixingLaw, caps: np.ndarray | None, floors: np.ndarray | None, starts: list[np.ndarray],
               kl_lambda: float, prior: np.ndarray) -> np.ndarray:
        """The best of SLSQP solves from several starts (the problem is convex; the starts guard SLSQP)."""
        best, val = None, np.inf
        for x0 in starts:
            try:
                w = optimise_mixture(law, caps=caps, lower=floors, start=x0, kl_lambda=kl_lambda, prior=prior)
            except ValueError as e:
                raise InputError("optimizer.caps / optimizer.floors", str(e),
                                 "lower the floors or raise the caps (or the target's max_epochs)") from None
            v = float(law.aggregate(w[None, :])[0]) + kl_lambda * float(kl_to_prior(w, prior)[0])
            if v < val - 1e-12:
                best, val = w, v
        assert best is not None
        return best
