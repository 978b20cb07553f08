"""The `elasticity` optimizer: it recovers the per-domain slopes of a known law, absorbs each seed's luck, puts
each domain's share in proportion to its slope, honours floors and caps, and refuses what it cannot fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mixopt.errors import InputError
from mixopt.optimizers import get_optimizer
from mixopt.runs import RunTable

DOMAINS = ["a", "b", "c", "d"]
SLOPES = np.array([0.02, 0.08, 0.04, 0.06])
COUNTS = {"a": 4e6, "b": 1e6, "c": 2e6, "d": 3e6}


def law_table(n: int = 24, seeds: int = 1, noise: float = 0.002, offsets: tuple[float, ...] = (0.0,),
              rng_seed: int = 0) -> RunTable:
    """Runs of L_d = 2 + offset(seed) − s_d·log w_d + noise on Dirichlet(3) mixtures floored at 1 %."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for i in range(n):
        w = np.maximum(rng.dirichlet(np.full(len(DOMAINS), 3.0)), 0.01)
        w /= w.sum()
        seed = i % seeds
        loss = 2 + offsets[seed] - SLOPES * np.log(w) + rng.normal(0, noise, len(DOMAINS))
        rows.append({**{f"w_{d}": x for d, x in zip(DOMAINS, w, strict=True)},
                     **{f"loss_{d}": x for d, x in zip(DOMAINS, loss, strict=True)}, "status": "ok", "seed": seed})
    return RunTable(pd.DataFrame(rows), token_counts=COUNTS)


def test_recovers_the_slopes_and_shares_in_proportion_to_them():
    rec = get_optimizer("elasticity", seed=0).recommend(law_table())
    got = np.array([rec.details["elasticity"][d]["s"] for d in DOMAINS])
    assert np.allclose(got, SLOPES, atol=0.005)
    w = np.array([rec.weights[d] for d in DOMAINS])
    assert np.allclose(w, SLOPES / SLOPES.sum(), atol=0.03)
    assert rec.details["gain_over_uniform"] < -2 * rec.details["gain_over_uniform_se"]
    assert not any(n.startswith("warning:") for n in rec.notes)


def test_each_seeds_luck_is_an_offset_not_an_effect_of_the_mixture():
    lucky = law_table(n=24, seeds=2, offsets=(0.0, 0.5))
    rec = get_optimizer("elasticity", seed=0).recommend(lucky)
    got = np.array([rec.details["elasticity"][d]["s"] for d in DOMAINS])
    assert np.allclose(got, SLOPES, atol=0.005)
    assert "2 seed/fidelity group(s)" in " ".join(rec.notes)


def test_floor_caps_and_a_flat_domain():
    table = law_table()
    table.df["loss_a"] = 2.0  # a's loss does not move with its share: it gets the floor
    rec = get_optimizer("elasticity", seed=0, min_share=0.05, max_epochs=1.0, target_tokens=3e6).recommend(table)
    w = rec.weights
    assert abs(sum(w.values()) - 1) < 1e-9 and w["a"] == pytest.approx(0.05, abs=1e-6)
    assert w["b"] <= 1e6 / 3e6 + 1e-6  # one epoch of b's 1M tokens in a 3M-token run
    assert any("no loss fell" in n for n in rec.notes)


def test_proposals_start_with_uniform_and_the_prior_and_are_deterministic():
    empty = RunTable.empty(DOMAINS, COUNTS)
    opt = get_optimizer("elasticity", seed=3)
    props = opt.propose(empty, 6)
    W = np.array([[p.weights[d] for d in DOMAINS] for p in props])
    assert np.allclose(W[0], 0.25) and np.allclose(W[1], [0.4, 0.1, 0.2, 0.3])
    assert np.allclose(W.sum(axis=1), 1) and W.min() >= 0.01 / 1.04
    again = np.array([[p.weights[d] for d in DOMAINS] for p in get_optimizer("elasticity", seed=3).propose(empty, 6)])
    assert np.array_equal(W, again)


def test_what_it_cannot_fit_is_refused():
    with pytest.raises(InputError, match="at least 4"):
        get_optimizer("elasticity").recommend(law_table(n=3))
    table = law_table()
    table.df["loss_other"] = 1.0
    with pytest.raises(InputError, match="no objective column"):
        get_optimizer("elasticity", objective={"metrics": ["loss_other"]}).recommend(table)
