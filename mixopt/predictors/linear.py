"""Ordinary least squares on the raw weights, with intercept: RegMix's linear baseline (docs/methods.md §1c).

The notebook has no code for it; unregularised OLS with an intercept is what reproduces the released ρ.
"""

from __future__ import annotations

import numpy as np


class LinearPredictor:
    def __init__(self) -> None:
        self.model = None

    def fit(self, X: np.ndarray, y: np.ndarray, fidelity: np.ndarray | None = None) -> LinearPredictor:
        from sklearn.linear_model import LinearRegression

        self.model = LinearRegression().fit(np.asarray(X, dtype=float), np.asarray(y, dtype=float))
        return self

    def predict(self, X: np.ndarray, fidelity: np.ndarray | None = None) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("fit the predictor before predicting")
        return self.model.predict(np.asarray(X, dtype=float))
