"""CMR scaling law (arXiv 2407.17467; docs/methods.md §6): the critical mixture ratio of continual pretraining.

For each domain share R of a continual-pretraining run, the loss *changes* relative to the pre-CPT checkpoint
follow, in training tokens T (in units of `token_unit`, 200M tokens in the paper):
- ΔL_dom(T) = a1·T^s1 + b1
- ΔL_gen(T) = a2·T^s2 + a3·T^s3 + b2 (two terms: general loss can rise, then fall)
The critical mixture ratio for a tolerance ε is the largest R whose general-loss change stays ≤ ε: ΔL_gen at
the budget is interpolated linearly in R between the fitted shares, and the crossing is found exactly. Whether
the constraint binds only at the budget or along the whole trajectory is not settled by the sources
([UNVERIFIED]); both are offered, the budget being the default. CMR against the budget follows
R_CMR(T) = a4·T^s4 + b3. The law is per model size: the paper does not transfer CMR across sizes (§6e).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from mixopt.laws.fit import FittedLaw, Form, fit_law, log_grid

TOKEN_UNIT = 2e8  # the paper's unit of training tokens


def _domain_basis(p: Mapping[str, float], X: np.ndarray) -> np.ndarray:
    T = X[:, 0]
    return np.column_stack([T ** p["s1"], np.ones(len(T))])


def _general_basis(p: Mapping[str, float], X: np.ndarray) -> np.ndarray:
    T = X[:, 0]
    return np.column_stack([T ** p["s2"], T ** p["s3"], np.ones(len(T))])


DOMAIN_FORM = Form(name="cmr-domain", linear=("a1", "b1"), nonlinear=("s1",), basis=_domain_basis,
                   free_sign=("a1", "b1"), formula="ΔL_dom = a1·T^s1 + b1", bounds={"s1": (0.01, 3.0)})
GENERAL_FORM = Form(name="cmr-general", linear=("a2", "a3", "b2"), nonlinear=("s2", "s3"), basis=_general_basis,
                    free_sign=("a2", "a3", "b2"), formula="ΔL_gen = a2·T^s2 + a3·T^s3 + b2",
                    bounds={"s2": (0.01, 3.0), "s3": (0.01, 3.0)})
GRID = {"s1": log_grid(0.02, 2.0, 12), "s2": log_grid(0.02, 2.0, 10), "s3": log_grid(0.02, 2.0, 10)}


def _scaling_basis(p: Mapping[str, float], X: np.ndarray) -> np.ndarray:
    return np.column_stack([X[:, 0] ** p["s4"], np.ones(len(X))])


SCALING_FORM = Form(name="cmr-scaling", linear=("a4", "b3"), nonlinear=("s4",), basis=_scaling_basis,
                    free_sign=("a4", "b3", "s4"), formula="R_CMR(T) = a4·T^s4 + b3", bounds={"s4": (-3.0, 3.0)})
SCALING_GRID = {"s4": [-s for s in log_grid(0.02, 2.0, 10)] + log_grid(0.02, 2.0, 10)}  # sign not known


@dataclass
class CMRFit:
    ratios: np.ndarray  # domain shares R with a fit, ascending
    general: list[FittedLaw]  # ΔL_gen(T) per R
    domain: list[FittedLaw]  # ΔL_dom(T) per R
    token_unit: float

    def delta_general(self, tokens: float | np.ndarray) -> np.ndarray:
        """ΔL_gen at `tokens` for every fitted R: shape (len(ratios), len(tokens))."""
        T = np.atleast_1d(np.asarray(tokens, dtype=float)) / self.token_unit
        return np.stack([law.predict(T[:, None]) for law in self.general])

    def delta_domain(self, tokens: float | np.ndarray) -> np.ndarray:
        T = np.atleast_1d(np.asarray(tokens, dtype=float)) / self.token_unit
        return np.stack([law.predict(T[:, None]) for law in self.domain])

    def at_ratio(self, values: np.ndarray, R: float) -> float:
        """Linear interpolation in R of per-ratio values (clamped to the fitted range)."""
        return float(np.interp(R, self.ratios, values))

    def critical_ratio(self, tokens: float, epsilon: float = 0.05, check: str = "final",
                       r_max: float = 1.0) -> float | None:
        """Largest R ≤ r_max with ΔL_gen ≤ ε at `tokens` ("final") or at every fitted step up to it ("trajectory").

        None when even the smallest fitted R breaks the tolerance.
        """
        if check == "final":
            g = self.delta_general(tokens)[:, 0]
        elif check == "trajectory":
            g = self.delta_general(np.geomspace(self.token_unit * 1e-3, tokens, 64)).max(axis=1)
        else:
            raise ValueError("check must be 'final' or 'trajectory'")
        R = self.ratios
        ok = g <= epsilon
        if not ok[0]:
            return None
        hi = min(r_max, float(R[-1]))
        bad = np.flatnonzero(~ok)
        if not len(bad):
            return hi
        j = int(bad[0])  # first infeasible share; the crossing lies between R[j-1] and R[j]
        r0, r1, g0, g1 = R[j - 1], R[j], g[j - 1], g[j]
        cross = float(r0 + (epsilon - g0) * (r1 - r0) / (g1 - g0)) if g1 != g0 else float(r0)
        return min(cross, hi)

    def cmr_curve(self, tokens: np.ndarray, epsilon: float = 0.05, check: str = "final") -> np.ndarray:
        """CMR at each budget (NaN where none is feasible)."""
        return np.array([np.nan if (c := self.critical_ratio(t, epsilon, check)) is None else c
                         for t in np.atleast_1d(tokens)])


def fit_cmr(R: np.ndarray, tokens: np.ndarray, delta_general: np.ndarray, delta_domain: np.ndarray,
            token_unit: float = TOKEN_UNIT, delta: float = 1e-3, bootstrap: int = 0, seed: int = 0,
            min_points: int = 4) -> CMRFit:
    """Fit ΔL_gen(T) and ΔL_dom(T) for every domain share R that has at least `min_points` checkpoints."""
    R, T, g, d = (np.asarray(a, dtype=float) for a in (R, tokens, delta_general, delta_domain))
    if (T <= 0).any():
        raise ValueError("training tokens must be positive (the pre-CPT checkpoint is the reference, not a point)")
    shares, gens, doms = [], [], []
    for i, r in enumerate(np.unique(np.round(R, 9))):
        rows = np.isclose(R, r, atol=1e-9)
        if len(np.unique(T[rows])) < min_points:
            continue
        X = (T[rows] / token_unit)[:, None]
        shares.append(r)
        gens.append(fit_law(GENERAL_FORM, X, g[rows], GRID, delta=delta, n_polish=3, bootstrap=bootstrap,
                            seed=seed + 2 * i))
        doms.append(fit_law(DOMAIN_FORM, X, d[rows], GRID, delta=delta, n_polish=3, bootstrap=bootstrap,
                            seed=seed + 2 * i + 1))
    if len(shares) < 2:
        raise ValueError(f"the CMR law needs at least 2 domain shares with {min_points}+ checkpoints each, "
                         f"got {len(shares)}")
    return CMRFit(ratios=np.array(shares), general=gens, domain=doms, token_unit=token_unit)


def fit_cmr_scaling(tokens: np.ndarray, cmr: np.ndarray, token_unit: float = TOKEN_UNIT,
                    bootstrap: int = 0, seed: int = 0) -> FittedLaw:
    """R_CMR(T) = a4·T^s4 + b3 on (budget, CMR) pairs (NaN CMRs dropped)."""
    T, c = np.asarray(tokens, dtype=float), np.asarray(cmr, dtype=float)
    keep = np.isfinite(c)
    if keep.sum() < 3:
        raise ValueError("the CMR scaling law needs CMR at 3 or more budgets")
    return fit_law(SCALING_FORM, (T[keep] / token_unit)[:, None], c[keep], SCALING_GRID,
                   delta=1e-3, bootstrap=bootstrap, seed=seed)
