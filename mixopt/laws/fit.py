"""The law-fitting core shared by every law in this package.

Every law here is linear in a few scale coefficients once its exponents are fixed: L = Σ_j a_j·b_j(x; θ), e.g.
D-CPT's E + A·N^−α + B·r^η·D^−β + C·(r+ε)^−γ is linear in (E, A, B, C) for given (α, β, γ, η, ε). A fit is
therefore done in three stages, each cheap and deterministic:

1. grid of starts: for every point θ of a grid over the exponents, the coefficients come from non-negative
   least squares (variable projection), and every grid point is scored — this needs no initial guesses for
   the coefficients, and it is what makes the grid dense enough to find the basin;
2. polish: the best few grid points are the starts of L-BFGS on the Huber loss over *all* parameters, with
   positive parameters optimised as log-parameters (so α, ε, E, … never leave their domain);
3. selection: when held-out points are given, the polished candidate with the lowest held-out loss wins and
   is refitted on every point; otherwise the lowest training loss wins.

Bootstrap refits on resampled points give percentile intervals for every parameter and for predictions.
The papers fit all parameters jointly from thousands of random starts; the projected grid reaches the same
basins with a few hundred cheap linear solves (tests/test_laws.py recovers planted parameters).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize, minimize_scalar, nnls

Basis = Callable[[Mapping[str, float], np.ndarray], np.ndarray]


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber penalty: r²/2 within ±δ, linear beyond (outlying proxies pull the fit less than squares)."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def r_squared(y: np.ndarray, pred: np.ndarray) -> float:
    y = np.asarray(y, dtype=float)
    ss = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else float("nan")


def nnls2(X: np.ndarray, Y: np.ndarray, M: np.ndarray | None = None, W: np.ndarray | None = None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Many problems at once: min_{c,k≥0} Σ_n M·W·(Y − c − k·X)² for every row of X, Y (shape P × n).

    M masks missing points (0/1), W weights them. Closed form: the unconstrained line, and where that gives
    c < 0 the fit through the origin (which is then the constrained optimum, the objective being convex).
    Returns c (P,), k (P,), weighted residual sums (P,).
    """
    X, Y = np.asarray(X, dtype=float), np.asarray(Y, dtype=float)
    m = np.ones_like(Y) if M is None else np.asarray(M, dtype=float)
    if W is not None:
        m = m * W
    s = np.maximum(m.sum(axis=1), 1e-300)
    mx, my = (m * X).sum(axis=1) / s, (m * Y).sum(axis=1) / s
    dx = X - mx[:, None]
    var = (m * dx * dx).sum(axis=1)
    k = np.clip((m * dx * (Y - my[:, None])).sum(axis=1) / np.maximum(var, 1e-300), 0.0, None)
    c = my - k * mx
    k0 = np.clip((m * X * Y).sum(axis=1) / np.maximum((m * X * X).sum(axis=1), 1e-300), 0.0, None)
    neg = c < 0
    k = np.where(neg, k0, k)
    c = np.where(neg, 0.0, c)
    rss = (m * (Y - c[:, None] - k[:, None] * X) ** 2).sum(axis=1)
    return c, k, rss


def search_1d(f: Callable[[float], float], lo: float, hi: float, n: int = 40) -> float:
    """Global minimum of a scalar function on [lo, hi]: a grid, then a bounded polish around the best point."""
    grid = np.linspace(lo, hi, n)
    vals = np.array([f(float(a)) for a in grid])
    i = int(np.argmin(vals))
    step = grid[1] - grid[0]
    res = minimize_scalar(f, bounds=(max(lo, grid[i] - step), min(hi, grid[i] + step)), method="bounded",
                          options={"xatol": 1e-7})
    return float(res.x) if res.fun < vals[i] else float(grid[i])


@dataclass(frozen=True)
class Form:
    """A law L(x) = Σ_j a_j·basis_j(x; θ): coefficients `linear`, exponents and offsets `nonlinear`.

    `basis(θ, X)` returns an (n, len(linear)) matrix. Linear coefficients are ≥ 0 unless listed in
    `free_sign`; nonlinear parameters are > 0 (fitted as logs) unless listed in `free_sign`.
    """

    name: str
    linear: tuple[str, ...]
    nonlinear: tuple[str, ...]
    basis: Basis
    free_sign: tuple[str, ...] = ()
    formula: str = ""
    constants: Mapping[str, float] = field(default_factory=dict)  # fixed scales the formula refers to (N0, D0)
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # plausible ranges of nonlinear params

    @property
    def params(self) -> tuple[str, ...]:
        return self.linear + self.nonlinear

    def positive(self, p: str) -> bool:
        return p not in self.free_sign

    def predict(self, params: Mapping[str, float], X: np.ndarray) -> np.ndarray:
        a = np.array([params[p] for p in self.linear])
        return self.basis(params, np.asarray(X, dtype=float)) @ a


