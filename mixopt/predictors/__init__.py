"""Regression surrogates of objective(weights[, fidelity]), shared by several optimizers.

| name | model | notes |
|---|---|---|
| `lightgbm` | gradient-boosted trees, RegMix's settings | the paper's predictor |
| `linear` | OLS with intercept | RegMix's linear baseline |
| `gp` | BoTorch GP on sqrt(weights) | calibrated uncertainty; best ρ on RegMix's runs |
| `ensemble` | mean of lightgbm and gp | disagreement as uncertainty |
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from mixopt.predictors.base import Predictor
from mixopt.predictors.ensemble import EnsemblePredictor
from mixopt.predictors.gbm import LightGBMPredictor
from mixopt.predictors.gp import GPPredictor
from mixopt.predictors.linear import LinearPredictor

PREDICTORS: dict[str, type] = {"lightgbm": LightGBMPredictor, "linear": LinearPredictor, "gp": GPPredictor,
                               "ensemble": EnsemblePredictor}


def make_predictor(name: str, **settings: Any) -> Any:
    """Build a predictor; only the settings its constructor declares are passed (seed, for example)."""
    if name not in PREDICTORS:
        raise ValueError(f"unknown predictor {name!r}; known: {', '.join(sorted(PREDICTORS))}")
    cls = PREDICTORS[name]
    accepted = inspect.signature(cls.__init__).parameters
    unknown = [k for k in settings if k not in accepted and k != "seed"]
    if unknown:
        raise ValueError(f"predictor {name} has no setting(s) {unknown}; it takes {sorted(accepted)[1:]}")
    return cls(**{k: v for k, v in settings.items() if k in accepted})


def fit_predictor(name: str, runs: Any, objective: Any = None, **settings: Any) -> Any:
    """Fit a predictor on the usable runs of a RunTable (status ok, finite objective)."""
    from mixopt.errors import InputError
    from mixopt.runs import RunTable

    table = runs if isinstance(runs, RunTable) else RunTable.from_file(runs)
    ok, y = table.usable(objective)
    if len(ok) < 2:
        raise InputError(table.source, f"need at least 2 successful runs to fit a predictor, have {len(ok)}",
                         "train more proxies")
    model = make_predictor(name, **settings)
    model.fit(ok.weights, np.asarray(y))
    model.domains = list(table.domains)
    return model


__all__ = ["PREDICTORS", "EnsemblePredictor", "GPPredictor", "LightGBMPredictor", "LinearPredictor", "Predictor",
           "fit_predictor", "make_predictor"]
