"""Size and step laws: L(x) = c + k·(x/x_ref)^(−α) for many series at once, with α shared across them.

- Step law (x = training tokens or steps): one series per validation domain of a run, α tied across the
  domains of that run, as the data mixing law pipeline does (docs/methods.md §7b, `tie_alpha valid`).
- Size law (x = non-embedding parameters): one series per mixture, α shared per validation domain across
  mixtures. With 3–4 proxy sizes per mixture a free α per series would be a 3-parameter fit to 3–4 points;
  sharing it across mixtures is what lets two or three sizes per mixture extrapolate at all.

Fitting is variable projection: for a given α every series' (c, k ≥ 0) has a closed form (`nnls2`, all series
in one vectorised call), so only α is searched — a 1-D grid then a bounded polish, global and deterministic.
A Huber loss (optional) is minimised by iteratively reweighted least squares inside the projection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixopt.laws.fit import huber, nnls2, search_1d


@dataclass
class PowerLaw:
    alpha: float
    c: np.ndarray  # (G,) one per series
    k: np.ndarray  # (G,)
    x_ref: float  # x is divided by this before the power (conditioning; reported so k can be read)
    loss: float  # the fitted objective (sum over points)

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        """Predictions (G, len(x)) of every series at x (a scalar x gives (G,))."""
        x = np.asarray(x, dtype=float)
        p = self.c[:, None] + self.k[:, None] * (np.atleast_1d(x)[None, :] / self.x_ref) ** (-self.alpha)
        return p[:, 0] if x.ndim == 0 else p

    def params(self) -> dict[str, object]:
        return {"alpha": self.alpha, "x_ref": self.x_ref, "c": self.c.tolist(), "k": self.k.tolist()}


def _series_fit(X: np.ndarray, Y: np.ndarray, M: np.ndarray, delta: float | None, W: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c, k, rss = nnls2(X, Y, M, W)
    if delta is None:
        return c, k, rss
    for _ in range(8):  # IRLS: Huber weights from the current residuals
        r = Y - c[:, None] - k[:, None] * X
        hw = np.where(np.abs(r) <= delta, 1.0, delta / np.maximum(np.abs(r), 1e-300))
        c, k, _ = nnls2(X, Y, M, hw if W is None else hw * W)
    r = Y - c[:, None] - k[:, None] * X
    w = M if W is None else M * W
    return c, k, (w * huber(r, delta)).sum(axis=1)


def fit_power_law(x: np.ndarray, Y: np.ndarray, alpha_range: tuple[float, float] = (0.01, 2.0),
                  delta: float | None = None, weights: np.ndarray | None = None) -> PowerLaw:
    """Fit L_g(x) = c_g + k_g·(x/x_ref)^−α to every row g of Y (G × len(x); NaN = not measured), one α for all.

    `delta` switches squared error to Huber with that δ; `weights` (len(x)) weight the points of every series.
    """
    x = np.asarray(x, dtype=float)
    Y = np.atleast_2d(np.asarray(Y, dtype=float))
    if Y.shape[1] != len(x):
        raise ValueError(f"{len(x)} x values but series of length {Y.shape[1]}")
    if (x <= 0).any():
        raise ValueError("x (parameters or tokens) must be positive")
    M = np.isfinite(Y).astype(float)
    if (M.sum(axis=1) < 2).any():
        raise ValueError("every series needs at least 2 measured points")
    Yf = np.nan_to_num(Y)
    x_ref = float(np.exp(np.log(x).mean()))
    W = None if weights is None else np.tile(np.asarray(weights, dtype=float), (len(Y), 1))

    def objective(a: float) -> tuple[np.ndarray, np.ndarray, float]:
        X = np.tile((x / x_ref) ** (-a), (len(Y), 1))
        c, k, loss = _series_fit(X, Yf, M, delta, W)
        return c, k, float(loss.sum())

    alpha = search_1d(lambda a: objective(a)[2], *alpha_range)
    c, k, loss = objective(alpha)
    return PowerLaw(alpha=alpha, c=c, k=k, x_ref=x_ref, loss=loss)


def size_law(params: np.ndarray, L: np.ndarray, delta: float | None = None) -> list[PowerLaw]:
    """Size law per validation domain: L has shape (mixtures, sizes, domains); one α per domain.

    Returns one PowerLaw per domain whose series are the mixtures.
    """
    L = np.asarray(L, dtype=float)
    return [fit_power_law(params, L[:, :, i], delta=delta) for i in range(L.shape[2])]


def step_law(tokens: np.ndarray, L: np.ndarray, delta: float | None = None) -> PowerLaw:
    """Step law of one run: L has shape (checkpoints, domains); α tied across the domains."""
    return fit_power_law(tokens, np.asarray(L, dtype=float).T, delta=delta)
