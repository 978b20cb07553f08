"""The scale-aware optimizer `scaling` on runs generated from a known law whose optimum moves with scale."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixopt
from mixopt.errors import InputError
from mixopt.laws.mixing import MixingLaw, optimise_mixture
from mixopt.laws.scalemix import fit_scalemix
from mixopt.optimizers import get_optimizer
from mixopt.runs import RunTable
from mixopt.simplex import kl_to_prior
from mixopt.spec import TargetSpec

DOMAINS = ["a", "b", "c"]
T = np.array([[-3.0, 1.5, 1.5], [1.0, -2.0, 1.0], [1.0, 1.0, -2.0]])  # loss i falls with its own domain's share
K_AMP = np.array([0.6, 0.3, 0.4])
GAMMA = np.array([0.35, -0.1, 0.0])  # loss a's mixture term fades with compute, b's grows: the optimum moves
E, A, B = np.array([2.0, 2.5, 1.8]), np.array([1.0, 1.2, 0.8]), np.array([0.5, 0.4, 0.6])
N0, D0 = 1e6, 2e7
SCALES = [(1e6, 2e7), (4e6, 8e7), (1.6e7, 3.2e8)]
TARGET = TargetSpec(params=1e8, tokens=2e9)


def true_losses(W: np.ndarray, N: np.ndarray, D: np.ndarray) -> np.ndarray:
    amp = K_AMP * (N[:, None] * D[:, None] / (N0 * D0)) ** -GAMMA
    return E + A * (N[:, None] / N0) ** -0.34 + B * (D[:, None] / D0) ** -0.28 + amp * np.exp(W @ T.T)


def true_optimum(N: float, D: float) -> np.ndarray:
    law = MixingLaw(c=np.zeros(3), k=K_AMP * (N * D / (N0 * D0)) ** -GAMMA, t=T, names=DOMAINS)
    return optimise_mixture(law)


def table(scales=SCALES, n_mix: int = 16, noise: float = 0.002, seed: int = 0) -> RunTable:
    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.ones(3), n_mix)
    rows = []
    for level, (n, d) in enumerate(scales):
        L = true_losses(W, np.full(n_mix, n), np.full(n_mix, d)) + rng.normal(0, noise, (n_mix, 3))
        for i in range(n_mix):
            rows.append({**{f"w_{x}": W[i, j] for j, x in enumerate(DOMAINS)}, "fid_params": n, "fid_tokens": d,
                         "fid_level": level, **{f"loss_{x}": L[i, j] for j, x in enumerate(DOMAINS)},
                         "run_id": f"r{level}-{i}"})
    return RunTable(pd.DataFrame(rows), token_counts={"a": 1e12, "b": 1e12, "c": 1e12})


def weights(rec) -> np.ndarray:
    return np.array([rec.weights[d] for d in DOMAINS])


def test_the_planted_optimum_moves_with_scale():
    assert np.abs(true_optimum(*SCALES[0]) - true_optimum(1e8, 2e9)).sum() > 0.8


def test_auto_picks_a_form_that_moves_the_optimum_and_lands_near_the_target_optimum():
    hist = table()
    rec = get_optimizer("scaling", kl_lambda=0.0).recommend(hist, TARGET)
    d = rec.details
    assert d["form"] in ("joint", "nested")
    assert set(d["forms"]) == {"nested", "additive", "joint"}
    assert d["forms"]["joint"]["mae"] < d["forms"]["additive"]["mae"]
    assert np.abs(weights(rec) - true_optimum(1e8, 2e9)).max() < 0.08
    assert [(s["level"], s["runs"]) for s in d["scales"]] == [(0, 16), (1, 16), (2, 16)]
    assert d["target"] == {"params": 1e8, "tokens": 2e9}
    assert {"kl", "l1"} <= set(d["distance_to_prior"]) and d["kl_lambda"] == 0.0
    assert any("held-out" in n or "predicting the largest" in n for n in rec.notes)
    assert sum(rec.weights.values()) == pytest.approx(1)
    again = get_optimizer("scaling", kl_lambda=0.0).recommend(hist, TARGET)
    assert again.weights == rec.weights


def test_joint_law_recovers_gamma():
    hist = table()
    law = fit_scalemix(hist.weights, hist.df.fid_params, hist.df.fid_tokens,
                       hist.df[[f"loss_{x}" for x in DOMAINS]].to_numpy(), "joint")
    assert law.gamma == pytest.approx(GAMMA, abs=0.05)


def test_additive_optimum_does_not_move():
    hist = table()
    small = get_optimizer("scaling", form="additive", kl_lambda=0.0).recommend(hist, TargetSpec(params=1e6,
                                                                                                 tokens=2e7))
    large = get_optimizer("scaling", form="additive", kl_lambda=0.0).recommend(hist, TARGET)
    assert small.details["form"] == "additive"
    assert np.abs(weights(small) - weights(large)).max() < 1e-6
    assert large.predicted < small.predicted  # the scale term still lowers the loss


def test_kl_penalty_pulls_toward_the_prior():
    hist = table()
    free = get_optimizer("scaling", form="joint", kl_lambda=0.0).recommend(hist, TARGET)
    reg = get_optimizer("scaling", form="joint", kl_lambda=0.2).recommend(hist, TARGET)
    prior = np.full(3, 1 / 3)
    assert kl_to_prior(weights(reg), prior)[0] < kl_to_prior(weights(free), prior)[0] - 0.01
    assert reg.details["distance_to_prior"]["kl"] == pytest.approx(kl_to_prior(weights(reg), prior)[0])
    assert reg.details["unregularised"]["distance_to_prior"]["kl"] == pytest.approx(
        free.details["distance_to_prior"]["kl"], abs=1e-6)


def test_two_scales_hold_out_half_the_larger_scale():
    hist = table(scales=SCALES[:2])
    rec = get_optimizer("scaling").recommend(hist, TARGET)
    assert "half" in rec.details["selection"] and rec.details["forms"]["joint"]["n_test"] == 8


def test_bad_inputs_name_the_field():
    one = table(scales=SCALES[:1])
    with pytest.raises(InputError, match="fidelities"):
        get_optimizer("scaling").recommend(one, TARGET)
    with pytest.raises(InputError, match="target"):
        get_optimizer("scaling").recommend(table())
    with pytest.raises(InputError, match="target.tokens"):
        get_optimizer("scaling").recommend(table(), TargetSpec(params=1e8))
    with pytest.raises(ValueError, match="kl_lambda"):
        get_optimizer("scaling", kl_lambda=-0.1)
    with pytest.raises(ValueError, match="form"):
        get_optimizer("scaling", form="quadratic")


def test_proposals_cover_every_level_and_complete_partial_mixtures():
    levels = [{"level": 0}, {"level": 1, "tokens": 1e6}]
    opt = get_optimizer("scaling", fidelities=levels)
    empty = RunTable.empty(DOMAINS)
    props = opt.propose(empty, 6)
    assert props == opt.propose(empty, 6) and len({tuple(p.weights.values()) for p in props}) == 3
    assert [p.fidelity for p in props].count(levels[1]) == 3
    first = props[0]
    row = {**{f"w_{d}": v for d, v in first.weights.items()}, "fid_level": 0, "status": "ok", "loss_a": 1.0}
    nxt = opt.propose(RunTable(pd.DataFrame([row])), 1)[0]
    assert nxt.weights == first.weights and nxt.fidelity == levels[1]


def test_scaling_is_registered():
    assert "scaling" in mixopt.list_optimizers()
