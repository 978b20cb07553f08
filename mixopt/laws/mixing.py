"""The data mixing law (Ye et al., arXiv 2403.16952; docs/methods.md §7): L_i(r) = c_i + k_i·exp(Σ_j t_ij·r_j).

One law per validation domain i; the objective is their aggregate Σ_i s_i·L_i with known validation shares s_i
(explicit aggregation, §7a), or their mean.

Fitting is variable projection: for fixed t_i the law is linear in (c_i, k_i ≥ 0), whose least-squares values
have a closed form (`nnls2`), so L-BFGS only searches t_i, with the exact gradient (by the envelope theorem the
gradient of the projected residual is the partial derivative at the optimal c, k). Because Σ_j r_j = 1, adding
a constant to every t_ij only rescales k_i: t_i is fitted and reported with Σ_j t_ij = 0. Starts: one per domain
j (t_ij ≪ 0: domain j lowers loss i), and a log-linear regression of log(L − c) on r. The paper fits all
parameters from thousands of random starts; this reaches its leave-one-out errors in milliseconds per fit
(benchmarks/laws_mixinglaws.py).

The aggregate Σ_i s_i·k_i·exp(t_i·r) is convex in r (k_i ≥ 0), so minimising it over the simplex with caps is a
convex problem: one SLSQP solve finds the global optimum.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from mixopt.laws.fit import nnls2

T_CLIP = 60.0  # |t·r| beyond this is numerically meaningless (exp overflow)
# Box on the free exponents u (t = u − mean u): |t_ij − t_il| ≤ 20, i.e. moving all mass between two domains
# changes a reducible loss by at most e^20. Real fits stay well inside (the paper's t reach about −16); without
# a bound, laws over 7 domains fitted to 19 runs can put t ≈ 100 on a weight the data barely vary and
# extrapolate to losses in the thousands (RedPajama 160M, benchmarks/laws_mixinglaws.py).
T_BOUND = 10.0


@dataclass
class MixingLaw:
    c: np.ndarray  # (m,) per validation domain
    k: np.ndarray  # (m,)
    t: np.ndarray  # (m, K), rows sum to 0
    names: list[str]
    shares: np.ndarray | None = None  # validation shares for the aggregate; None = mean
    samples: list[MixingLaw] = field(default_factory=list)  # bootstrap refits

    def predict(self, R: np.ndarray) -> np.ndarray:
        """Losses (n, m) of each validation domain for mixtures R (n, K)."""
        R = np.atleast_2d(np.asarray(R, dtype=float))
        return self.c[None, :] + self.k[None, :] * np.exp(np.clip(R @ self.t.T, -T_CLIP, T_CLIP))

    def aggregate(self, R: np.ndarray) -> np.ndarray:
        """The objective Σ_i s_i·L_i(r) per mixture (n,)."""
        L = self.predict(R)
        s = np.full(L.shape[1], 1 / L.shape[1]) if self.shares is None else self.shares
        return L @ s

    def aggregate_interval(self, R: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray] | None:
        if not self.samples:
            return None
        P = np.stack([s.aggregate(R) for s in self.samples])
        q = (1 - level) / 2
        return np.quantile(P, q, axis=0), np.quantile(P, 1 - q, axis=0)

    def summary(self, domains: list[str]) -> dict[str, dict]:
        """Fitted parameters per validation domain, with 95% bootstrap intervals where available."""
        out = {}
        for i, name in enumerate(self.names):
            entry = {"c": _with_interval(self.c[i], [s.c[i] for s in self.samples]),
                     "k": _with_interval(self.k[i], [s.k[i] for s in self.samples]),
                     "t": {d: _with_interval(self.t[i, j], [s.t[i, j] for s in self.samples])
                           for j, d in enumerate(domains)}}
            out[name] = entry
        return out


def _with_interval(v: float, draws: list[float]) -> dict[str, float]:
    if not draws:
        return {"value": float(v)}
    return {"value": float(v), "low": float(np.quantile(draws, 0.025)), "high": float(np.quantile(draws, 0.975))}


def _projected(t: np.ndarray, R: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, float, float]:
    """Residual sum of squares of the best (c, k ≥ 0) for exponents t, its gradient in t, and c, k."""
    b = np.exp(np.clip(R @ t, -T_CLIP, T_CLIP))
    c, k, rss = nnls2(b[None, :], y[None, :])
    r = y - c[0] - k[0] * b
    grad = -2.0 * k[0] * (R.T @ (r * b))
    return float(rss[0]), grad, float(c[0]), float(k[0])


def _starts(R: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    K = R.shape[1]
    starts = [-4.0 * np.eye(K)[j] for j in range(K)]
    lo, span = float(y.min()), float(np.ptp(y)) or 1.0
    A = np.column_stack([np.ones(len(y)), R])
    for frac in (0.5, 2.0):  # log-linear guess for two floors c below the lowest loss
        z = np.log(np.maximum(y - (lo - frac * span), 1e-12))
        coef = np.linalg.lstsq(A, z, rcond=None)[0]
        starts.append(coef[1:])
    return [s - s.mean() for s in starts]


def _fit_one(R: np.ndarray, y: np.ndarray, starts: list[np.ndarray], maxiter: int) -> tuple[float, float, np.ndarray]:
    """Best (c, k, t) for one validation domain over the starts."""
    best = (np.inf, 0.0, 0.0, starts[0])
    for t0 in starts:
        def f(u: np.ndarray) -> tuple[float, np.ndarray]:
            t = u - u.mean()
            rss, g, _, _ = _projected(t, R, y)
            return rss, g - g.mean()
        res = minimize(f, np.clip(t0, -T_BOUND, T_BOUND), jac=True, method="L-BFGS-B",
                       bounds=[(-T_BOUND, T_BOUND)] * len(t0), options={"maxiter": maxiter, "gtol": 1e-12,
                                                                       "ftol": 1e-15})
        t = res.x - res.x.mean()
        rss, _, c, k = _projected(t, R, y)
        if rss < best[0]:
            best = (rss, c, k, t)
    return best[1], best[2], best[3]


def _check(R: np.ndarray, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    R = np.atleast_2d(np.asarray(R, dtype=float))
    L = np.asarray(L, dtype=float)
    if L.ndim == 1:
        L = L[:, None]
    if len(R) != len(L):
        raise ValueError(f"{len(R)} mixtures but {len(L)} rows of losses")
    if not (np.isfinite(R).all() and np.isfinite(L).all()):
        raise ValueError("mixtures and losses must be finite (drop failed runs before fitting)")
    if len(R) < R.shape[1] + 2:
        raise ValueError(f"a mixing law over {R.shape[1]} domains has {R.shape[1] + 1} parameters per validation "
                         f"domain and needs at least {R.shape[1] + 2} runs, got {len(R)}")
    return R, L


def fit_mixing_law(R: np.ndarray, L: np.ndarray, names: list[str] | None = None, shares: np.ndarray | None = None,
                   warm: MixingLaw | None = None, maxiter: int = 300, bootstrap: int = 0, seed: int = 0
                   ) -> MixingLaw:
    """Fit one law per column of L (n mixtures × m validation domains) from mixtures R (n × K).

    `warm`: a law to start from (and only from: used for leave-one-out folds and bootstrap refits).
    `bootstrap`: refits on mixtures drawn with replacement, kept in `samples` for intervals.
    """
    R, L = _check(R, L)
    m = L.shape[1]
    if shares is not None:
        shares = np.asarray(shares, dtype=float)
        if shares.shape != (m,) or (shares < 0).any() or shares.sum() <= 0:
            raise ValueError(f"validation shares must be {m} non-negative numbers with a positive sum")
    c, k, t = np.zeros(m), np.zeros(m), np.zeros((m, R.shape[1]))
    for i in range(m):
        starts = [warm.t[i]] if warm is not None else _starts(R, L[:, i])
        c[i], k[i], t[i] = _fit_one(R, L[:, i], starts, maxiter)
    law = MixingLaw(c=c, k=k, t=t, names=names or [f"loss_{i}" for i in range(m)], shares=shares)
    if bootstrap:
        rng = np.random.default_rng(seed)
        for _ in range(bootstrap):
            idx = rng.integers(0, len(R), len(R))
            law.samples.append(fit_mixing_law(R[idx], L[idx], law.names, shares, warm=law, maxiter=maxiter))
    return law


def loo_mixing_law(R: np.ndarray, L: np.ndarray, maxiter: int = 300) -> np.ndarray:
    """Leave-one-mixture-out predictions (n × m): each fold starts from the full fit and from scratch."""
    R, L = _check(R, L)
    if len(R) < R.shape[1] + 3:
        raise ValueError(f"leave-one-out needs at least {R.shape[1] + 3} runs, got {len(R)}")
    full = fit_mixing_law(R, L, maxiter=maxiter)
    pred = np.zeros_like(L)
    for n in range(len(R)):
        keep = np.arange(len(R)) != n
        for i in range(L.shape[1]):
            starts = [full.t[i], *_starts(R[keep], L[keep, i])[-2:]]
            c, k, t = _fit_one(R[keep], L[keep, i], starts, maxiter)
            pred[n, i] = c + k * np.exp(np.clip(R[n] @ t, -T_CLIP, T_CLIP))
    return pred


def loo_linear(R: np.ndarray, L: np.ndarray) -> np.ndarray:
    """Leave-one-out predictions of the linear baseline L = a + b·r (least squares, exact via the hat matrix)."""
    R, L = _check(R, L)
    A = np.column_stack([np.ones(len(R)), R[:, :-1]])  # the last weight is 1 − Σ the others
    H = A @ np.linalg.pinv(A)
    fit = H @ L
    h = np.clip(np.diag(H), None, 1 - 1e-9)
    return L - (L - fit) / (1 - h)[:, None]


def optimise_mixture(law: MixingLaw, caps: np.ndarray | None = None, lower: np.ndarray | None = None,
                     start: np.ndarray | None = None, kl_lambda: float = 0.0, prior: np.ndarray | None = None
                     ) -> np.ndarray:
    """argmin of the aggregate law + kl_lambda·KL(r ‖ prior) over the simplex with 0 ≤ lower ≤ r ≤ caps.

    Both terms are convex in r, so the problem stays convex; kl_lambda = 0 is the law's own optimum."""
    K = law.t.shape[1]
    hi = np.ones(K) if caps is None else np.clip(np.asarray(caps, dtype=float), 0, 1)
    lo = np.zeros(K) if lower is None else np.clip(np.asarray(lower, dtype=float), 0, 1)
    if hi.sum() < 1 - 1e-9 or lo.sum() > 1 + 1e-9 or (lo > hi + 1e-12).any():
        raise ValueError("no mixture satisfies the bounds: the caps must sum to at least 1 and the lower bounds "
                         "to at most 1")
    s = np.full(len(law.c), 1 / len(law.c)) if law.shares is None else law.shares
    a = s * law.k

    q = np.maximum(np.full(K, 1 / K) if prior is None else np.asarray(prior, dtype=float), 1e-12)

    def f(r: np.ndarray) -> tuple[float, np.ndarray]:
        e = np.exp(np.clip(law.t @ r, -T_CLIP, T_CLIP)) * a
        val, grad = float(e.sum()), law.t.T @ e
        if kl_lambda > 0:
            rr = np.maximum(r, 1e-12)
            val += kl_lambda * float(np.sum(rr * np.log(rr / q)))
            grad = grad + kl_lambda * (np.log(rr / q) + 1)
        return val, grad

    x0 = np.clip(np.full(K, 1 / K) if start is None else np.asarray(start, dtype=float), lo, hi)
    x0 = _feasible(x0, lo, hi)
    res = minimize(f, x0, jac=True, method="SLSQP", bounds=list(zip(lo, hi, strict=True)),
                   constraints=[{"type": "eq", "fun": lambda r: r.sum() - 1, "jac": lambda r: np.ones(K)}],
                   options={"maxiter": 500, "ftol": 1e-14})
    r = _feasible(np.clip(res.x, lo, hi), lo, hi)
    return r if f(r)[0] <= f(x0)[0] else x0


def _feasible(r: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Move r onto the simplex within [lo, hi]: spread the missing (or surplus) mass by the room left."""
    r = np.clip(r, lo, hi)
    for _ in range(len(r) + 1):
        gap = 1.0 - r.sum()
        if abs(gap) < 1e-13:
            break
        room = (hi - r) if gap > 0 else (r - lo)
        if room.sum() <= 0:
            break
        r = np.clip(r + gap * room / room.sum(), lo, hi)
    return r
