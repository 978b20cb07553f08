"""benchmarks/mfbo_pool.py: the recommendation-based measure (ADMIRE's protocol) next to the pick-based one."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pandas as pd
import pytest

from mixopt.runs import RunTable
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def bench():
    """The benchmark as a module (registered while it runs: its dataclasses look themselves up there)."""
    spec = importlib.util.spec_from_file_location("mfbo_pool_bench", ROOT / "benchmarks" / "mfbo_pool.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["mfbo_pool_bench"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("mfbo_pool_bench", None)


def small_pool(bench):
    """30 cheap runs and 10 target runs of the same 10 mixtures; the target optimum is a known mixture."""
    rng = np.random.default_rng(3)
    W = rng.dirichlet(np.ones(4), 30)
    opt = np.array([0.05, 0.1, 0.25, 0.6])
    loss = 2.0 + 4.0 * ((np.sqrt(W) - np.sqrt(opt)) ** 2).sum(axis=1)
    df = pd.DataFrame(np.vstack([W, W[:10]]), columns=[f"w_{d}" for d in "abcd"])
    df["fid_params"] = [1e6] * 30 + [1e7] * 10
    df["loss_x"] = np.concatenate([1.3 * loss + 0.5, loss[:10]])
    df["run_id"] = [f"r{i}" for i in range(40)]
    target = (df["fid_params"] == 1e7).to_numpy()
    cost = np.where(target, 1.0, 0.1)
    return bench.Pool("toy", RunTable(df), "loss_x", cost, [0.1, 1.0], target, ~target, 10, [1, 2, 4, 8])


def test_bo_recommendations_are_target_rows_costed_like_the_picks(bench):
    pool = small_pool(bench)
    fast = {"n_init": 2, "max_fit": 32, "max_train": 40, "fit_maxiter": 30, "num_mv_samples": 4}
    rows, rounds, recs = bench.run_bo(pool, 0, "multi", 2, extra=fast)
    assert recs and [r["n"] for r in recs] == sorted({r["n"] for r in recs})
    for r in recs:  # after whole rounds, at the cost of everything revealed so far (the pick accounting)
        n = r["n"]
        assert n == 0 or n == len(rows) or rounds[n - 1] != rounds[n]
        assert r["cost"] == pytest.approx(pool.cost[rows[:n]].sum())
        for key in ("posterior_mean", "acquisition"):
            assert r[key] is None or pool.target_mask[r[key]]
    # The run ends once the best target run is picked and recommended, or at twice the pick's cost.
    picked = bench.reach_cost(pool, rows, rounds)
    assert picked is not None
    assert recs[-1]["posterior_mean"] == pool.best_row or recs[-1]["cost"] >= 2 * picked - 1e-9


def test_reach_stay_and_regret_from_a_recommendation_trace(bench):
    pool = small_pool(bench)
    best, other = pool.best_row, next(i for i in np.flatnonzero(pool.target_mask) if i != pool.best_row)
    y = pool.table.df["loss_x"].to_numpy()
    recs = [{"cost": 0.5, "posterior_mean": other}, {"cost": 1.5, "posterior_mean": best},
            {"cost": 2.5, "posterior_mean": other}, {"cost": 3.5, "posterior_mean": best}]
    assert bench.rec_reach(pool, recs, "posterior_mean") == (1.5, 0.5, 3.5)
    regret = bench.regret_at(pool, recs, "posterior_mean", [0.1, 1, 2, 3, 100])
    assert np.isnan(regret[0]) and regret[2] == 0.0 and regret[4] == 0.0  # the last one is carried forward
    assert regret[1] == regret[3] == pytest.approx(y[other] - y[best]) and regret[1] > 0
    assert bench.rec_reach(pool, recs[:1], "posterior_mean") == (None, None, 0.5)
    # Random search recommends the best target run it has trained: it reaches the best exactly when it picks it.
    order = bench.trace_random(pool, 0)
    assert bench.rec_reach(pool, bench.recs_random(pool, order), "posterior_mean")[0] == bench.reach_cost(pool, order)


def test_oracle_bound_is_the_best_target_mixtures_position_in_the_cheap_order(bench):
    pool = small_pool(bench)
    # The cheap level is a monotone transform of the target loss here, so it ranks the best target mixture first.
    bound = bench.oracle_bound(pool)
    assert bound["position_by_level"] == {"1e+06": 1} and bound["cost"] == 1.0
    assert bound["ratio_vs_expected_random"] == pytest.approx(1 / 5.5)
    # Reverse the cheap level's order: the best target mixture comes last.
    df = pool.table.df.copy()
    cheap = df["fid_params"] == 1e6
    df.loc[cheap, "loss_x"] = -df.loc[cheap, "loss_x"]
    flipped = bench.Pool("toy", RunTable(df), "loss_x", pool.cost, pool.level_cost, pool.target_mask, pool.low_mask,
                         10, [1])
    assert bench.oracle_bound(flipped)["cost"] == 10.0
