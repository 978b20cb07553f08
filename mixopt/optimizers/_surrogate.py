"""Shared machinery of optimizers that fit a predictor on the runs and search simulated mixtures with it.

RegMix and CLIMB differ in how they choose the mixtures to train (one shot vs rounds pruned by the predictor),
not in how they turn a fitted predictor into a recommendation: both take the token prior (or a given one), the
per-domain repetition caps, draw candidates from Dirichlet(prior · strength), score them in chunks (with a cheap
pre-ranking where the predictor has one), and average the k best. That part lives here, once.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator

from mixopt.errors import InputError
from mixopt.optimizers.base import OptimizerBase, Recommendation, mixture_dict
from mixopt.optimizers.random_search import history_prior
from mixopt.predictors import make_predictor
from mixopt.predictors.per_domain import PerDomainPredictor
from mixopt.runs import RunTable
from mixopt.simplex import SamplerSettings, dirichlet, distance_to_prior, kl_to_prior, repetition_caps
from mixopt.spec import TargetSpec


class CapSettings(SamplerSettings):
    """The sampler plus what fixes the token prior and the per-domain repetition caps (also used by mfbo)."""

    max_epochs: float | None = Field(default=15.0, gt=0, description="cap: a domain may repeat at most this "
                                     "often in the target run (RegMix's MAXIMUM_USAGE); null: no cap")
    target_tokens: float | None = Field(default=None, gt=0, description="tokens of the run the caps protect; "
                                        "default: the target's tokens, else the corpus size (RegMix)")
    prior: dict[str, float] | None = Field(default=None, description="domain token shares, when the run table "
                                           "has no token counts (offline tables)")


class SurrogateSettings(CapSettings):
    """Settings of the candidate simulation; subclasses add `predictor` (their own choices) and may re-default."""

    n_candidates: int = Field(default=1_000_000, ge=1, description="simulated mixtures scored by the predictor")
    top_k: int = Field(default=128, ge=1, description="mean of the k best-predicted candidates")
    candidate_strength: float = Field(default=1.0, gt=0, description="Dirichlet(prior·strength) candidates")
    local_share: float = Field(default=0.5, ge=0, le=1, description="share of candidates drawn near the prior "
                               "(Dirichlet strengths log-uniform in 10–1000) when some kl_lambda > 0: the "
                               "regularised optimum lies there, where Dirichlet(prior·1) draws almost never land")
    chunk_size: int = Field(default=250_000, ge=1000, description="candidates scored per chunk (memory)")
    screen_keep: float = Field(default=0.01, ge=0, le=1, description="share of each chunk a cheap pre-ranking "
                               "keeps for exact scoring (0: score every candidate exactly)")
    n_bootstrap: int = Field(default=8, ge=0, description="refits on resampled runs for the uncertainty of "
                             "predictors without their own")
    n_estimators: int = Field(default=1000, ge=1)
    learning_rate: float = Field(default=0.01, gt=0)
    min_child_samples: int | None = Field(default=None, ge=1, description="None: min(20, runs/4)")
    min_runs: int = Field(default=4, ge=2, description="successful runs needed before fitting")
    kl_lambda: float | Literal["auto"] = Field(
        default="auto", description="the optimum minimises predicted objective + kl_lambda·KL(w ‖ prior); auto: "
        "chosen out of fold from kl_grid (and verified by the search's ladder); 0: the unregularised optimum")
    kl_grid: list[float] = Field(default=[0.0, 0.01, 0.03, 0.1, 0.3], min_length=1,
                                 description="values of kl_lambda that `auto` chooses among")
    per_domain: Literal["auto", "aggregate", "raw", "log", "loglinear"] = Field(
        default="auto", description="model the objective directly (aggregate) or each domain's loss (raw, or "
        "its log) with the predictor, aggregated with the objective's weights; loglinear: each domain's log-loss "
        "linear in w (the data mixing law's form, fitted by least squares); auto: whichever ranks runs best out "
        "of fold")
    cv_folds: int = Field(default=4, ge=2, description="folds of the out-of-fold checks")

    @field_validator("kl_lambda")
    @classmethod
    def _lambda_ok(cls, v: float | str) -> float | str:
        if not isinstance(v, str) and v < 0:
            raise ValueError("kl_lambda must be ≥ 0 (0 = no regularisation) or auto")
        return v

    @field_validator("kl_grid")
    @classmethod
    def _grid_ok(cls, v: list[float]) -> list[float]:
        if any(x < 0 for x in v):
            raise ValueError("kl_grid values must be ≥ 0")
        return sorted(set(v))


def resolve_prior(s: CapSettings, history: RunTable) -> tuple[np.ndarray, str | None]:
    """Token shares from `prior`, else the run table's token counts, else uniform (with a note)."""
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


