"""The static log-linear mixing law of the LMO framework (Aioli, arXiv 2411.05735; METHODS.md §4a, §4d):

    L_i(p) = c_i + b_i · exp(−Σ_j A_ij p_j)

one law per validation domain i, over mixtures p on the simplex. The Aioli paper fits it to a sweep of static
runs to compare mixing methods (and to show the LMO laws fit), and the data-mixing-law method minimises the
mean predicted loss over the simplex.

Fitting: least squares per validation domain from several starts — the official init (c = 1, b = 1, A = −1,
as its `curve_fit` call) and two log-linear regressions of log(±(L − c₀)) on p — keeping the best. Because
Σ_j p_j = 1, adding k to a row A_i only rescales b_i by e^{−k}; fitted rows are reported with mean 0 (predictions
are unchanged). Optimising: the official code runs Nelder–Mead on softmax(z); here SLSQP works on p directly,
from several starts, so optima on the boundary and per-domain caps are exact.

Needs at least m + 2 mixtures for m domains (m + 1 identifiable parameters per law, plus one degree of freedom).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares, minimize

EXP_CLIP = 50.0


@dataclass
class LogLinearLaw:
    c: np.ndarray  # (n_out,)
    b: np.ndarray  # (n_out,)
    A: np.ndarray  # (n_out, m), rows with mean 0
    rmse: np.ndarray  # (n_out,) in-sample root-mean-square error of each law
    domains: list[str] | None = None  # the mixture's domains (columns of A)
    targets: list[str] | None = None  # the validation domains (rows)

    def predict(self, P: np.ndarray) -> np.ndarray:
        """Predicted losses (n, n_out) for mixtures P (n, m)."""
        P = np.atleast_2d(np.asarray(P, dtype=float))
        return self.c[None, :] + self.b[None, :] * np.exp(np.clip(-P @ self.A.T, -EXP_CLIP, EXP_CLIP))

    def objective(self, P: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Mean predicted loss over the validation domains (or the weighted sum), per mixture."""
        L = self.predict(P)
        return L.mean(axis=1) if weights is None else L @ np.asarray(weights, dtype=float)

    def optimise(self, weights: np.ndarray | None = None, caps: np.ndarray | None = None,
                 starts: np.ndarray | None = None, seed: int = 0, n_random: int = 8) -> tuple[np.ndarray, float]:
        """The mixture minimising `objective` over the simplex (optionally with p_j ≤ caps_j); its value."""
        m = self.A.shape[1]
        hi = np.ones(m) if caps is None else np.minimum(1.0, np.asarray(caps, dtype=float))
        if hi.sum() < 1 - 1e-9:
            raise ValueError(f"log-linear law: the caps sum to {hi.sum():.4g} < 1, so no mixture satisfies them")
        rng = np.random.default_rng(seed)
        init = [np.full(m, 1.0 / m), *rng.dirichlet(np.ones(m), size=n_random)]
        if starts is not None:
            init += list(np.atleast_2d(starts))
        best_p, best_v = None, np.inf
        for p0 in init:
            p0 = _into_box(np.asarray(p0, dtype=float), hi)
            res = minimize(lambda p: float(self.objective(p[None, :], weights)[0]), p0, method="SLSQP",
                           bounds=[(0.0, float(h)) for h in hi],
                           constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1.0}],
                           options={"maxiter": 500, "ftol": 1e-12})
            p = _into_box(np.clip(res.x, 0, None), hi)
            v = float(self.objective(p[None, :], weights)[0])
            if v < best_v:
                best_p, best_v = p, v
        assert best_p is not None
        return best_p, best_v


def _into_box(p: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Project onto {0 ≤ p ≤ hi, Σp = 1} (bisection on the shift of a clipped simplex projection)."""
    lo_t, hi_t = float((p - hi).min()) - 1.0, float(p.max())
    for _ in range(100):
        t = (lo_t + hi_t) / 2
        if np.clip(p - t, 0, hi).sum() > 1:
            lo_t = t
        else:
            hi_t = t
    q = np.clip(p - (lo_t + hi_t) / 2, 0, hi)
    return q / q.sum()


def _sum_zero_basis(m: int) -> np.ndarray:
    """Orthonormal basis (m, m−1) of the vectors that sum to 0: A_i = Q·u_i fixes the gauge of each row."""
    q, _ = np.linalg.qr(np.eye(m) - 1.0 / m)
    return q[:, : m - 1]


def _residuals(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return theta[0] + theta[1] * np.exp(np.clip(-X @ theta[2:], -EXP_CLIP, EXP_CLIP)) - y


def _jacobian(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    e = np.exp(np.clip(-X @ theta[2:], -EXP_CLIP, EXP_CLIP))
    return np.column_stack([np.ones_like(e), e, -theta[1] * e[:, None] * X])


def _starts(X: np.ndarray, y: np.ndarray, Q: np.ndarray) -> list[np.ndarray]:
    """Initial (c, b, u): the official curve_fit init and log-linear regressions for b > 0 and b < 0."""
    m = Q.shape[0]
    starts = [np.concatenate([[1.0, np.exp(1.0)], Q.T @ -np.ones(m)])]  # c = 1, b = 1, A = −1 in this gauge
    span = max(float(np.ptp(y)), 1e-3)
    design = np.column_stack([np.ones(len(y)), X])
    for sign, c0 in ((1.0, float(y.min()) - 0.5 * span), (-1.0, float(y.max()) + 0.5 * span)):
        z = np.log(np.maximum(sign * (y - c0), 1e-12))  # log|L − c0| = log|b| − X·u
        coef = np.linalg.lstsq(design, z, rcond=None)[0]
        starts.append(np.concatenate([[c0, sign * np.exp(coef[0])], -coef[1:]]))
    return starts


def fit_loglinear(P: np.ndarray, L: np.ndarray, domains: list[str] | None = None,
                  targets: list[str] | None = None) -> LogLinearLaw:
    """Fit one law per column of L (n, n_out) — or a single law for a 1-D L — on mixtures P (n, m)."""
    P = np.atleast_2d(np.asarray(P, dtype=float))
    L = np.asarray(L, dtype=float)
    L = L[:, None] if L.ndim == 1 else L
    n, m = P.shape
    if L.shape[0] != n:
        raise ValueError(f"log-linear law: {n} mixtures but {L.shape[0]} rows of losses")
    if n < m + 2:
        raise ValueError(f"log-linear law: fitting {m} domains needs at least {m + 2} mixtures, got {n}")
    if not (np.isfinite(P).all() and np.isfinite(L).all()):
        raise ValueError("log-linear law: mixtures and losses must be finite numbers")
    Q = _sum_zero_basis(m)
    X = P @ Q
    c, b, A, rmse = (np.zeros(L.shape[1]), np.zeros(L.shape[1]), np.zeros((L.shape[1], m)),
                     np.zeros(L.shape[1]))
    for i in range(L.shape[1]):
        y = L[:, i]
        best = None
        for theta0 in _starts(X, y, Q):
            res = least_squares(_residuals, theta0, jac=_jacobian, args=(X, y), method="trf",
                                max_nfev=200 * (m + 2))
            if best is None or res.cost < best.cost:
                best = res
        assert best is not None
        c[i], b[i], A[i] = best.x[0], best.x[1], Q @ best.x[2:]
        rmse[i] = float(np.sqrt(2 * best.cost / n))
    return LogLinearLaw(c=c, b=b, A=A, rmse=rmse, domains=domains, targets=targets)