@dataclass
class FittedLaw:
    form: Form
    params: dict[str, float]
    huber: float  # mean Huber loss over the points fitted
    r2: float
    n: int
    delta: float
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # 95% bootstrap percentiles
    samples: list[dict[str, float]] = field(default_factory=list)  # bootstrap parameter draws
    held_out_huber: float | None = None

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.form.predict(self.params, X)

    def predict_interval(self, X: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray] | None:
        """Percentile band of the bootstrap fits' predictions (None without bootstrap)."""
        if not self.samples:
            return None
        P = np.stack([self.form.predict(s, X) for s in self.samples])
        q = (1 - level) / 2
        return np.quantile(P, q, axis=0), np.quantile(P, 1 - q, axis=0)

    def summary(self) -> dict[str, dict[str, float | bool]]:
        """Parameters (with 95% bootstrap intervals when bootstrapped) and the fixed scales, as plain floats."""
        out: dict[str, dict[str, float | bool]] = {c: {"value": float(v), "fixed": True}
                                                   for c, v in self.form.constants.items()}
        for p, v in self.params.items():
            out[p] = {"value": float(v)}
            if p in self.intervals:
                out[p]["low"], out[p]["high"] = (float(x) for x in self.intervals[p])
        return out


def _solve_linear(form: Form, B: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, float]:
    """Coefficients for a fixed basis: NNLS, free-sign coefficients split into a positive and a negative part."""
    free = [j for j, p in enumerate(form.linear) if not form.positive(p)]
    A = np.hstack([B, -B[:, free]]) if free else B
    if w is not None:
        A, y = A * w[:, None], y * w
    if not np.isfinite(A).all():
        return np.zeros(len(form.linear)), float("inf")
    x, res = nnls(A, y, maxiter=50 * A.shape[1])
    a = x[:B.shape[1]].copy()
    for i, j in enumerate(free):
        a[j] -= x[B.shape[1] + i]
    return a, float(res) ** 2


class _Packing:
    """Parameters ↔ the unconstrained vector L-BFGS sees (logs of the positive ones), for a subset of names."""

    def __init__(self, form: Form, names: Sequence[str] | None = None) -> None:
        self.names = tuple(names if names is not None else form.params)
        self.log = np.array([form.positive(p) for p in self.names])
        self.bounds = []
        for p, lg in zip(self.names, self.log, strict=True):
            lo, hi = form.bounds.get(p, (None, None))
            if lg:
                lo, hi = (None if lo is None else float(np.log(lo))), (None if hi is None else float(np.log(hi)))
            self.bounds.append((lo, hi))

    def pack(self, params: Mapping[str, float]) -> np.ndarray:
        v = np.array([params[p] for p in self.names], dtype=float)
        return np.where(self.log, np.log(np.maximum(v, 1e-12)), v)

    def unpack(self, z: np.ndarray) -> dict[str, float]:
        v = np.where(self.log, np.exp(np.clip(z, -60, 60)), z)
        return dict(zip(self.names, (float(x) for x in v), strict=True))


def _lbfgs(f: Callable[[np.ndarray], float], z0: np.ndarray, pk: _Packing, maxiter: int) -> np.ndarray:
    lo = np.array([-np.inf if b[0] is None else b[0] for b in pk.bounds])
    hi = np.array([np.inf if b[1] is None else b[1] for b in pk.bounds])
    z0 = np.clip(z0, lo, hi)
    res = minimize(f, z0, method="L-BFGS-B", bounds=pk.bounds,
                   options={"maxiter": maxiter, "ftol": 1e-13, "gtol": 1e-9})
    return res.x if res.fun <= f(z0) else z0


def _projected_huber(form: Form, theta: Mapping[str, float], X: np.ndarray, y: np.ndarray, delta: float
                     ) -> tuple[np.ndarray, float]:
    """Linear coefficients minimising the Huber loss for fixed exponents (IRLS over NNLS), and that loss."""
    with np.errstate(all="ignore"):
        B = form.basis(theta, X)
    if not np.isfinite(B).all():
        return np.zeros(len(form.linear)), float("inf")
    sw = None
    for _ in range(6):
        a, _ = _solve_linear(form, B, y, sw)
        r = np.abs(B @ a - y)
        sw = np.sqrt(np.where(r <= delta, 1.0, delta / np.maximum(r, 1e-300)))
    return a, float(huber(B @ a - y, delta).mean())