def resolve_caps(s: CapSettings, history: RunTable, prior: np.ndarray, target: TargetSpec | None
                 ) -> tuple[np.ndarray | None, str | None]:
    """Per-domain maxima from the repetition limit (and the target's own limits); None when not applicable."""
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
    limit = f"{s.max_epochs:g} epochs per domain (optimizer.max_epochs)"
    if target is not None and target.tokens and history.token_counts and s.target_tokens is None:
        from mixopt.target import domain_caps

        # The target's own limits (4 epochs by default, per-domain overrides) bound the search itself, so
        # the recommendation needs no re-balancing afterwards when a feasible mixture exists.
        caps = np.minimum(caps, domain_caps(history.domains, history.token_counts, target))
        if target.max_epochs < s.max_epochs or target.max_epochs_per_domain:
            limit = (f"the target's {target.max_epochs:g} epochs per domain (target.max_epochs, tighter than "
                     f"optimizer.max_epochs {s.max_epochs:g})")
    if caps.sum() < 1:  # no mixture fits: search unconstrained, the target step reports the overrun
        # One explanation, in terms of the cap that binds, so that it reads with the target step's note.
        return None, (f"{tokens:.3g} target tokens exceed the {caps.sum() * tokens:.3g} the corpus supplies at "
                      f"{limit}: repetition caps not applied in the search; the target step below spreads the "
                      "overrun evenly")
    return caps, None


