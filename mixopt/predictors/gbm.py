"""LightGBM regression on raw mixture weights, with RegMix's settings (docs/methods.md §1c).

Deliberate difference from the published notebook: no early stopping on an evaluation set (it leaks the test
set). With few runs, LightGBM's default `min_child_samples=20` would forbid every split and return a constant,
so that value is scaled down to the data (documented in the setting).

CLIMB's predictor (docs/methods.md §3b) is the same model with L1/L2 regularisation, depth 4, and early stopping on
a shuffled hold-out of its own training runs (`valid_fraction`; never on data it is evaluated on).
"""

from __future__ import annotations

import numpy as np


class LightGBMPredictor:
    def __init__(self, n_estimators: int = 1000, learning_rate: float = 0.01, num_leaves: int = 31,
                 min_child_samples: int | None = None, seed: int = 42, n_jobs: int = 0, reg_alpha: float = 0.0,
                 reg_lambda: float = 0.0, max_depth: int = -1, valid_fraction: float = 0.0) -> None:
        if not 0 <= valid_fraction < 1:
            raise ValueError(f"valid_fraction must be in [0, 1), not {valid_fraction}")
        self.params = dict(n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves,
                           min_child_samples=min_child_samples, seed=seed, n_jobs=n_jobs, reg_alpha=reg_alpha,
                           reg_lambda=reg_lambda, max_depth=max_depth, valid_fraction=valid_fraction)
        self.model = None

    def fit(self, X: np.ndarray, y: np.ndarray, fidelity: np.ndarray | None = None) -> LightGBMPredictor:
        import lightgbm as lgb

        n = len(y)
        mcs = self.params["min_child_samples"]
        if mcs is None:  # RegMix's 20 at ≥ 80 runs, fewer for small histories so trees can split at all
            mcs = int(min(20, max(2, n // 4)))
        self.model = lgb.LGBMRegressor(
            boosting_type="gbdt", objective="regression", n_estimators=self.params["n_estimators"],
            learning_rate=self.params["learning_rate"], num_leaves=self.params["num_leaves"],
            min_child_samples=mcs, min_data_in_bin=1 if n < 60 else 3, random_state=self.params["seed"],
            n_jobs=self.params["n_jobs"], reg_alpha=self.params["reg_alpha"], reg_lambda=self.params["reg_lambda"],
            max_depth=self.params["max_depth"], deterministic=True, force_row_wise=True, verbose=-1)
        X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
        n_val = int(round(self.params["valid_fraction"] * n))
        if n_val >= 1 and n - n_val >= 2:  # CLIMB: stop when a shuffled hold-out stops improving
            order = np.random.default_rng(self.params["seed"]).permutation(n)
            tr, va = order[n_val:], order[:n_val]
            self.model.fit(X[tr], y[tr], eval_X=(X[va],), eval_y=(y[va],),
                           callbacks=[lgb.early_stopping(min(20, n_val), verbose=False)])
        else:
            self.model.fit(X, y)
        return self

    def predict(self, X: np.ndarray, fidelity: np.ndarray | None = None) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("fit the predictor before predicting")
        return self.model.booster_.predict(np.asarray(X, dtype=float))

    def screen(self, X: np.ndarray, trees: int = 200) -> np.ndarray:
        """The sum of the first `trees` trees: a cheap pre-ranking for simulation at scale.

        With a learning rate of 0.01 the first trees carry the main effects; on RegMix's runs the top 1 % by 200
        of 1000 trees holds 97 % of the exact top-128 (benchmarks/regmix_pile.py measures it every run).
        """
        if self.model is None:
            raise RuntimeError("fit the predictor before predicting")
        n = self.model.booster_.num_trees()
        return self.model.booster_.predict(np.asarray(X, dtype=float), num_iteration=min(trees, n))
