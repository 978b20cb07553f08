"""Mean of several predictors. Members that disagree are a direct measure of model uncertainty."""

from __future__ import annotations

import numpy as np


class EnsemblePredictor:
    def __init__(self, members: tuple[str, ...] = ("lightgbm", "gp"), seed: int = 0) -> None:
        from mixopt.predictors import make_predictor

        self.names = members
        self.members = [make_predictor(m, seed=seed) for m in members]

    def fit(self, X: np.ndarray, y: np.ndarray, fidelity: np.ndarray | None = None) -> EnsemblePredictor:
        for m in self.members:
            m.fit(X, y)
        return self

    def predict(self, X: np.ndarray, fidelity: np.ndarray | None = None) -> np.ndarray:
        return np.mean([m.predict(X) for m in self.members], axis=0)

    def screen(self, X: np.ndarray) -> np.ndarray:
        return np.mean([m.screen(X) if hasattr(m, "screen") else m.predict(X) for m in self.members], axis=0)

    def predict_with_std(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        P = np.array([m.predict(X) for m in self.members])
        return P.mean(axis=0), P.std(axis=0)