class SurrogateOptimizer(OptimizerBase):
    """Prior, caps, predictor, simulation and the top-k recommendation; subclasses write `propose`."""

    settings: Any  # a SurrogateSettings subclass with a `predictor` field

    @classmethod
    def runs_needed(cls, settings: BaseModel) -> int | None:
        return int(settings.min_runs)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------------------------------ helpers

    def prior(self, history: RunTable) -> tuple[np.ndarray, str | None]:
        return resolve_prior(self.settings, history)

    def caps(self, history: RunTable, prior: np.ndarray, target: TargetSpec | None
             ) -> tuple[np.ndarray | None, str | None]:
        return resolve_caps(self.settings, history, prior, target)

    def predictor(self, seed: int):
        s = self.settings
        if s.predictor == "lightgbm":
            return make_predictor("lightgbm", n_estimators=s.n_estimators, learning_rate=s.learning_rate,
                                  min_child_samples=s.min_child_samples, seed=seed)
        return make_predictor(s.predictor, seed=seed)

    def _usable(self, history: RunTable) -> tuple[RunTable, np.ndarray]:
        """The usable runs and their objective; an error naming the fix when there are too few."""
        ok, y = history.usable(self.objective)
        if len(ok) < self.settings.min_runs:
            raise InputError(history.source,
                             f"{self.name} needs at least {self.settings.min_runs} successful runs, has {len(ok)}",
                             "train more proxies (raise budget.runs) or lower optimizer.min_runs")
        return ok, y

    def _fit(self, history: RunTable) -> tuple[Any, RunTable, np.ndarray]:
        """The predictor fitted on the usable runs (at least `min_runs` of them)."""
        ok, y = self._usable(history)
        return self.predictor(self.seed).fit(ok.weights, y), ok, y

    # ------------------------------------------------------------------------------------------ recommend

    def _columns(self, table: RunTable) -> tuple[list[str], np.ndarray]:
        """The objective's loss columns and their weights (the objective is Σ a_j·loss_j)."""
        return table.objective_columns(self.objective)

    def _fit_mode(self, mode: str, X: np.ndarray, y: np.ndarray, Y: np.ndarray | None, a: np.ndarray,
                  seed: int) -> Any:
        if mode == "aggregate":
            return self.predictor(seed).fit(X, y)
        if mode == "loglinear":
            return PerDomainPredictor(lambda: make_predictor("linear"), a, "log").fit(X, Y)
        return PerDomainPredictor(lambda: self.predictor(seed), a, "log" if mode == "log" else "raw").fit(X, Y)

    def _fit_best(self, ok: RunTable, y: np.ndarray) -> tuple[Any, str, dict[str, dict[str, float]], np.ndarray]:
        """The predictor in the modelling mode that ranks held-out runs best, and every mode's out-of-fold score.

        Returns (model fitted on all runs, mode, {mode: {spearman, mae}}, out-of-fold predictions of that mode).
        """
        from scipy.stats import spearmanr

        s = self.settings
        cols, a = self._columns(ok)
        Y = ok.df[cols].to_numpy(dtype=float)
        per_domain_ok = len(cols) > 1 and np.isfinite(Y).all() and (Y > 0).all()
        # The log-linear law needs more runs than weights to be determined.
        modes = ([s.per_domain] if s.per_domain != "auto"
                 else ["aggregate", "raw", "log"] + (["loglinear"] if len(y) > 2 * len(ok.domains) else [])
                 if per_domain_ok else ["aggregate"])
        if s.per_domain in ("raw", "log", "loglinear") and not per_domain_ok:
            modes = ["aggregate"]
        X = ok.weights
        n = len(y)
        folds = min(s.cv_folds, n)
        order = self.rng(ok, "folds").permutation(n)
        fold_of = np.empty(n, dtype=int)
        fold_of[order] = np.arange(n) % folds
        scores: dict[str, dict[str, float]] = {}
        oof: dict[str, np.ndarray] = {}
        for mode in modes:
            p = np.empty(n)
            for f in range(folds):
                tr, te = fold_of != f, fold_of == f
                m = self._fit_mode(mode, X[tr], y[tr], Y[tr] if mode != "aggregate" else None, a, self.seed)
                p[te] = m.predict(X[te])
            oof[mode] = p
            rho = spearmanr(p, y).statistic if np.ptp(y) > 0 and np.ptp(p) > 0 else 0.0
            scores[mode] = {"spearman": float(rho), "mae": float(np.abs(p - y).mean())}
        # Ties go to the simpler aggregate model (listed first).
        best = max(modes, key=lambda m: (round(scores[m]["spearman"], 3), -modes.index(m)))
        model = self._fit_mode(best, X, y, Y if best != "aggregate" else None, a, self.seed)
        return model, best, scores, oof[best]

    def _choose_lambda(self, oof: np.ndarray, ok: RunTable, y: np.ndarray, prior: np.ndarray,
                       lambdas: list[float]) -> tuple[float, dict[float, float]]:
        """kl_lambda chosen out of fold: how well `predicted + λ·KL` picks good runs among runs it has not seen.

        The out-of-fold predictions stand in for a surrogate that has not seen a run. Over random halves of the
        runs, the run the penalised criterion picks is ranked by its measured objective (0 = the half's best);
        the λ with the best mean rank wins, ties going to the larger λ (closer to the prior is the safer bet).
        """
        kl = kl_to_prior(ok.weights, prior)
        rng = self.rng(ok, "lambda")
        n = len(y)
        halves = [rng.permutation(n)[: max(2, n // 2)] for _ in range(200)]
        score = {}
        for lam in lambdas:
            ranks = []
            for h in halves:
                pick = h[int(np.argmin(oof[h] + lam * kl[h]))]
                ranks.append(float((y[h] < y[pick]).sum()) / max(len(h) - 1, 1))
            score[lam] = float(np.mean(ranks))
        best = min(lambdas, key=lambda lam: (round(score[lam], 3), -lam))
        return best, score

    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        s = self.settings
        ok, y = self._usable(history)
        prior, prior_note = self.prior(history)
        caps, caps_note = self.caps(history, prior, target)
        model, mode, cv, oof = self._fit_best(ok, y)
        lambdas = list(s.kl_grid) if s.kl_lambda == "auto" else [float(s.kl_lambda)]
        sims = self._simulate_many(model, prior, caps, self.rng(history, "candidates"), lambdas)
        if s.kl_lambda == "auto":
            lam, lam_scores = self._choose_lambda(oof, ok, y, prior, lambdas)
        else:
            lam, lam_scores = float(s.kl_lambda), {}
        top_w, top_y, n_exact, n_feasible = sims[lam]
        optima = {}
        for x, (tw, _, _, _) in sims.items():
            wx = tw.mean(axis=0)
            optima[x] = wx / wx.sum()
        w = optima[lam]
        predicted = float(model.predict(w[None, :])[0])
        uncertainty = self._uncertainty(model, mode, ok, y, w)
        notes = list(ok.notes) + [n for n in (prior_note, caps_note) if n]
        picked = (f"the best of {n_feasible:,}" if len(top_w) == 1
                  else f"mean of the top {len(top_w)} of {n_feasible:,}")
        what = {"aggregate": "the objective", "raw": "each domain's loss", "log": "each domain's log-loss",
                "loglinear": "each domain's log-loss as linear in w"}[mode]
        notes.append(f"{s.predictor} fitted on {len(ok)} runs, modelling {what} (out-of-fold Spearman ρ "
                     f"{cv[mode]['spearman']:.2f}); {picked} feasible candidates ({n_exact:,} scored exactly)")
        dist = distance_to_prior(w, prior)
        how = "chosen out of fold" if s.kl_lambda == "auto" else "as set"
        notes.append(f"regularised optimum: kl_lambda {lam:g} ({how}); KL(w ‖ prior) {dist['kl']:.3f}, "
                     f"L1 {dist['l1']:.3f}")
        i_best = int(np.argmin(y))
        if cv[mode]["spearman"] < 0.5:
            notes.append(f"warning: the predictor ranks held-out runs poorly (out-of-fold ρ "
                         f"{cv[mode]['spearman']:.2f} < 0.5); trust this recommendation only as far as a larger-"
                         "scale check (the ladder) confirms it")
        if predicted > y[i_best]:
            notes.append(f"warning: predicted {predicted:.4f}, worse than the best measured run "
                         f"{ok.run_ids()[i_best]} ({y[i_best]:.4f})")
        k = min(s.top_k, s.n_candidates)
        if n_feasible < k:  # the caps left the simulation almost nothing to choose among
            notes.append(f"warning: only {n_feasible:,} of {s.n_candidates:,} simulated mixtures satisfy the "
                         f"repetition caps (top_k {k}), so the recommendation " +
                         ("averages all of them" if n_feasible else "is drawn from the capped simplex") +
                         "; loosen the caps (optimizer.max_epochs, more text for the capped domains) or trust it "
                         "only as far as the ladder confirms it")
        candidates = [{"label": f"{self.name} (kl_lambda {x:g})", "kl_lambda": x,
                       "weights": mixture_dict(history.domains, optima[x]),
                       "predicted": float(model.predict(optima[x][None, :])[0]),
                       **distance_to_prior(optima[x], prior)} for x in _by_closeness(lambdas, lam)]
        details: dict = {"predictor": s.predictor, "candidates": candidates, "feasible": n_feasible,
                         "scored_exactly": n_exact, "per_domain": mode, "modelling": cv,
                         "oof_spearman": cv[mode]["spearman"], "kl_lambda": lam,
                         "kl_lambda_choice": "out-of-fold" if s.kl_lambda == "auto" else "set",
                         "kl_lambda_scores": {str(k): v for k, v in lam_scores.items()},
                         "prior": mixture_dict(history.domains, prior), "distance_to_prior": dist,
                         "best_run": {"run_id": ok.run_ids()[i_best], "objective": float(y[i_best]),
                                      "weights": mixture_dict(history.domains, ok.weights[i_best])},
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
        """The unregularised top-k of the simulation (CLIMB's rounds use this)."""
        return self._simulate_many(model, prior, caps, rng, [0.0], k)[0.0]

    def _simulate_many(self, model, prior: np.ndarray, caps: np.ndarray | None, rng: np.random.Generator,
                       lambdas: list[float], k: int | None = None
                       ) -> dict[float, tuple[np.ndarray, np.ndarray, int, int]]:
        """Stream candidates in chunks; for every λ keep the running top-k of predicted + λ·KL(w ‖ prior).

        One simulation serves every λ: each chunk is screened (where the predictor has a cheap pre-ranking) per
        λ, the union of what the screens keep is scored exactly once, and each λ ranks those by its own penalty.
        Returns {λ: (top weights, their predicted objective, scored exactly, feasible)}.
        """
        s = self.settings
        k = min(s.top_k if k is None else k, s.n_candidates)
        D = len(prior)
        local = s.local_share if any(lam > 0 for lam in lambdas) else 0.0
        best = {lam: (np.empty((0, D)), np.empty(0), np.empty(0)) for lam in lambdas}  # w, pred, score
        n_exact = n_feasible = 0
        left = s.n_candidates
        while left > 0:
            m = min(left, s.chunk_size)
            left -= m
            C = dirichlet(prior * s.candidate_strength, m, rng)
            n_local = int(round(local * m))
            if n_local:  # near-prior candidates, where a penalised optimum lies (RegMix's draws are extreme)
                strength = 10 ** rng.uniform(1, 3, n_local)
                gam = rng.gamma(np.maximum(prior[None, :] * strength[:, None], 1e-12))
                C[:n_local] = gam / np.maximum(gam.sum(axis=1, keepdims=True), 1e-300)
            if caps is not None:
                C = C[(C <= caps[None, :]).all(axis=1)]
            n_feasible += len(C)
            if len(C) == 0:
                continue
            kl = kl_to_prior(C, prior)
            if s.screen_keep > 0 and hasattr(model, "screen"):
                keep = max(int(np.ceil(s.screen_keep * len(C))), 4 * k)
                if keep < len(C):
                    sc = model.screen(C)
                    idx = np.unique(np.concatenate([np.argpartition(sc + lam * kl, keep - 1)[:keep]
                                                    for lam in lambdas]))
                    C, kl = C[idx], kl[idx]
            pred = model.predict(C)
            n_exact += len(C)
            for lam in lambdas:
                bw, bp, bs = best[lam]
                bw, bp, bs = np.concatenate([bw, C]), np.concatenate([bp, pred]), np.concatenate([bs, pred + lam * kl])
                order = np.argsort(bs, kind="stable")[:k]
                best[lam] = (bw[order], bp[order], bs[order])
        if len(best[lambdas[0]][0]) == 0 and caps is not None:
            # Caps so tight that random draws never land inside them: move a sample of draws onto the capped
            # simplex (water-filling, the same rule a target applies afterwards) and rank those instead.
            from mixopt.target import rebalance

            C = dirichlet(prior * s.candidate_strength, min(s.n_candidates, 4096), rng)
            C = np.stack([rebalance(c, caps) for c in C])
            pred = model.predict(C)
            kl = kl_to_prior(C, prior)
            n_exact += len(C)
            for lam in lambdas:
                order = np.argsort(pred + lam * kl, kind="stable")[:k]
                best[lam] = (C[order], pred[order], (pred + lam * kl)[order])
        if len(best[lambdas[0]][0]) == 0:
            raise InputError("optimizer", "no simulated mixture satisfies the repetition caps",
                             "raise max_epochs or n_candidates, or lower the target tokens")
        return {lam: (bw, bp, n_exact, n_feasible) for lam, (bw, bp, _) in best.items()}

    def _uncertainty(self, model, mode: str, ok: RunTable, y: np.ndarray, w: np.ndarray) -> float | None:
        try:
            return float(model.predict_with_std(w[None, :])[1][0])
        except AttributeError:
            pass
        if self.settings.n_bootstrap < 2:
            return None
        cols, a = self._columns(ok)
        Y = ok.df[cols].to_numpy(dtype=float)
        rng = self.rng(ok, "bootstrap")
        preds = []
        for b in range(self.settings.n_bootstrap):  # refits on resampled runs: the spread of the prediction
            idx = rng.integers(0, len(y), len(y))
            m = self._fit_mode(mode, ok.weights[idx], y[idx], Y[idx] if mode != "aggregate" else None, a,
                               self.seed + b + 1)
            preds.append(float(m.predict(w[None, :])[0]))
        return float(np.std(preds, ddof=1))


def _by_closeness(lambdas: list[float], chosen: float) -> list[float]:
    """λ values, the chosen one first, then by distance from it on a log scale (0 counts as far below)."""
    def key(x: float) -> float:
        return abs(np.log10(x + 1e-3) - np.log10(chosen + 1e-3))

    return sorted(lambdas, key=key)
