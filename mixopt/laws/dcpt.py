"""D-CPT law (arXiv 2406.01375; docs/methods.md §5): L(N, D, r) = E + A·N^−α + B·r^η·D^−β + C·(r+ε)^−γ.

One law for the general-corpus loss and one for the domain loss of continual pretraining on a two-corpus
mixture; the domain law is fitted against the domain share r_d, the general law against r_g = 1 − r_d (so that
both are decreasing in their own share, the paper's design requirement). N and D enter divided by reference
scales (N0, D0: the geometric means of the fitted proxies), which keeps the coefficients near 1 and the fit
well conditioned; `params()` reports them with the scales.

The three usages (§5d) are methods of `DCPTLaws`:
1. `max_domain_ratio`: the largest domain share whose general loss stays within (1+T)·the general-only loss;
2. `best_ratio_limited_data`: with only D_d domain tokens, the share minimising the domain loss at D = D_d/r;
3. `allocate_compute`: the N, D = C/(6N) split of a compute budget minimising a loss at a fixed share.
The cross-domain variant adds F·K^−μ for a per-domain coefficient K (`domain_learnable_coefficient`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from mixopt.laws.fit import FittedLaw, Form, fit_law, log_grid

DCPT_GRID: dict[str, list[float]] = {  # starts over the exponents; the coefficients come from NNLS per point
    "alpha": log_grid(0.05, 1.2, 5), "beta": log_grid(0.05, 1.2, 5), "gamma": log_grid(0.02, 1.0, 4),
    "eta": log_grid(0.1, 2.0, 4), "eps": log_grid(0.005, 0.5, 4),
}
DCPT_BOUNDS = {"alpha": (0.01, 3.0), "beta": (0.01, 3.0), "gamma": (0.005, 3.0), "eta": (0.01, 5.0),
               "eps": (1e-4, 1.0), "mu": (0.01, 5.0)}
CROSS_GRID: dict[str, list[float]] = {**DCPT_GRID, "mu": log_grid(0.1, 2.0, 3)}


def dcpt_form(n_ref: float, d_ref: float, cross: bool = False) -> Form:
    """The D-CPT form over X = [N, D, r] (cross-domain: [N, D, r, K]) with N, D in units of n_ref, d_ref."""
    def basis(p: Mapping[str, float], X: np.ndarray) -> np.ndarray:
        N, D, r = X[:, 0] / n_ref, X[:, 1] / d_ref, X[:, 2]
        cols = [np.ones(len(X)), N ** -p["alpha"], r ** p["eta"] * D ** -p["beta"], (r + p["eps"]) ** -p["gamma"]]
        if cross:
            cols.append(X[:, 3] ** -p["mu"])
        return np.column_stack(cols)

    linear = ("E", "A", "B", "C", "F") if cross else ("E", "A", "B", "C")
    nonlinear = ("alpha", "beta", "gamma", "eta", "eps", "mu") if cross else ("alpha", "beta", "gamma", "eta", "eps")
    formula = "E + A·(N/N0)^−α + B·r^η·(D/D0)^−β + C·(r+ε)^−γ" + (" + F·K^−μ" if cross else "")
    return Form(name="dcpt-cross" if cross else "dcpt", linear=linear, nonlinear=nonlinear, basis=basis,
                formula=formula, constants={"N0": float(n_ref), "D0": float(d_ref)}, bounds=DCPT_BOUNDS)


def fit_dcpt(N: np.ndarray, D: np.ndarray, r: np.ndarray, loss: np.ndarray, K: np.ndarray | None = None,
             delta: float = 1e-3, held_out: np.ndarray | None = None, bootstrap: int = 0, seed: int = 0,
             n_ref: float | None = None, d_ref: float | None = None) -> FittedLaw:
    """Fit one D-CPT law; r is the share of the corpus whose loss this is (r_d for L_d, 1 − r_d for L_g)."""
    N, D, r, y = (np.asarray(a, dtype=float) for a in (N, D, r, loss))
    if (N <= 0).any() or (D <= 0).any():
        raise ValueError("parameters N and tokens D must be positive")
    if ((r < 0) | (r > 1)).any():
        raise ValueError("mixture shares r must lie in [0, 1]")
    n_ref = n_ref or float(np.exp(np.log(N).mean()))
    d_ref = d_ref or float(np.exp(np.log(D).mean()))
    cols = [N, D, r] + ([np.asarray(K, dtype=float)] if K is not None else [])
    form = dcpt_form(n_ref, d_ref, cross=K is not None)
    return fit_law(form, np.column_stack(cols), y, CROSS_GRID if K is not None else DCPT_GRID, delta=delta,
                   held_out=held_out, bootstrap=bootstrap, seed=seed)


def domain_learnable_coefficient(k1: float, k2: float, w1: float = 1.0, w2: float = 1.0) -> float:
    """K = w1/k1 + w2·k2 from a short run: k1 its initial validation loss, k2 its rate of loss decline (§5c)."""
    if k1 <= 0:
        raise ValueError("the initial validation loss k1 must be positive")
    return w1 / k1 + w2 * k2


@dataclass
class DCPTLaws:
    """The general and domain laws of one general/domain pair; shares below are domain shares r_d."""

    general: FittedLaw
    domain: FittedLaw

    @staticmethod
    def _X(N: float, D: float | np.ndarray, r: np.ndarray) -> np.ndarray:
        r, D = np.broadcast_arrays(np.atleast_1d(np.asarray(r, dtype=float)), np.atleast_1d(np.asarray(D, dtype=float)))
        return np.column_stack([np.full(len(r), float(N)), D, r])

    def loss_general(self, N: float, D: float | np.ndarray, r_d: np.ndarray | float) -> np.ndarray:
        return self.general.predict(self._X(N, D, 1.0 - np.atleast_1d(np.asarray(r_d, dtype=float))))

    def loss_domain(self, N: float, D: float | np.ndarray, r_d: np.ndarray | float) -> np.ndarray:
        return self.domain.predict(self._X(N, D, r_d))

    def max_domain_ratio(self, N: float, D: float, tolerance: float = 0.03, r_min: float = 0.0,
                         r_max: float = 1.0) -> tuple[float, float]:
        """Usage 1: the largest r_d in [r_min, r_max] with L_g(N, D, 1−r_d) ≤ (1+T)·L_g(N, D, r_g = 1).

        Returns (r_d, the reference general loss). r_min when even it breaks the tolerance.
        """
        ref = float(self.loss_general(N, D, 0.0)[0])
        limit = (1 + tolerance) * ref
        grid = np.linspace(r_min, r_max, 2001)
        ok = self.loss_general(N, D, grid) <= limit
        if not ok.any():
            return float(r_min), ref
        if ok.all():
            return float(r_max), ref
        i = int(np.flatnonzero(ok).max())  # the last feasible grid point; refine the crossing after it
        lo, hi = grid[i], grid[min(i + 1, len(grid) - 1)]
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if self.loss_general(N, D, mid)[0] <= limit else (lo, mid)
        return float(lo), ref

    def best_ratio_limited_data(self, N: float, domain_tokens: float, r_min: float = 1e-3, r_max: float = 1.0
                                ) -> tuple[float, float]:
        """Usage 2: argmin over r_d of L_d(N, D_d/r_d, r_d) — all the domain data, once. Returns (r_d, L_d)."""
        r_min = max(r_min, 1e-6)
        grid = np.geomspace(r_min, r_max, 400)
        vals = self.loss_domain(N, domain_tokens / grid, grid)
        i = int(np.argmin(vals))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        res = minimize_scalar(lambda r: float(self.loss_domain(N, domain_tokens / r, r)[0]), bounds=(lo, hi),
                              method="bounded", options={"xatol": 1e-9})
        r = float(res.x) if res.fun < vals[i] else float(grid[i])
        return r, float(self.loss_domain(N, domain_tokens / r, r)[0])

    def allocate_compute(self, compute: float, r_d: float, which: str = "domain") -> dict[str, float]:
        """Usage 3: N minimising the loss at D = C/(6N) and a fixed domain share (Chinchilla-style)."""
        if which not in ("domain", "general"):
            raise ValueError("which must be 'domain' or 'general'")
        f = self.loss_domain if which == "domain" else self.loss_general

        def loss(logn: float) -> float:
            n = float(np.exp(logn))
            return float(f(n, compute / (6 * n), r_d)[0])

        lo, hi = np.log(compute / 6) * 0.25, np.log(compute / 6) * 0.75  # N between (C/6)^¼ and (C/6)^¾
        grid = np.linspace(lo, hi, 200)
        i = int(np.argmin([loss(g) for g in grid]))
        res = minimize_scalar(loss, bounds=(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]), method="bounded")
        n = float(np.exp(res.x))
        return {"params": n, "tokens": compute / (6 * n), "loss": float(res.fun), "domain_ratio": float(r_d)}

    def params(self) -> dict[str, dict]:
        return {"general": {"formula": self.general.form.formula + "  (r = 1 − r_d)", **self.general.summary(),
                            "r2": self.general.r2, "huber": self.general.huber},
                "domain": {"formula": self.domain.form.formula + "  (r = r_d)", **self.domain.summary(),
                           "r2": self.domain.r2, "huber": self.domain.huber}}


def fit_dcpt_pair(N: np.ndarray, D: np.ndarray, r_d: np.ndarray, loss_general: np.ndarray, loss_domain: np.ndarray,
                  delta: float = 1e-3, bootstrap: int = 0, seed: int = 0) -> DCPTLaws:
    """Fit both laws from proxies at several (N, D, r_d), on one pair of reference scales."""
    N, D, r_d = (np.asarray(a, dtype=float) for a in (N, D, r_d))
    n_ref, d_ref = float(np.exp(np.log(N).mean())), float(np.exp(np.log(D).mean()))
    g = fit_dcpt(N, D, 1.0 - r_d, loss_general, delta=delta, bootstrap=bootstrap, seed=seed, n_ref=n_ref,
                 d_ref=d_ref)
    d = fit_dcpt(N, D, r_d, loss_domain, delta=delta, bootstrap=bootstrap, seed=seed + 1, n_ref=n_ref, d_ref=d_ref)
    return DCPTLaws(general=g, domain=d)
