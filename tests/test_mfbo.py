"""mfbo: multi-fidelity Bayesian optimisation over the simplex, live and pool-based."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mixopt.errors import InputError
from mixopt.optimizers import get_optimizer
from mixopt.optimizers import mfbo as mfbo_module
from mixopt.optimizers.pool import simulate, unused_rows
from mixopt.runs import RunTable

DOMAINS = ["a", "b", "c", "d"]
COUNTS = {"a": 4000.0, "b": 3000.0, "c": 2000.0, "d": 1000.0}
LEVELS = [{"params": 1e6}, {"params": 1e7}]  # FLOPs-based costs: the low level costs 1/10 of the target
OPT = np.array([0.05, 0.1, 0.25, 0.6])  # far from the token prior, so random sampling rarely lands near it
FAST = {"n_candidates": 256, "n_local": 64, "max_fit": 48, "max_train": 64, "fit_maxiter": 50,
        "refit_growth": 2.0}


def true_loss(W: np.ndarray, params: float) -> np.ndarray:
    """Known optimum OPT at the target; the cheap level is scaled, shifted and tilted (a biased proxy)."""
    hi = 2.0 + 4.0 * ((np.sqrt(W) - np.sqrt(OPT)) ** 2).sum(axis=1)
    return hi if params >= 1e7 else 1.3 * hi + 0.5 + 0.3 * W[:, 0]


def table(W: np.ndarray, params: list[float], status: list[str] | None = None) -> RunTable:
    df = pd.DataFrame(W, columns=[f"w_{d}" for d in DOMAINS])
    df["fid_params"] = params
    df["loss_x"] = [float(true_loss(w[None], p)[0]) for w, p in zip(W, params, strict=True)]
    df["run_id"] = [f"r{i}" for i in range(len(df))]
    if status is not None:
        df["status"] = status
        df.loc[df["status"] == "pending", "loss_x"] = np.nan
    return RunTable(df, token_counts=COUNTS)


def history(n_lo: int = 10, n_hi: int = 2, seed: int = 0) -> RunTable:
    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.ones(4), n_lo + n_hi)
    return table(W, [1e6] * n_lo + [1e7] * n_hi)


def test_proposals_lie_on_the_simplex_respect_caps_and_name_a_level():
    opt = get_optimizer("mfbo", seed=0, objective="loss_x", fidelities=LEVELS, max_epochs=1.0,
                        target_tokens=5000.0, **FAST)
    caps = np.minimum(1.0, np.array([COUNTS[d] for d in DOMAINS]) / 5000.0)  # [0.8, 0.6, 0.4, 0.2]
    for hist in (RunTable.empty(DOMAINS, COUNTS), history()):
        props = opt.propose(hist, 4)
        assert len(props) == 4
        for p in props:
            w = np.array([p.weights[d] for d in DOMAINS])
            assert list(p.weights) == DOMAINS and (w >= 0).all() and abs(w.sum() - 1) < 1e-9
            assert (w <= caps + 2e-4 + 1e-9).all()
            assert p.fidelity in LEVELS
    assert {tuple(p.fidelity.items()) for p in opt.propose(RunTable.empty(DOMAINS, COUNTS), 3)} == {
        (("params", 1e6),)}  # the initial design is at the cheapest level
    tight = get_optimizer("mfbo", seed=0, objective="loss_x", fidelities=LEVELS, max_epochs=1.0,
                          target_tokens=9000.0, **FAST)  # caps 0.44/0.33/0.22/0.11: random draws rarely fit
    for p in tight.propose(history(), 2):
        w = np.array([p.weights[d] for d in DOMAINS])
        assert abs(w.sum() - 1) < 1e-9 and (w <= np.array([4, 3, 2, 1]) / 9 + 1e-6).all()
    single = get_optimizer("mfbo", seed=0, objective="loss_x", fidelities=LEVELS, mode="single", **FAST)
    assert all(p.fidelity == LEVELS[1] for p in single.propose(history(), 2))


@pytest.mark.slow
def test_gp_beats_random_on_a_synthetic_function_with_a_cheap_biased_fidelity():
    budget = 8.0  # in target-level runs
    opt = get_optimizer("mfbo", seed=0, objective="loss_x", fidelities=LEVELS, **FAST)
    hist, spent = RunTable.empty(DOMAINS, COUNTS), 0.0
    while spent < budget:
        props = opt.propose(hist, 4)
        W = np.array([[p.weights[d] for d in DOMAINS] for p in props])
        new = table(W, [p.fidelity["params"] for p in props])
        hist = RunTable(pd.concat([hist.df, new.df], ignore_index=True), token_counts=COUNTS)
        spent += sum(0.1 if p.fidelity["params"] < 1e7 else 1.0 for p in props)
    rec = opt.recommend(hist)
    assert {"posterior_mean_best", "acquisition_best"} <= set(rec.details)
    mf_regret = float(true_loss(np.array([[rec.weights[d] for d in DOMAINS]]), 1e7)[0]) - 2.0
    rnd = get_optimizer("random", seed=0).propose(RunTable.empty(DOMAINS, COUNTS), int(budget))
    random_regret = min(float(true_loss(np.array([[p.weights[d] for d in DOMAINS]]), 1e7)[0]) for p in rnd) - 2.0
    assert (hist.df["fid_params"] == 1e6).sum() > (hist.df["fid_params"] == 1e7).sum()  # the cheap level is used
    assert mf_regret < 0.5 * random_regret, (mf_regret, random_regret)


def pool_table(seed: int = 1) -> RunTable:
    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.ones(4), 30)
    return table(np.vstack([W, W[:10]]), [1e6] * 30 + [1e7] * 10)


def test_pool_mode_never_proposes_outside_the_pool(tmp_path):
    pool = pool_table()
    opt = get_optimizer("mfbo", seed=0, objective="loss_x", **FAST)  # levels taken from the pool's fid_params
    cost = np.where(pool.df["fid_params"] == 1e7, 1.0, 0.1)
    trace = simulate(opt, pool, cost, budget=6.0, batch=3)
    rows = trace["pool_row"].tolist()
    assert len(rows) == len(set(rows)) and set(rows) <= set(range(len(pool)))
    assert trace["cumulative_cost"].iloc[-1] >= 6.0 - 1e-9
    # The same through propose(): the pool is a file, proposals are exactly pool rows not yet run.
    path = tmp_path / "pool.csv"
    pool.to_csv(path)
    hist = RunTable(pool.df.iloc[rows], token_counts=COUNTS)
    live = get_optimizer("mfbo", seed=0, objective="loss_x", pool=str(path), **FAST)
    keys = {(tuple(np.round(w, 9)), f) for w, f in zip(pool.weights, pool.df["fid_params"], strict=True)}
    used = {(tuple(np.round(w, 9)), f) for w, f in zip(hist.weights, hist.df["fid_params"], strict=True)}
    for p in live.propose(hist, 5):
        key = (tuple(np.round([p.weights[d] for d in DOMAINS], 9)), p.fidelity["params"])
        assert key in keys and key not in used


def test_pool_helper_snaps_any_optimizer_to_unused_rows():
    pool = pool_table()
    trace = simulate(get_optimizer("random", seed=0), pool, np.ones(len(pool)), budget=12, batch=5)
    assert len(trace) == 15 and trace["pool_row"].is_unique
    hist = RunTable(pool.df.iloc[[0, 30]], token_counts=COUNTS)  # row 30 repeats row 0's mixture at 1e7
    free = unused_rows(pool, hist)
    assert not free[0] and not free[30] and free.sum() == len(pool) - 2


def test_resume_gives_the_same_next_proposal_and_pending_runs_count():
    hist = history(12, 3)
    a = get_optimizer("mfbo", seed=5, objective="loss_x", fidelities=LEVELS, **FAST).propose(hist, 2)
    mfbo_module._FIT_CACHE.clear()  # a new process: nothing memoised
    b = get_optimizer("mfbo", seed=5, objective="loss_x", fidelities=LEVELS, **FAST).propose(hist, 2)
    assert a == b
    assert opt_rec(hist) == opt_rec(hist)
    # The first proposal, now pending, is not proposed again.
    W = np.vstack([hist.weights, [[a[0].weights[d] for d in DOMAINS]]])
    params = hist.df["fid_params"].tolist() + [a[0].fidelity["params"]]
    pending = table(W, params, status=["ok"] * len(hist) + ["pending"])
    c = get_optimizer("mfbo", seed=5, objective="loss_x", fidelities=LEVELS, **FAST).propose(pending, 1)
    assert c[0] != a[0]


def opt_rec(hist: RunTable) -> tuple:
    rec = get_optimizer("mfbo", seed=5, objective="loss_x", fidelities=LEVELS, **FAST).recommend(hist)
    return rec.weights, rec.details["acquisition_best"]["weights"]


@pytest.mark.parametrize("mode", ["single", "multi"])
def test_without_fidelity_levels_it_is_plain_bo(mode):
    """No levels listed (a search with one proxy): qLogNEI on every run, proposals at the search's proxy."""
    hist = history()
    hist.df = hist.df.drop(columns="fid_params")
    opt = get_optimizer("mfbo", seed=0, objective="loss_x", mode=mode, **FAST)
    assert all(p.fidelity is None for p in opt.propose(RunTable.empty(DOMAINS, COUNTS), 2))
    props = opt.propose(hist, 3)
    assert len(props) == 3 and all(p.fidelity is None for p in props)
    rec = opt.recommend(hist)
    assert rec.details["acquisition"] == "qlognei" and len(rec.runs_used) == len(hist)


