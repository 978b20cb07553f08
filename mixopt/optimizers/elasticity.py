"""`elasticity`: each domain's loss against the log of its own share, fitted on a design around uniform, and the
mixture that law says is best for the objective (docs/methods.md §11).

Why a law this plain: what decides the best mixture for an objective over the domains is how much each domain's
loss falls when its share grows — its elasticity s_d = −∂L_d/∂log w_d. Measured on the Debian documentation
corpus (benchmarks/headroom.py --screen), the elasticities of a proxy trained for as many tokens as the target
matched the target's whatever the proxy's size (1×16 and 2×24 proxies, 15.6× and 5.8× smaller than the target,
gave optima 0.14 and 0.11 in L1 from the target's own), while proxies trained for 4× fewer tokens did not,
whatever their size. Regressing the whole objective on the weights (RegMix) spends its runs on a K-dimensional
surface; this spends them on K slopes.

Law, per objective column `loss_<d>` that names a domain d:  L_d = c_d + c_g − s_d·log w_d, least squares over
the successful runs, with one offset c_g per group of runs that share a proxy seed and fidelity (common random
numbers: the seed's luck is absorbed, not fitted as an effect of the mixture). The objective Σ_d o_d·L_d is then
minimised on the simplex: without bounds w_d ∝ o_d·s_d; with a floor (`min_share`), the per-domain repetition
caps and λ·KL(w ‖ prior) it is a smooth convex problem, solved with scipy's SLSQP. A domain whose loss did not
fall with its share (s_d ≤ 0) gets the floor. The law has no term for transfer between domains; it is a
first-order picture, and the search's verification ladder checks its optimum like any other.

Uncertainty: the law is refitted on `n_bootstrap` resamples of the runs (every domain together, so the domains'
shared noise counts); the recommendation reports the predicted gain over uniform and over the prior with its
bootstrap standard error, and warns when neither gain is beyond two of them.

propose: uniform, the prior, then Dirichlet(`concentration`·1) draws around uniform floored at 1 % — a design
that moves every domain's share both ways, which is what the slopes are fitted from.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field
from scipy.optimize import minimize

from mixopt.errors import InputError
from mixopt.optimizers._surrogate import CapSettings, resolve_caps, resolve_prior
from mixopt.optimizers.base import OptimizerBase, Proposal, Recommendation, mixture_dict
from mixopt.runs import RunTable
from mixopt.simplex import distance_to_prior, kl_to_prior
from mixopt.spec import TargetSpec

DESIGN_FLOOR = 0.01  # a design share below this gives log w far outside the rest of the design: one run would
# set the slope


class ElasticitySettings(CapSettings):
    concentration: float = Field(default=3.0, gt=0, description="Dirichlet α per domain of the design draws "
                                 "around uniform (lower: further from uniform)")
    min_share: float = Field(default=0.02, ge=0, lt=0.5, description="floor of every domain's share in the "
                             "optimum (a domain whose loss did not fall with its share still gets some data)")
    kl_lambda: float = Field(default=0.0, ge=0, description="the optimum minimises the law's objective + "
                             "kl_lambda·KL(w ‖ prior); 0: the law's own optimum")
    kl_grid: list[float] = Field(default=[0.0, 0.05, 0.2], description="other kl_lambda values whose optima are "
                                 "listed as candidates for the verification ladder")
    n_bootstrap: int = Field(default=200, ge=0, description="refits on resampled runs for the uncertainty")


class Elasticity(OptimizerBase):
    name = "elasticity"
    Settings = ElasticitySettings
    settings: ElasticitySettings

    @classmethod
    def runs_needed(cls, settings: ElasticitySettings) -> int | None:
        return 4

    # ------------------------------------------------------------------------------------------ propose

    def propose(self, history: RunTable, n: int) -> list[Proposal]:
        K = len(history.domains)
        prior = resolve_prior(self.settings, history)[0]
        seen = {tuple(np.round(w, 6)) for w in history.weights} if len(history) else set()
        rng = self.rng(history)
        out: list[np.ndarray] = []
        for w in (np.full(K, 1 / K), prior):
            if tuple(np.round(w, 6)) not in seen and len(out) < n:
                out.append(w)
                seen.add(tuple(np.round(w, 6)))
        while len(out) < n:
            w = np.maximum(rng.dirichlet(np.full(K, self.settings.concentration)), DESIGN_FLOOR)
            out.append(w / w.sum())
        return [Proposal(mixture_dict(history.domains, w)) for w in out]

    # ------------------------------------------------------------------------------------------ recommend

    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        s = self.settings
        ok, _ = history.usable(self.objective)
        cols, o = history.objective_columns(self.objective)
        domains = history.domains
        idx = {f"loss_{d}": i for i, d in enumerate(domains)}
        law_cols = [(c, idx[c], a) for c, a in zip(cols, o, strict=True) if c in idx]
        if not law_cols:
            raise InputError("objective.metrics", "elasticity fits each domain's loss against its own share, and "
                             "no objective column is a domain's loss_<domain>", "use regmix for this objective")
        if len(ok) < 4:
            raise InputError(history.source, f"elasticity needs at least 4 successful runs, has {len(ok)}",
                             "train more proxies (raise budget.runs)")
        W = np.clip(ok.weights, 1e-6, None)
        L = ok.df[[c for c, _, _ in law_cols]].to_numpy(dtype=float)
        groups = _groups(ok)
        slopes, se = fit_slopes(W, L, [i for _, i, _ in law_cols], groups)
        oweights = _pull(law_cols, np.ones(len(law_cols)), len(domains))  # the objective's weight per domain
        el = _pull(law_cols, slopes, len(domains))
        prior, prior_note = resolve_prior(s, history)
        caps, cap_note = resolve_caps(s, history, prior, target)
        optima = {x: _solve(el, s.min_share, caps, x, prior) for x in sorted({s.kl_lambda, *s.kl_grid})}
        w = optima[s.kl_lambda]
        K = len(domains)
        uniform = np.full(K, 1 / K)
        boots = _bootstrap(W, L, law_cols, groups, len(domains), s.n_bootstrap, self.rng(history, "boot"))

        def gain(a: np.ndarray, b: np.ndarray, pull: np.ndarray) -> float:  # law's objective at a minus at b
            return float(-(pull * (np.log(a) - np.log(b))).sum())

        g_u, g_p = gain(w, uniform, el), gain(w, prior, el)
        se_u = float(np.std([gain(w, uniform, e) for e in boots], ddof=1)) if len(boots) > 1 else None
        se_p = float(np.std([gain(w, prior, e) for e in boots], ddof=1)) if len(boots) > 1 else None
        notes = list(ok.notes) + [n for n in (prior_note, cap_note) if n]
        notes.append(f"elasticity law fitted on {len(ok)} runs ({len(set(groups))} seed/fidelity group(s)); "
                     f"predicted gain over uniform {g_u:+.4f}" + (f" ± {se_u:.4f}" if se_u is not None else "")
                     + f", over the prior {g_p:+.4f}" + (f" ± {se_p:.4f}" if se_p is not None else ""))
        if se_u is not None and se_p is not None and not (g_u < -2 * se_u and g_p < -2 * se_p):
            notes.append("warning: the law's gain over uniform or over the prior is within two bootstrap standard "
                         "errors; the runs do not tell this mixture apart from that baseline")
        negative = [d for d, x, o in zip(domains, el, oweights, strict=True) if o > 0 and x <= 0]
        if negative:
            notes.append(f"no loss fell with its share for: {', '.join(negative)} (given the floor "
                         f"{s.min_share:g})")
        dist = distance_to_prior(w, prior)
        details = {
            "elasticity": {c.removeprefix("loss_"): {"s": float(sl), "se": float(e)}
                           for (c, _, _), sl, e in zip(law_cols, slopes, se, strict=True)},
            "gain_over_uniform": g_u, "gain_over_uniform_se": se_u, "gain_over_prior": g_p,
            "gain_over_prior_se": se_p, "kl_lambda": s.kl_lambda, "prior": mixture_dict(domains, prior),
            "distance_to_prior": dist, "runs_fitted": len(ok),
            "candidates": [{"label": f"elasticity (kl_lambda {x:g})", "kl_lambda": x,
                            "weights": mixture_dict(domains, ox), "predicted_gain_over_uniform":
                            gain(ox, uniform, el), **distance_to_prior(ox, prior)} for x, ox in optima.items()]}
        if caps is not None:
            details["caps"] = mixture_dict(domains, caps)
        return self._recommendation(w, history, uncertainty=se_u, runs_used=ok.run_ids(), notes=notes,
                                    details=details)


def _groups(table: RunTable) -> list[str]:
    """One label per run: its proxy seed and fidelity, the runs that share initialisation, data order and size."""
    df = table.df
    keys = [c for c in ("seed", "fid_params", "fid_tokens") if c in df.columns]
    if not keys:
        return ["all"] * len(df)
    return ["|".join(str(v) for v in row) for row in df[keys].itertuples(index=False)]


def _design(W: np.ndarray, domain: int, groups: list[str]) -> np.ndarray:
    """Columns: one offset per group holding ≥ 2 runs (else one shared offset for the rest), then −log w_d."""
    labels = sorted(set(groups))
    counts = {g: groups.count(g) for g in labels}
    multi = [g for g in labels if counts[g] >= 2]
    cols = [np.array([g == m for g in groups], dtype=float) for m in multi]
    rest = np.array([counts[g] < 2 for g in groups], dtype=float)
    if rest.any():
        cols.append(rest)
    cols.append(-np.log(W[:, domain]))
    return np.column_stack(cols)


def _pull(law_cols: list[tuple[str, int, float]], slopes: np.ndarray, K: int) -> np.ndarray:
    """The objective's pull on each domain: Σ over the domain's columns of objective weight × slope."""
    pull = np.zeros(K)
    for (_, i, a), x in zip(law_cols, slopes, strict=True):
        pull[i] += a * x
    return pull


def fit_slopes(W: np.ndarray, L: np.ndarray, domains: list[int], groups: list[str]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per column j of L (the loss of domain `domains[j]`): the slope s of L = c_group − s·log w (the last
    coefficient) and its standard error, by least squares (numpy's lstsq: a design of a few columns, nothing a
    library adds). Also what benchmarks/headroom.py fits at the target."""
    slopes, ses = [], []
    for j, d in enumerate(domains):
        X = _design(W, d, groups)
        coef, *_ = np.linalg.lstsq(X, L[:, j], rcond=None)
        resid = L[:, j] - X @ coef
        dof = max(len(resid) - np.linalg.matrix_rank(X), 1)
        cov = float((resid ** 2).sum() / dof) * np.linalg.pinv(X.T @ X)
        slopes.append(float(coef[-1]))
        ses.append(float(np.sqrt(max(cov[-1, -1], 0.0))))
    return np.array(slopes), np.array(ses)


