"""The predictor contract (docs/optimizers.md): fit on (weights, objective), predict millions of rows at once."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Predictor(Protocol):
    def fit(self, X: np.ndarray, y: np.ndarray, fidelity: np.ndarray | None = None) -> Predictor: ...

    def predict(self, X: np.ndarray, fidelity: np.ndarray | None = None) -> np.ndarray: ...