def test_pending_runs_shrink_the_uncertainty_where_they_will_land():
    opt = get_optimizer("mfbo", seed=0, objective="loss_x", fidelities=LEVELS, **FAST)
    hist = history()
    data = opt._data(hist, opt._levels(hist))
    sur = opt._surrogate(hist, opt._levels(hist), data)
    X = sur.inputs(np.array([[0.1, 0.2, 0.3, 0.4]]), 1)
    before = sur.mean_sd(X)
    after = sur.believe(X).mean_sd(X)
    assert after[1][0] < 0.5 * before[1][0] and abs(after[0][0] - before[0][0]) < 0.1 * before[1][0]


@pytest.mark.parametrize("acquisition, surrogate, transform", [("kg", "multitask", "ilr"),
                                                                ("mes", "downsampling", "none")])
def test_other_acquisitions_surrogates_and_transforms_run(acquisition, surrogate, transform):
    opt = get_optimizer("mfbo", seed=0, objective="loss_x", fidelities=LEVELS, acquisition=acquisition,
                        surrogate=surrogate, transform=transform, **FAST)
    props = opt.propose(history(), 2)
    assert len({tuple(p.weights.values()) + tuple(p.fidelity.values()) for p in props}) == 2
    rec = opt.recommend(history())
    assert abs(sum(rec.weights.values()) - 1) < 1e-9 and rec.details["runs_per_level"] == [10, 2]


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="one number per entry"):
        get_optimizer("mfbo", fidelities=LEVELS, costs=[1.0])
    with pytest.raises(InputError, match="costliest"):
        get_optimizer("mfbo", objective="loss_x", fidelities=LEVELS, target=0).propose(history(), 1)
    with pytest.raises(ValueError, match="no setting"):
        get_optimizer("mfbo", fidelity=LEVELS)


