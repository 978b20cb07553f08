"""Regression surrogates of objective(weights[, fidelity]), shared by several optimizers."""

from __future__ import annotations

from typing import Any

from mixopt.predictors.base import Predictor
from mixopt.predictors.gbm import LightGBMPredictor

PREDICTORS: dict[str, type] = {"lightgbm": LightGBMPredictor}


def make_predictor(name: str, **settings: Any) -> Predictor:
    if name not in PREDICTORS:
        raise ValueError(f"unknown predictor {name!r}; known: {', '.join(sorted(PREDICTORS))}")
    return PREDICTORS[name](**settings)


__all__ = ["PREDICTORS", "LightGBMPredictor", "Predictor", "make_predictor"]
