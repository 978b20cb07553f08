"""One predictor per domain loss, aggregated with the objective's weights.

Regressing the aggregate objective throws away structure: each domain's loss is a smoother function of the
mixture (mostly of that domain's own weight) than their mean, and the mixture that helps one domain hurts
another. Fitting each loss column (raw, or its logarithm, which turns the data mixing law's exp(t·w) into a
linear-in-features target) and aggregating the predictions is what the mixing laws do, and on RegMix's runs it
transferred slightly better than regressing the mean. Which is better on a given run table is measured out of
fold by the optimizers (`per_domain: auto`), not assumed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

Transform = Literal["raw", "log"]


class PerDomainPredictor:
    """`make()` builds one sub-predictor per column of Y; the prediction is Σ_d a_d·L̂_d(w)."""

    def __init__(self, make: Callable[[], Any], weights: np.ndarray, transform: Transform = "raw") -> None:
        self.make = make
        self.a = np.asarray(weights, dtype=float)
        self.transform = transform
        self.models: list[Any] = []

    def fit(self, X: np.ndarray, Y: np.ndarray) -> PerDomainPredictor:
        Y = np.asarray(Y, dtype=float)
        if Y.ndim != 2 or Y.shape[1] != len(self.a):
            raise ValueError(f"Y must have one column per objective metric ({len(self.a)}), has shape {Y.shape}")
        T = np.log(Y) if self.transform == "log" else Y
        self.models = [self.make().fit(X, T[:, j]) for j in range(T.shape[1])]
        return self

    def _back(self, P: np.ndarray) -> np.ndarray:
        return np.exp(P) if self.transform == "log" else P

    def predict_domains(self, X: np.ndarray) -> np.ndarray:
        """[n, domains] predicted losses."""
        return self._back(np.stack([m.predict(X) for m in self.models], axis=1))

    def predict(self, X: np.ndarray, fidelity: np.ndarray | None = None) -> np.ndarray:
        return self.predict_domains(X) @ self.a

    def screen(self, X: np.ndarray) -> np.ndarray:
        """Cheap pre-ranking: each sub-model's own screen where it has one."""
        P = np.stack([m.screen(X) if hasattr(m, "screen") else m.predict(X) for m in self.models], axis=1)
        return self._back(P) @ self.a

    def predict_with_std(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and a standard deviation that treats the domains' errors as independent (delta method for log)."""
        if not all(hasattr(m, "predict_with_std") for m in self.models):
            raise AttributeError("a sub-predictor has no predict_with_std")
        mus, sds = zip(*(m.predict_with_std(X) for m in self.models), strict=True)
        M, S = np.stack(mus, axis=1), np.stack(sds, axis=1)
        if self.transform == "log":
            M, S = np.exp(M), np.exp(M) * S
        return M @ self.a, np.sqrt((S ** 2) @ (self.a ** 2))