def _polish(form: Form, start: Mapping[str, float], X: np.ndarray, y: np.ndarray, delta: float, maxiter: int
            ) -> tuple[dict[str, float], float]:
    """L-BFGS from `start`: first over the exponents with the coefficients projected out (well conditioned, a
    few dozen iterations), then over all parameters jointly on the exact Huber loss."""
    scale = 1.0 / (delta * delta)  # O(1) objective, so the L-BFGS tolerances mean something
    nl = _Packing(form, form.nonlinear)

    def g(z: np.ndarray) -> float:
        v = _projected_huber(form, nl.unpack(z), X, y, delta)[1] * scale
        return v if np.isfinite(v) else 1e30

    theta = nl.unpack(_lbfgs(g, nl.pack(start), nl, maxiter))
    a, _ = _projected_huber(form, theta, X, y, delta)
    mid = {**dict(zip(form.linear, (float(v) for v in a), strict=True)), **theta}
    if _full_loss(form, start, X, y, delta) < _full_loss(form, mid, X, y, delta):
        mid = dict(start)
    pk = _Packing(form)

    def f(z: np.ndarray) -> float:
        v = _full_loss(form, pk.unpack(z), X, y, delta) * scale
        return v if np.isfinite(v) else 1e30

    params = pk.unpack(_lbfgs(f, pk.pack(mid), pk, maxiter))
    return params, _full_loss(form, params, X, y, delta)


def _full_loss(form: Form, params: Mapping[str, float], X: np.ndarray, y: np.ndarray, delta: float) -> float:
    with np.errstate(all="ignore"):
        v = float(huber(form.predict(params, X) - y, delta).mean())
    return v if np.isfinite(v) else float("inf")


def fit_law(form: Form, X: np.ndarray, y: np.ndarray, grid: Mapping[str, Sequence[float]], delta: float = 1e-3,
            held_out: np.ndarray | None = None, n_polish: int = 6, maxiter: int = 500, bootstrap: int = 0,
            seed: int = 0) -> FittedLaw:
    """Fit `form` to points (X, y): projected grid of starts → L-BFGS on Huber → held-out selection → bootstrap.

    `grid` gives candidate values of every nonlinear parameter (their cartesian product is searched).
    `held_out` (boolean mask) marks points used only to choose among the polished candidates.
    """
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    if len(y) != len(X):
        raise ValueError(f"{len(X)} inputs but {len(y)} losses")
    if not np.isfinite(y).all():
        raise ValueError("losses must be finite (drop failed runs before fitting)")
    missing = [p for p in form.nonlinear if p not in grid]
    if missing:
        raise ValueError(f"the start grid of {form.name} lacks values for {missing}")
    if len(y) < len(form.params):
        raise ValueError(f"{form.name} has {len(form.params)} parameters but only {len(y)} points were given")
    train = np.ones(len(y), dtype=bool) if held_out is None else ~np.asarray(held_out, dtype=bool)
    candidates = _grid_candidates(form, X[train], y[train], grid, delta, n_polish)
    polished = [_polish(form, c, X[train], y[train], delta, maxiter) for c in candidates]
    held = None
    if held_out is not None and (~train).any():
        scores = [float(huber(form.predict(p, X[~train]) - y[~train], delta).mean()) for p, _ in polished]
        best = int(np.argmin(scores))
        held = scores[best]
        params, _ = _polish(form, polished[best][0], X, y, delta, maxiter)  # refit on every point
    else:
        params = polished[int(np.argmin([v for _, v in polished]))][0]
    pred = form.predict(params, X)
    law = FittedLaw(form=form, params=params, huber=float(huber(pred - y, delta).mean()), r2=r_squared(y, pred),
                    n=len(y), delta=delta, held_out_huber=held)
    if bootstrap > 0:
        _bootstrap(law, X, y, bootstrap, seed, maxiter)
    return law


def _grid_candidates(form: Form, X: np.ndarray, y: np.ndarray, grid: Mapping[str, Sequence[float]], delta: float,
                     n_best: int) -> list[dict[str, float]]:
    """Score every grid point with its projected (NNLS) coefficients; return the n best as full parameter sets."""
    names = list(form.nonlinear)
    scored = []
    for values in itertools.product(*(grid[p] for p in names)):
        theta = dict(zip(names, (float(v) for v in values), strict=True))
        with np.errstate(all="ignore"):
            B = form.basis(theta, X)
        a, _ = _solve_linear(form, B, y, None)
        if not np.isfinite(a).all():
            continue
        params = {**dict(zip(form.linear, (float(v) for v in a), strict=True)), **theta}
        loss = float(huber(B @ a - y, delta).mean())
        if np.isfinite(loss):
            scored.append((loss, params))
    if not scored:
        raise ValueError(f"no point of the start grid of {form.name} gives a finite fit")
    scored.sort(key=lambda t: t[0])
    return [p for _, p in scored[:n_best]]


def _bootstrap(law: FittedLaw, X: np.ndarray, y: np.ndarray, n: int, seed: int, maxiter: int) -> None:
    """Refit on points drawn with replacement, starting from the fit; 95% percentile intervals per parameter."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        p, _ = _polish(law.form, law.params, X[idx], y[idx], law.delta, maxiter)
        law.samples.append(p)
    for p in law.form.params:
        v = np.array([s[p] for s in law.samples])
        law.intervals[p] = (float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975)))


def log_grid(lo: float, hi: float, n: int) -> list[float]:
    return [float(v) for v in np.geomspace(lo, hi, n)]
