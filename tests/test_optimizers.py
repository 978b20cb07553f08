"""The registry, the pure-function contract, and the first optimizers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mixopt
from mixopt.errors import InputError
from mixopt.optimizers import get_optimizer, list_optimizers, optimizer_class
from mixopt.optimizers.base import MixtureOptimizer
from mixopt.runs import RunTable
from mixopt.simplex import SamplerSettings, repetition_caps, sample_mixtures
from tests.conftest import need_regmix

COUNTS = {"a": 1000.0, "b": 3000.0, "c": 6000.0}


def synthetic_history(n: int, seed: int = 0) -> RunTable:
    """Loss is lowest near (0.2, 0.3, 0.5): a known optimum to recover."""
    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.ones(3), size=n)
    target = np.array([0.2, 0.3, 0.5])
    loss = 2.0 + 3.0 * ((W - target) ** 2).sum(axis=1) + rng.normal(0, 0.002, n)
    df = pd.DataFrame(W, columns=["w_a", "w_b", "w_c"])
    df["loss_a"] = loss
    df["run_id"] = [f"r{i}" for i in range(n)]
    return RunTable(df, token_counts=COUNTS)


def test_registry_lists_builtins_and_rejects_unknowns():
    assert {"random", "uniform", "natural", "regmix"} <= set(list_optimizers())
    for name in list_optimizers():
        assert isinstance(get_optimizer(name), MixtureOptimizer)
        assert optimizer_class(name).name == name
    with pytest.raises(ValueError, match="known optimizers"):
        get_optimizer("nope")
    with pytest.raises(ValueError, match="top_kk"):
        get_optimizer("regmix", top_kk=3)


@pytest.mark.parametrize("name", ["random", "regmix"])
def test_propose_is_a_pure_function_of_history(name):
    hist = synthetic_history(5)
    a = get_optimizer(name, seed=3).propose(hist, 4)
    b = get_optimizer(name, seed=3).propose(hist, 4)
    assert a == b
    assert a != get_optimizer(name, seed=4).propose(hist, 4)
    assert a != get_optimizer(name, seed=3).propose(synthetic_history(6), 4)
    for p in a:
        w = np.array(list(p.weights.values()))
        assert (w >= 0).all() and abs(w.sum() - 1) < 1e-9 and list(p.weights) == hist.domains


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.001, 1.0), min_size=2, max_size=8), st.integers(0, 2**32 - 1))
def test_sampler_stays_on_the_simplex_under_caps(prior, seed):
    prior = np.array(prior) / np.sum(prior)
    caps = np.minimum(1.0, 3 * prior + 0.2)
    W = sample_mixtures(prior, 20, np.random.default_rng(seed), SamplerSettings(), caps=caps)
    assert W.shape == (20, len(prior))
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-9)
    assert (W >= 0).all() and (W <= caps + 2e-4 + 1e-9).all()
    assert len(np.unique(W.round(8), axis=0)) == 20


def test_repetition_caps():
    np.testing.assert_allclose(repetition_caps(np.array([10, 1000]), 1000, 4), [0.04, 1.0])


@pytest.mark.slow
def test_regmix_finds_the_known_optimum_deterministically():
    hist = synthetic_history(200)
    opt = get_optimizer("regmix", seed=0, objective="loss_a", n_candidates=50_000, n_bootstrap=2)
    r1, r2 = opt.recommend(hist), opt.recommend(hist)
    assert r1.weights == r2.weights
    w = np.array(list(r1.weights.values()))
    assert abs(w.sum() - 1) < 1e-9
    assert np.abs(w - [0.2, 0.3, 0.5]).max() < 0.08, r1.weights
    assert r1.predicted is not None and r1.predicted < np.median(hist.objective("loss_a"))
    assert len(r1.runs_used) == 200


def test_regmix_on_released_runs_puts_pile_cc_first():
    rec = mixopt.recommend(need_regmix(), optimizer="regmix", objective="loss_pile_cc", seed=42,
                           n_candidates=20_000, predictor="lightgbm", n_bootstrap=0)
    assert max(rec.weights, key=rec.weights.get) == "pile_cc" and rec.weights["pile_cc"] > 0.6
    assert abs(sum(rec.weights.values()) - 1) < 1e-9


def test_regmix_refuses_too_few_runs():
    with pytest.raises(InputError, match="at least 4 successful runs"):
        get_optimizer("regmix").recommend(synthetic_history(3))


def test_baselines():
    hist = synthetic_history(30)
    best = get_optimizer("random", objective="loss_a").recommend(hist)
    i = int(np.argmin(hist.objective("loss_a")))
    assert best.predicted == pytest.approx(hist.objective("loss_a")[i])
    assert list(best.weights.values()) == pytest.approx(list(hist.weights[i]))
    nat = get_optimizer("natural").propose(hist, 2)
    assert nat[0].weights == pytest.approx({"a": 0.1, "b": 0.3, "c": 0.6})
    uni = get_optimizer("uniform").recommend(hist)
    assert uni.weights == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}) and uni.predicted is None
    no_counts = RunTable(hist.df)
    with pytest.raises(InputError, match="token count"):
        get_optimizer("natural").propose(no_counts, 1)
