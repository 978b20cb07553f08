"""Power laws in model size or training tokens: L(x) = c + k·x^(−α), with α shared across groups.

Used as the size law (x = non-embedding parameters) and the step law (x = tokens) of the data mixing law
pipeline (METHODS.md §7b): each (mixture, validation domain) has its own c and k, and α is shared per validation
domain across mixtures, which is what lets two or three model sizes per mixture extrapolate at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from mixopt.laws.fit import scale_fit


@dataclass
class PowerLaw:
    alpha: float
    params: list[np.ndarray]  # (c, k) per group
    scale: float  # x is divided by this before the power (conditioning)

    def predict(self, group: int, x: np.ndarray | float) -> np.ndarray:
        c, k = self.params[group]
        return c + k * (np.asarray(x, dtype=float) / self.scale) ** -self.alpha


def fit_power_law(groups: list[tuple[np.ndarray, np.ndarray]], alpha_range: tuple[float, float] = (0.02, 2.0),
                  relative: bool = False) -> PowerLaw:
    """Fit L = c + k·x^−α to groups [(x, loss), ...] with one α for all; c, k ≥ 0 per group.

    `relative=True` minimises squared relative error (losses of different domains on one scale).
    """
    xs = np.concatenate([np.asarray(x, dtype=float) for x, _ in groups])
    scale = float(np.exp(np.mean(np.log(xs))))

    def total(alpha: float) -> tuple[float, list[np.ndarray]]:
        rss, params = 0.0, []
        for x, y in groups:
            y = np.asarray(y, dtype=float)
            p, r = scale_fit(y, (np.asarray(x, dtype=float) / scale) ** -alpha, 1 / y if relative else None)
            rss += r
            params.append(p)
        return rss, params

    grid = np.linspace(*alpha_range, 80)
    a0 = grid[int(np.argmin([total(a)[0] for a in grid]))]
    step = grid[1] - grid[0]
    res = minimize_scalar(lambda a: total(a)[0], bounds=(max(alpha_range[0], a0 - step), a0 + step),
                          method="bounded", options={"xatol": 1e-6})
    alpha = float(res.x) if res.fun <= total(a0)[0] else float(a0)
    return PowerLaw(alpha=alpha, params=total(alpha)[1], scale=scale)