def _bootstrap(W: np.ndarray, L: np.ndarray, law_cols: list[tuple[str, int, float]], groups: list[str], K: int,
               n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The objective's pull per domain (Σ a·s) refitted on `n` resamples of the runs."""
    out = []
    m = len(W)
    for _ in range(n):
        take = rng.integers(0, m, m)
        if len(np.unique(take)) < 4:
            continue
        sl, _ = fit_slopes(W[take], L[take], [i for _, i, _ in law_cols], [groups[t] for t in take])
        out.append(_pull(law_cols, sl, K))
    return out


def _solve(pull: np.ndarray, floor: float, caps: np.ndarray | None, kl_lambda: float, prior: np.ndarray
           ) -> np.ndarray:
    """argmin over the simplex of −Σ_d pull_d·log w_d + λ·KL(w ‖ prior), floor ≤ w ≤ caps (convex; SLSQP)."""
    K = len(pull)
    p = np.maximum(pull, 0.0)
    hi = np.ones(K) if caps is None else np.minimum(caps, 1.0)
    lo = np.minimum(np.full(K, floor), hi)
    if lo.sum() > 1:
        lo = lo / lo.sum()
    start = p / p.sum() if p.sum() > 0 else np.full(K, 1 / K)
    start = np.clip(start, lo, hi)
    start = start / start.sum()
    if p.sum() <= 0 and kl_lambda == 0:
        return start

    def f(w: np.ndarray) -> float:
        w = np.maximum(w, 1e-12)
        kl = float(kl_to_prior(w[None, :], prior)[0]) if kl_lambda else 0.0
        return float(-(p * np.log(w)).sum() + kl_lambda * kl)

    res = minimize(f, start, method="SLSQP", bounds=list(zip(lo, hi, strict=True)),
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}], options={"maxiter": 500})
    w = np.clip(res.x if res.success else start, lo, hi)
    return w / w.sum()