def test_measured_costs_come_from_finished_runs():
    hist = history(4, 2)
    hist.df["seconds"] = np.where(hist.df["fid_params"] == 1e7, 50.0, 2.0)
    opt = get_optimizer("mfbo", objective="loss_x", fidelities=LEVELS, cost_model="measured")
    levels = mfbo_module.resolve_levels(opt.settings, hist)
    np.testing.assert_allclose(levels.scale, [0.04, 1.0])
    fresh = mfbo_module.resolve_levels(opt.settings, RunTable.empty(DOMAINS, COUNTS))
    np.testing.assert_allclose(fresh.scale, [0.1, 1.0])
    assert fresh.notes


def test_runs_recorded_by_the_driver_map_back_to_their_levels():
    """The driver trains the proxy nearest to a proposal's fidelity and records what it trained: level index,
    actual parameters, tokens and FLOPs. Those rows must land on the level that asked for them."""
    rng = np.random.default_rng(0)
    W = rng.dirichlet(np.ones(4), 6)
    hist = table(W, [0.84e6, 0.84e6, 0.84e6, 0.84e6, 0.9e7, 0.9e7])
    hist.df["fid_level"] = [0, 0, 0, 0, 1, 1]
    hist.df["fid_tokens"] = [2e6] * 4 + [5e7] * 2
    hist.df["fid_flops"] = 6 * hist.df["fid_params"] * hist.df["fid_tokens"]
    for levels in (LEVELS, [{"level": 0}, {"level": 1}]):
        opt = get_optimizer("mfbo", objective="loss_x", fidelities=levels)
        lv = mfbo_module.resolve_levels(opt.settings, hist)
        assert lv.of(hist).tolist() == [0, 0, 0, 0, 1, 1]
        np.testing.assert_allclose(lv.scale, [0.84e6 * 2e6 / (0.9e7 * 5e7), 1.0])  # the recorded FLOPs
    far = table(W[:1], [5e7])  # a proxy 5x larger than any level is not silently taken for the target
    by_params = get_optimizer("mfbo", objective="loss_x", fidelities=LEVELS)
    assert mfbo_module.resolve_levels(by_params.settings, hist).of(far).tolist() == [-1]
    with pytest.raises(ValueError, match="index"):
        get_optimizer("mfbo", fidelities=[{"level": 0.5}, {"level": 1}])
