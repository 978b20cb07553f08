"""Variable projection: the laws here are linear in their scale parameters once the exponents are fixed.

L = c + k·f(x; θ) with c, k ≥ 0 is, for fixed θ, a two-column non-negative least-squares problem with an exact
solution. Fitting then searches θ alone (a grid, then a local optimiser), which needs no initial guesses for
c and k, has far fewer local minima than optimising all parameters at once, and is deterministic. The papers fit
all parameters jointly with L-BFGS from thousands of random starts; this reaches the same optima with a fraction
of the work (tests/test_laws.py recovers planted parameters).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize, nnls


def scale_fit(y: np.ndarray, basis: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """min ||W(y − [1, basis]·(c, k))||² over c, k ≥ 0; returns ((c, k), residual sum of squares)."""
    A = np.column_stack([np.ones(len(y)), basis])
    if weights is not None:
        A, y = A * weights[:, None], y * weights
    x, r = nnls(A, y)
    return x, float(r ** 2)


def search(objective: Callable[[np.ndarray], float], starts: list[np.ndarray],
           bounds: list[tuple[float, float]] | None = None) -> np.ndarray:
    """Best local optimum of `objective` over the best few grid starts (L-BFGS-B, numerical gradients)."""
    scored = sorted(starts, key=objective)[:3]
    best, best_val = scored[0], objective(scored[0])
    for x0 in scored:
        res = minimize(objective, x0, method="L-BFGS-B", bounds=bounds)
        if res.fun < best_val:
            best, best_val = res.x, res.fun
    return np.asarray(best, dtype=float)
