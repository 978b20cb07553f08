"""Laws of loss in model size N, tokens D and mixture w, fitted on proxies at two or three (N, D) scales.

Per validation domain d (one loss column), two forms:

- additive: L_d(N, D, w) = E_d + A_d·(N/N0)^−α + B_d·(D/D0)^−β + k_d·exp(t_d·w).
  The mixture term does not depend on scale, so the optimal mixture is the same at every (N, D): a baseline
  that says "the proxies' optimum is the target's".
- joint: L_d(N, D, w) = E_d + A_d·(N/N0)^−α + B_d·(D/D0)^−β + k_d·(C/C0)^−γ_d·exp(t_d·w), with C = N·D.
  One extra parameter per domain: how fast that domain's mixture-sensitive loss shrinks (γ_d > 0) or grows
  (γ_d < 0) with training compute. The optimum of the aggregate Σ_d s_d·L_d is a trade-off between domains
  weighted by s_d·k_d·(C/C0)^−γ_d; when the γ_d differ, those weights change with scale and so does the
  optimal mixture (domains whose mixture term fades with scale lose their pull). With two scales γ_d is fixed
  by the ratio of the mixture term's amplitude at the two scales, so the form is fittable from two or three
  scales, unlike a t_d that varies with log N (K more parameters per domain).

Fitting is two-stage and deterministic. (1) Mixture term: with one free offset c_l per scale level l (a fixed
effect that absorbs E + A/N^α + B/D^β exactly), the law is linear in (c_l, k_d) for given (t_d, γ_d); the
offsets are level means and k_d ≥ 0 a within-level slope, both in closed form, so L-BFGS only searches t_d
(and γ_d), with the exact gradient (envelope theorem), from the data mixing law's starts. (2) Scale term: the
offsets c_l are fitted by non-negative least squares to E + A·(N/N0)^−α + B·(D/D0)^−β, exponents shared by
every domain and fitted on a grid where the levels leave degrees of freedom, else fixed at the Chinchilla
values (α 0.34, β 0.28). A term whose axis does not vary across the levels is dropped (nothing to fit it
from); with two levels that differ in both N and D only the N term is kept (D taken to move with N, as in the
proxies).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize, nnls
from threadpoolctl import threadpool_limits

from mixopt.laws.fit import search_1d
from mixopt.laws.mixing import T_BOUND, T_CLIP, MixingLaw, _starts

FORMS = ("additive", "joint")
GAMMA_BOUND = 2.0  # |γ| ≤ 2: the mixture term changes at most C² between scales — well beyond real fits
EXP_RANGE = (0.05, 1.5)  # plausible scaling exponents of N and D, searched when the levels allow


@dataclass
class OffsetLaw:
    """E_d + A_d·(N/N0)^−α + B_d·(D/D0)^−β for every loss column d (α, β shared)."""

    E: np.ndarray
    A: np.ndarray
    B: np.ndarray
    alpha: float
    beta: float
    N0: float
    D0: float
    terms: tuple[str, ...]  # which of "N", "D" were fitted
    fitted_exponents: bool
    notes: list[str] = field(default_factory=list)

    def predict(self, N: np.ndarray, D: np.ndarray) -> np.ndarray:
        """Offsets (n, m) at sizes N and tokens D (arrays of length n)."""
        N, D = np.atleast_1d(np.asarray(N, dtype=float)), np.atleast_1d(np.asarray(D, dtype=float))
        out = np.broadcast_to(self.E, (len(N), len(self.E))).copy()
        if "N" in self.terms:
            out += (N[:, None] / self.N0) ** -self.alpha * self.A[None, :]
        if "D" in self.terms:
            out += (D[:, None] / self.D0) ** -self.beta * self.B[None, :]
        return out


def _offset_basis(N: np.ndarray, D: np.ndarray, terms: tuple[str, ...], alpha: float, beta: float, N0: float,
                  D0: float) -> np.ndarray:
    cols = [np.ones(len(N))]
    if "N" in terms:
        cols.append((N / N0) ** -alpha)
    if "D" in terms:
        cols.append((D / D0) ** -beta)
    return np.column_stack(cols)


def _offset_fit(B: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, float]:
    """NNLS per column of C (levels × m) on basis B; coefficients (n_basis, m) and the total residual sum."""
    coef = np.zeros((B.shape[1], C.shape[1]))
    total = 0.0
    for j in range(C.shape[1]):
        coef[:, j], res = nnls(B, C[:, j])
        total += res * res
    return coef, total


def fit_offsets(N: np.ndarray, D: np.ndarray, C: np.ndarray, alpha: float = 0.34, beta: float = 0.28
                ) -> OffsetLaw:
    """Scale law of the per-level offsets C (levels × m) at level sizes N and tokens D."""
    N, D, C = np.asarray(N, dtype=float), np.asarray(D, dtype=float), np.asarray(C, dtype=float)
    N0, D0 = float(np.exp(np.log(N).mean())), float(np.exp(np.log(D).mean()))
    vary_n, vary_d = np.ptp(np.log(N)) > 1e-6, np.ptp(np.log(D)) > 1e-6
    terms: tuple[str, ...] = ("N",) if vary_n else ()
    notes = []
    if vary_d and (not vary_n or len(N) >= 3):
        terms += ("D",)
    elif vary_d:
        notes.append("two scales that differ in both size and tokens: the scale term is fitted in N only "
                     "(tokens assumed to grow with size as they do across the proxies)")
    fit_exp = len(N) > 1 + len(terms) and len(terms) > 0
    if fit_exp and terms == ("N",):
        alpha = search_1d(lambda a: _offset_fit(_offset_basis(N, D, terms, a, beta, N0, D0), C)[1], *EXP_RANGE)
    elif fit_exp and terms == ("D",):
        beta = search_1d(lambda b: _offset_fit(_offset_basis(N, D, terms, alpha, b, N0, D0), C)[1], *EXP_RANGE)
    elif fit_exp:
        grid = np.linspace(*EXP_RANGE, 15)
        alpha, beta = min(itertools.product(grid, grid), key=lambda ab: _offset_fit(
            _offset_basis(N, D, terms, ab[0], ab[1], N0, D0), C)[1])
        alpha, beta = float(alpha), float(beta)
    coef, _ = _offset_fit(_offset_basis(N, D, terms, alpha, beta, N0, D0), C)
    zero = np.zeros(C.shape[1])
    A = coef[1] if "N" in terms else zero
    B = coef[terms.index("D") + 1] if "D" in terms else zero
    return OffsetLaw(E=coef[0], A=A, B=B, alpha=float(alpha), beta=float(beta), N0=N0, D0=D0, terms=terms,
                     fitted_exponents=bool(fit_exp), notes=notes)


@dataclass
class ScaleMixLaw:
    """A fitted additive or joint law over m loss columns and K training domains."""

    form: str
    t: np.ndarray  # (m, K), rows sum to 0
    k: np.ndarray  # (m,) amplitude at compute C0
    gamma: np.ndarray  # (m,) 0 for the additive form
    C0: float
    offsets: OffsetLaw
    names: list[str]
    shares: np.ndarray | None = None
    levels: int = 0

    def amplitude(self, N: np.ndarray, D: np.ndarray) -> np.ndarray:
        C = np.atleast_1d(np.asarray(N, dtype=float)) * np.atleast_1d(np.asarray(D, dtype=float))
        return self.k[None, :] * (C[:, None] / self.C0) ** -self.gamma[None, :]

    def predict(self, W: np.ndarray, N: np.ndarray, D: np.ndarray) -> np.ndarray:
        """Losses (n, m) of mixtures W (n, K) at sizes N and tokens D (length n each)."""
        W = np.atleast_2d(np.asarray(W, dtype=float))
        e = np.exp(np.clip(W @ self.t.T, -T_CLIP, T_CLIP))
        return self.offsets.predict(N, D) + self.amplitude(N, D) * e

    def aggregate(self, W: np.ndarray, N: np.ndarray, D: np.ndarray) -> np.ndarray:
        L = self.predict(W, N, D)
        s = np.full(L.shape[1], 1 / L.shape[1]) if self.shares is None else self.shares
        return L @ s

    def at(self, N: float, D: float) -> MixingLaw:
        """The law at one scale: a data mixing law c + k·exp(t·w), which `optimise_mixture` solves exactly."""
        c = self.offsets.predict(np.array([N]), np.array([D]))[0]
        return MixingLaw(c=c, k=self.amplitude(np.array([N]), np.array([D]))[0], t=self.t.copy(),
                         names=list(self.names), shares=self.shares)

    def summary(self, domains: list[str]) -> dict:
        o = self.offsets
        out: dict = {"form": self.form, "C0": self.C0, "alpha": o.alpha, "beta": o.beta, "N0": o.N0, "D0": o.D0,
                     "scale_terms": list(o.terms), "exponents_fitted": o.fitted_exponents, "columns": {}}
        for i, name in enumerate(self.names):
            out["columns"][name] = {"E": float(o.E[i]), "A": float(o.A[i]), "B": float(o.B[i]),
                                    "k": float(self.k[i]), "gamma": float(self.gamma[i]),
                                    "t": {d: float(self.t[i, j]) for j, d in enumerate(domains)}}
        return out


def scale_levels(N: np.ndarray, D: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (N, D) scales (matched on a log scale to 1e-6) and each row's level."""
    N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
    key = np.round(np.column_stack([np.log(N), np.log(D)]), 6)
    _, first, idx = np.unique(key, axis=0, return_index=True, return_inverse=True)
    return N[first], D[first], idx.ravel()


