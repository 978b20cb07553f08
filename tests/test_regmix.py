"""RegMix against its released runs, its sampler's statistics, caps and determinism."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

import mixopt
from mixopt.optimizers import get_optimizer
from mixopt.predictors import fit_predictor
from mixopt.runs import RunTable
from mixopt.simplex import SamplerSettings, sample_mixtures
from tests.conftest import REGMIX_TRAIN, need_regmix, run_cli

PRIOR = [0.11328527, 0.07960865, 0.00391349, 0.1853759, 0.05108136, 0.01596293, 0.10175077, 0.00370752,
         0.06652935, 0.00175077, 0.02708548, 0.23686921, 0.01184346, 0.00792997, 0.00803296, 0.03882595,
         0.04644696]


@pytest.fixture(scope="module")
def released():
    train = RunTable.from_csv(need_regmix())
    d = REGMIX_TRAIN.parent
    return train, RunTable.from_csv(d / "runs_1m_test.csv"), RunTable.from_csv(d / "runs_60m_test.csv")


@pytest.mark.parametrize("name, ref_1m, ref_60m", [("lightgbm", 0.990, 0.986), ("linear", 0.902, 0.893)])
def test_reproduces_released_spearman(released, name, ref_1m, ref_60m):
    train, t1, t60 = released
    model = fit_predictor(name, train, objective="loss_pile_cc")
    assert spearmanr(model.predict(t1.weights), t1.objective("loss_pile_cc"))[0] == pytest.approx(ref_1m, abs=0.005)
    assert spearmanr(model.predict(t60.weights), t60.objective("loss_pile_cc"))[0] == pytest.approx(ref_60m,
                                                                                                    abs=0.005)


@pytest.mark.slow
def test_gp_on_sqrt_weights_beats_the_paper_on_60m(released):
    train, _, t60 = released
    model = fit_predictor("gp", train, objective="loss_pile_cc")
    assert spearmanr(model.predict(t60.weights), t60.objective("loss_pile_cc"))[0] >= 0.989


def test_sampler_statistics():
    prior = np.array(PRIOR) / np.sum(PRIOR)
    s = SamplerSettings()
    W = sample_mixtures(prior, 20_000, np.random.default_rng(0), s)
    tempered = prior ** 0.5 / (prior ** 0.5).sum()
    # Every Dirichlet(p~·strength) has mean p~: the sample mean must follow the tempered prior.
    np.testing.assert_allclose(W.mean(axis=0), tempered, atol=0.01)
    nz = W[W > 0]
    assert nz.min() >= s.min_weight * 0.99  # renormalised after rounding, as RegMix does
    np.testing.assert_allclose(W.sum(axis=1), 1, atol=1e-9)
    # Small concentrations give near one-hot mixtures, large ones mixtures near the prior: both must occur.
    nonzero = (W > 0).sum(axis=1)
    assert 0.05 < (W.max(axis=1) > 0.9).mean() < 0.6
    assert (nonzero <= 2).mean() > 0.05 and (nonzero >= 10).mean() > 0.05


def test_caps_hold_in_propose_and_recommend():
    rng = np.random.default_rng(1)
    counts = {"a": 1e6, "b": 1e7, "c": 1e8}
    a = rng.uniform(0, 0.06, 80)
    rest = rng.dirichlet(np.ones(2), size=80) * (1 - a[:, None])
    W = np.column_stack([a, rest])
    df = pd.DataFrame(W, columns=["w_a", "w_b", "w_c"])
    df["loss_a"] = 3 - 20 * W[:, 0] + rng.normal(0, 0.005, 80)  # more of `a` is always better...
    table = RunTable(df, token_counts=counts)
    opt = get_optimizer("regmix", objective="loss_a", n_candidates=50_000, max_epochs=4, target_tokens=1e8,
                        predictor="lightgbm")
    cap_a = 4 * 1e6 / 1e8  # ...but `a` may repeat at most 4 times in a 1e8-token run
    for p in opt.propose(table, 50):
        assert p.weights["a"] <= cap_a + 2e-4 + 1e-12
    rec = opt.recommend(table)
    assert rec.weights["a"] <= cap_a + 1e-12 and rec.weights["a"] > 0.8 * cap_a
    assert any("repetition cap" in n and n.endswith(": a") for n in rec.notes), (rec.weights, rec.notes)
    assert rec.details["caps"]["a"] == pytest.approx(cap_a)


@pytest.mark.slow
def test_recommend_is_deterministic_and_screening_matches_exact(released):
    train, _, _ = released
    kw = dict(objective="loss_pile_cc", seed=3, n_candidates=100_000, n_bootstrap=0, predictor="lightgbm",
              prior=dict(zip(train.domains, PRIOR, strict=True)))
    a = mixopt.recommend(train, **kw)
    b = mixopt.recommend(train, **kw)
    assert a.weights == b.weights and a.predicted == b.predicted
    exact = mixopt.recommend(train, screen_keep=0, **kw)
    diff = max(abs(a.weights[d] - exact.weights[d]) for d in train.domains)
    assert diff < 0.02, diff
    assert a.details["scored_exactly"] < exact.details["scored_exactly"] == exact.details["feasible"]
    assert max(a.weights, key=a.weights.get) == "pile_cc"


@pytest.mark.slow
def test_uncertainty_and_spread_are_reported(released):
    train, _, _ = released
    rec = mixopt.recommend(train, objective="loss_pile_cc", n_candidates=20_000, n_bootstrap=4,
                           predictor="lightgbm")
    assert rec.uncertainty is not None and 0 < rec.uncertainty < 0.5
    assert set(rec.details["top_k_spread"]) == set(train.domains)


def test_duplicates_and_nan_losses_are_noted():
    df = pd.DataFrame({"w_a": [0.5, 0.5, 0.2, 0.9, 0.1, 0.3], "w_b": [0.5, 0.5, 0.8, 0.1, 0.9, 0.7],
                       "loss_a": [1.0, 1.1, float("nan"), 0.5, 2.0, 1.5]})
    ok, y = RunTable(df).usable("loss_a")
    assert len(ok) == 5 and any("repeat an earlier mixture" in n for n in ok.notes)
    assert any("non-finite" in n for n in ok.notes)


@pytest.mark.slow
def test_recommend_table_command(tmp_path):
    need_regmix()
    counts = tmp_path / "counts.yaml"
    train = RunTable.from_csv(REGMIX_TRAIN)
    counts.write_text("\n".join(f"{d}: {p * 1e9:.0f}" for d, p in zip(train.domains, PRIOR, strict=True)))
    res = run_cli("recommend-table", str(REGMIX_TRAIN), "--objective", "loss_pile_cc", "--token-counts",
                  str(counts), "-s", "n_candidates=50000", "-s", "n_bootstrap=0", "-s", "predictor=lightgbm", "--json")
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    assert abs(sum(rec["weights"].values()) - 1) < 1e-9 and rec["method"] == "regmix"
    assert max(rec["weights"], key=rec["weights"].get) == "pile_cc"
    res = run_cli("recommend-table", str(REGMIX_TRAIN), "--objective", "loss_nope")
    assert res.returncode == 2 and "loss_pile_cc" in res.stderr


@pytest.mark.slow
def test_default_ensemble_screening_matches_exact(released):
    train, _, _ = released
    sub = RunTable(train.df.iloc[:128])
    kw = dict(objective="loss_pile_cc", seed=5, n_candidates=50_000)
    a = mixopt.recommend(sub, **kw)
    assert a.settings["predictor"] == "ensemble" and a.uncertainty is not None
    exact = mixopt.recommend(sub, screen_keep=0, **kw)
    assert max(abs(a.weights[d] - exact.weights[d]) for d in sub.domains) < 0.02
    assert a.weights == mixopt.recommend(sub, **kw).weights


def test_regularised_optimum_moves_toward_the_prior_and_lambda_zero_is_the_paper_optimum():
    """λ·KL(w ‖ prior) pulls the optimum toward the token prior; λ = 0 with the aggregate model is RegMix's
    own recommendation (the mean of the top-k), and every recommendation states its distance from the prior."""
    from mixopt.simplex import kl_to_prior

    sub = RunTable.from_csv(need_regmix()).head(48)
    fast = dict(n_candidates=20_000, predictor="lightgbm", n_estimators=200, per_domain="aggregate")
    r0 = mixopt.recommend(sub, optimizer="regmix", objective="loss_pile_cc", seed=3, kl_lambda=0, **fast)
    r1 = mixopt.recommend(sub, optimizer="regmix", objective="loss_pile_cc", seed=3, kl_lambda=0.3, **fast)
    prior = np.array([r0.details["prior"][d] for d in sub.domains])
    w0 = np.array([r0.weights[d] for d in sub.domains])
    w1 = np.array([r1.weights[d] for d in sub.domains])
    assert kl_to_prior(w1, prior)[0] < kl_to_prior(w0, prior)[0]
    assert r1.details["distance_to_prior"]["kl"] == pytest.approx(kl_to_prior(w1, prior)[0])
    assert r0.details["kl_lambda"] == 0 and r0.details["kl_lambda_choice"] == "set"
    auto = mixopt.recommend(sub, optimizer="regmix", objective="loss_pile_cc", seed=3, **fast)
    assert auto.details["kl_lambda"] in auto.settings["kl_grid"] and auto.details["kl_lambda_choice"] == "out-of-fold"
    labels = [c["kl_lambda"] for c in auto.details["candidates"]]
    assert labels[0] == auto.details["kl_lambda"] and sorted(labels) == auto.settings["kl_grid"]


def test_per_domain_modelling_is_compared_out_of_fold():
    sub = RunTable.from_csv(need_regmix()).head(32)
    rec = mixopt.recommend(sub, optimizer="regmix", objective=None, seed=0, n_candidates=5_000,
                           predictor="lightgbm", n_estimators=100, kl_lambda=0.05)
    cv = rec.details["modelling"]
    assert set(cv) == {"aggregate", "raw", "log"} and rec.details["per_domain"] in cv
    best = max(cv.values(), key=lambda v: v["spearman"])["spearman"]
    assert cv[rec.details["per_domain"]]["spearman"] == pytest.approx(best, abs=1e-3)
    assert any("out-of-fold Spearman" in n for n in rec.notes)


def test_thin_evidence_is_said_beside_the_recommendation(capsys):
    """Losses that are pure noise: the predictor ranks held-out runs no better than chance, predicts the
    optimum worse than the best measured run, and tight caps leave a handful of feasible candidates. Each is a
    warning, printed right under the out-of-fold ρ and the best measured run, before any other note."""
    from mixopt.cli import _print_recommendation

    rng = np.random.default_rng(7)
    W = rng.dirichlet(np.ones(3), size=12)
    df = pd.DataFrame(W, columns=["w_a", "w_b", "w_c"])
    df["loss_a"] = 3.0 + rng.normal(0, 0.05, 12)
    df["run_id"] = [f"r{i}" for i in range(12)]
    table = RunTable(df, token_counts={"a": 100.0, "b": 100.0, "c": 100.0})
    # caps of 0.35 per domain: Dirichlet(prior) draws seldom keep all three shares under them
    rec = mixopt.recommend(table, optimizer="regmix", seed=0, predictor="linear", n_candidates=2000, top_k=64,
                           n_bootstrap=0, kl_lambda=0, target_tokens=300 * 15 / 1.05)
    warnings = [n for n in rec.notes if n.startswith("warning:")]
    assert rec.details["oof_spearman"] < 0.5 and rec.details["feasible"] < 64
    assert len(warnings) == 3, rec.notes
    assert "ranks held-out runs poorly" in warnings[0] and "worse than the best measured run" in warnings[1]
    assert f"only {rec.details['feasible']} of 2,000 simulated mixtures" in warnings[2]
    _print_recommendation(rec.to_dict(), None)
    out = " ".join(capsys.readouterr().out.split())  # as one line, whatever the terminal's width
    evidence = out[out.index("evidence:"):out.index("warning:")]
    assert "out-of-fold ρ 0." in evidence and f"best measured run {rec.details['best_run']['run_id']}" in evidence
    assert out.count("warning:") == 3 and out.rindex("warning:") < out.index(" • "), out