class _Column:
    """The projected objective of one loss column: rss(t, γ) with the level offsets and k ≥ 0 in closed form."""

    def __init__(self, W: np.ndarray, y: np.ndarray, idx: np.ndarray, s: np.ndarray, joint: bool) -> None:
        self.W, self.y, self.idx, self.s, self.joint = W, y, idx, s, joint
        self.counts = np.bincount(idx).astype(float)
        self.y_dm = y - self._means(y)

    def _means(self, v: np.ndarray) -> np.ndarray:
        return (np.bincount(self.idx, weights=v) / self.counts)[self.idx]

    def solve(self, t: np.ndarray, g: float) -> tuple[float, float, np.ndarray, np.ndarray]:
        """rss, k, x (the mixture basis per row), residuals."""
        x = np.exp(np.clip(self.W @ t, -T_CLIP, T_CLIP) - g * self.s)
        x_dm = x - self._means(x)
        k = max(0.0, float(x_dm @ self.y_dm) / max(float(x_dm @ x_dm), 1e-300))
        r = self.y_dm - k * x_dm
        return float(r @ r), k, x, r

    def objective(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        u, g = (z[:-1], z[-1]) if self.joint else (z, 0.0)
        t = u - u.mean()
        rss, k, x, r = self.solve(t, g)
        gt = -2.0 * k * (self.W.T @ (r * x))
        grad = gt - gt.mean()
        if self.joint:
            grad = np.append(grad, 2.0 * k * float((r * x) @ self.s))
        return rss, grad

    def offsets(self, t: np.ndarray, g: float, levels: int) -> tuple[float, np.ndarray]:
        _, k, x, _ = self.solve(t, g)
        c = np.bincount(self.idx, weights=self.y - k * x, minlength=levels) / np.maximum(
            np.bincount(self.idx, minlength=levels), 1)
        return k, c


def _best(col: _Column, starts: list[tuple[np.ndarray, float]], K: int, maxiter: int, joint: bool, lo: np.ndarray,
          hi: np.ndarray) -> tuple[float, np.ndarray, float]:
    """The lowest residual sum over L-BFGS-B runs from the starts: (rss, t, γ)."""
    best = (np.inf, np.zeros(K), 0.0)
    bounds = list(zip(lo, hi, strict=True))
    for t0, g0 in starts:
        z0 = np.clip(np.append(t0, g0) if joint else t0, lo, hi)
        res = minimize(col.objective, z0, jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": maxiter, "gtol": 1e-12, "ftol": 1e-15})
        u, g = (res.x[:-1], float(res.x[-1])) if joint else (res.x, 0.0)
        if res.fun < best[0]:
            best = (float(res.fun), u - u.mean(), g)
    return best


def fit_scalemix(W: np.ndarray, N: np.ndarray, D: np.ndarray, L: np.ndarray, form: str,
                 names: list[str] | None = None, shares: np.ndarray | None = None, alpha: float = 0.34,
                 beta: float = 0.28, maxiter: int = 300) -> ScaleMixLaw:
    """Fit the `additive` or `joint` law to runs: mixtures W (n × K), sizes N, tokens D (n), losses L (n × m)."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; use one of {', '.join(FORMS)}")
    W, L = np.atleast_2d(np.asarray(W, dtype=float)), np.asarray(L, dtype=float)
    L = L[:, None] if L.ndim == 1 else L
    N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
    if not (len(W) == len(N) == len(D) == len(L)):
        raise ValueError("mixtures, sizes, tokens and losses must have one row per run")
    if not (np.isfinite(W).all() and np.isfinite(L).all() and (N > 0).all() and (D > 0).all()):
        raise ValueError("mixtures and losses must be finite and sizes and tokens positive")
    Nl, Dl, idx = scale_levels(N, D)
    if len(Nl) < 2:
        raise ValueError("the runs come at one (N, D) scale; a law across scales needs two or more")
    K, joint = W.shape[1], form == "joint"
    if len(W) < K + len(Nl) + int(joint) + 1:
        raise ValueError(f"{len(W)} runs are too few for the {form} law over {K} domains at {len(Nl)} scales")
    C0 = float(np.exp(np.log(Nl * Dl).mean()))
    s = np.log(N * D / C0)
    m = L.shape[1]
    t, k, gam, C = np.zeros((m, K)), np.zeros(m), np.zeros(m), np.zeros((len(Nl), m))
    bounds = [(-T_BOUND, T_BOUND)] * K + ([(-GAMMA_BOUND, GAMMA_BOUND)] if joint else [])
    lo, hi = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
    # One BLAS thread: these are tiny problems, and on a busy machine threaded BLAS calls inside L-BFGS-B
    # mostly wait on each other (50× slower measured on 2 shared cores).
    with threadpool_limits(1):
        for i in range(m):
            col = _Column(W, L[:, i], idx, s, joint)
            starts = [(t0, 0.0) for t0 in _starts(W, col.y_dm)]
            if joint:  # the additive optimum, then a mixture term shrinking or growing with scale
                add = _best(_Column(W, L[:, i], idx, s, False), starts, K, maxiter, False, lo[:K], hi[:K])
                starts = [(add[1], g0) for g0 in (0.0, 0.3, -0.3)] + starts
            _, t[i], gam[i] = _best(col, starts, K, maxiter, joint, lo, hi)
            k[i], C[:, i] = col.offsets(t[i], gam[i], len(Nl))
    offsets = fit_offsets(Nl, Dl, C, alpha=alpha, beta=beta)
    return ScaleMixLaw(form=form, t=t, k=k, gamma=gam, C0=C0, offsets=offsets,
                       names=names or [f"loss_{i}" for i in range(m)],
                       shares=None if shares is None else np.asarray(shares, dtype=float), levels=len(Nl))
