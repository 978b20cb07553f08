"""The verification ladder's choices, on run tables built by hand (no training): which mixtures it trains and
how its verdict follows the paired seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mixopt.runs import RunTable
from mixopt.search import ladder
from mixopt.spec import SearchSpec, load_dataset
from tests.conftest import DEMO_DOMAINS, ROOT

COUNTS = {d: float(i + 1) * 1e6 for i, d in enumerate(DEMO_DOMAINS)}


def spec(**over) -> SearchSpec:
    return SearchSpec(name="t", dataset=load_dataset(ROOT / "datasets" / "demo.yaml"),
                      proxy=dict(n_layer=1, d_model=16, n_head=2, tokens=8192),
                      optimizer={"name": "regmix"}, budget={"runs": 16}, **over)


def search_table(n: int = 12, seed: int = 0) -> RunTable:
    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.ones(len(DEMO_DOMAINS)), n)
    df = pd.DataFrame(W, columns=[f"w_{d}" for d in DEMO_DOMAINS])
    for j, d in enumerate(DEMO_DOMAINS):
        df[f"loss_{d}"] = 3 - W[:, j] + 0.01 * j
    df["status"] = "ok"
    df["run_id"] = [f"r{i:04d}" for i in range(n)]
    return RunTable(df, token_counts=COUNTS)


def test_plan_keeps_candidates_apart_and_puts_baselines_first():
    s = spec(include_mixtures=[{d: 1 / 7 for d in DEMO_DOMAINS}, {"python": 0.5, "prose": 0.5}])
    table = search_table()
    rec = {d: 0.0 for d in DEMO_DOMAINS} | {"python": 1.0}
    near = {d: 0.0 for d in DEMO_DOMAINS} | {"python": 0.97, "prose": 0.03}  # within 0.1 of rec: skipped
    far = {d: 0.0 for d in DEMO_DOMAINS} | {"cpp": 1.0}
    rungs = ladder.plan(s, rec, "regmix", {"candidates": [{"label": "a", "weights": near},
                                                          {"label": "b", "weights": far}]}, table)
    assert [r.kind for r in rungs[:3]] == ["baseline"] * 3
    assert [r.label for r in rungs[:3]] == ["natural", "uniform", "include_mixtures[1]"]  # [0] is uniform
    cands = [r for r in rungs if r.kind == "candidate"]
    assert len(cands) == 3 and cands[0].label == "regmix (recommended)" and cands[1].label == "b"
    assert cands[2].label.startswith("best run")  # filled from the best measured runs
    w = [np.array([r.weights[d] for d in DEMO_DOMAINS]) for r in rungs]
    for i in range(len(w)):
        for j in range(i):
            assert np.abs(w[i] - w[j]).sum() >= 0.1


def ladder_table(rungs, values: dict[str, list[float]], seeds: list[int]) -> RunTable:
    rows = []
    for r in rungs:
        for s, v in zip(seeds, values[r.label], strict=True):
            rows.append({**{f"w_{d}": r.weights[d] for d in DEMO_DOMAINS}, **{f"loss_{d}": v for d in DEMO_DOMAINS},
                         "status": "ok" if v == v else "failed", "source": ladder.LADDER + r.label, "seed": s})
    return RunTable(pd.DataFrame(rows), token_counts=COUNTS)


@pytest.mark.parametrize("cand, verdict", [
    ([2.90, 2.91, 2.92], "candidate"),     # better on every seed by 0.1: beyond chance
    ([2.99, 3.02, 3.00], "uniform"),       # within noise of the better baseline: the baseline is kept
    ([3.20, 3.25, 3.30], "uniform"),       # worse
])
def test_decide_recommends_a_candidate_only_beyond_chance(cand, verdict):
    s = spec(ladder={"seeds": 3, "candidates": 1})
    rungs = ladder.plan(s, {d: 0.0 for d in DEMO_DOMAINS} | {"python": 1.0}, "regmix", {}, search_table())
    seeds = ladder.ladder_seeds(s)
    values = {"natural": [3.05, 3.06, 3.04], "uniform": [3.00, 3.01, 3.02], "regmix (recommended)": cand}
    out = ladder.decide(rungs, ladder_table(rungs, values, seeds), s)
    assert out["baseline"] == "uniform"
    assert out["winner"] == ("regmix (recommended)" if verdict == "candidate" else "uniform")
    assert out["beats"] is (verdict == "candidate")
    assert abs(out["gap"] - (np.mean(cand) - 3.01)) < 1e-9 and out["se"] >= 0


def test_decide_ignores_a_mixture_that_failed_on_a_seed():
    s = spec(ladder={"seeds": 2, "candidates": 1})
    rungs = ladder.plan(s, {d: 0.0 for d in DEMO_DOMAINS} | {"python": 1.0}, "regmix", {}, search_table())
    values = {"natural": [3.05, 3.06], "uniform": [3.00, 3.01], "regmix (recommended)": [2.0, float("nan")]}
    out = ladder.decide(rungs, ladder_table(rungs, values, ladder.ladder_seeds(s)), s)
    assert out["winner"] == "uniform" and "no candidate finished" in out["reason"]


def test_ladder_fidelity_is_the_next_level_or_the_proxy_for_longer():
    assert ladder.ladder_fidelity(spec()) == {"level": 0, "tokens": 4 * 8192}
    up = spec(fidelities=[dict(name="big", n_layer=2, d_model=32, n_head=2, tokens=16384)])
    assert ladder.ladder_fidelity(up) == {"level": 1}
    assert ladder.ladder_seeds(up) == ladder.ladder_seeds(up) and len(set(ladder.ladder_seeds(up))) == 2


@pytest.mark.parametrize("tie, objective, baseline", [
    ("objective", None, "uniform"),            # the mean over domains weighs them equally: uniform
    ("ladder-mean", None, "natural"),          # the lower ladder mean, within noise or not
    ("objective", "loss_data", "natural"),     # natural holds more `data` than uniform does (COUNTS)
])
def test_baselines_within_noise_leave_the_choice_to_the_objective(tie, objective, baseline):
    """Natural and uniform within noise on the ladder (natural's mean lower): the objective's own weights on the
    domains decide by default; the search's one-seed runs of both are only reported."""
    s = spec(ladder={"seeds": 3, "candidates": 1, "baseline_tie": tie},
             **({"objective": objective} if objective else {}))
    table = search_table()
    rungs = ladder.plan(s, {d: 0.0 for d in DEMO_DOMAINS} | {"python": 1.0}, "regmix", {}, table)
    values = {"natural": [3.00, 3.04, 3.01], "uniform": [3.02, 3.01, 3.03], "regmix (recommended)": [3.3] * 3}
    lt = ladder_table(rungs, values, ladder.ladder_seeds(s))
    by = {r.label: r.weights for r in rungs}
    extra = pd.DataFrame([{**{f"w_{d}": by[n][d] for d in DEMO_DOMAINS}, **{f"loss_{d}": v for d in DEMO_DOMAINS},
                           "status": "ok", "run_id": f"b{n}"} for n, v in (("natural", 3.2), ("uniform", 3.1))])
    searched = RunTable(pd.concat([table.df, extra], ignore_index=True), token_counts=COUNTS)
    out = ladder.decide(rungs, lt, s, searched)
    assert out["winner"] == baseline and out["baselines_apart"] is False
    assert out["baseline_choice"] == ("objective" if tie == "objective" else "ladder")
    assert ("nearest the objective" in out["reason"]) is (tie == "objective")
    assert out["baselines_in_search"] == {"natural": pytest.approx(3.2), "uniform": pytest.approx(3.1)}


def _null_ladders(test: str, n_ladders: int, seeds: int = 3, candidates: int = 3) -> float:
    """Share of ladders that recommend a candidate when no candidate is better than uniform (same mean, same
    noise, a shared effect per seed as common random numbers give)."""
    s = spec(ladder={"seeds": seeds, "candidates": candidates, "test": test})
    rungs = ladder.plan(s, {d: 0.0 for d in DEMO_DOMAINS} | {"python": 1.0}, "regmix", {}, search_table())
    assert sum(r.kind == "candidate" for r in rungs) == candidates
    seed_ids = ladder.ladder_seeds(s)
    rng = np.random.default_rng(7)
    accepted = 0
    for _ in range(n_ladders):
        seed_effect = rng.normal(0, 0.03, seeds)
        values = {r.label: (3.0 + seed_effect + rng.normal(0, 0.01, seeds)).tolist() for r in rungs}
        values["natural"] = [v + 0.5 for v in values["natural"]]  # uniform is the better baseline
        accepted += ladder.decide(rungs, ladder_table(rungs, values, seed_ids), s)["beats"]
    return accepted / n_ladders


@pytest.mark.slow
def test_the_ladder_rarely_recommends_a_candidate_that_is_no_better():
    """The default test keeps false acceptances near its alpha (2.5 %) for the ladder as a whole; two of a
    candidate's own standard errors over 3 seeds, the best of 3 candidates, accepted far more often."""
    assert _null_ladders("pooled-t", 300) <= 0.04
    assert _null_ladders("2se", 300) >= 0.12


def test_pooled_paired_se_is_the_two_way_residual():
    rng = np.random.default_rng(3)
    y = 3 + rng.normal(0, 0.05, (1, 4)) + rng.normal(0, 0.02, (6, 1)) + rng.normal(0, 0.01, (6, 4))
    se, df = ladder.pooled_paired_se(y.tolist())
    assert df == 15
    resid = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + y.mean()
    assert se == pytest.approx(np.sqrt(2 * (resid ** 2).sum() / 15 / 4))
    # seed and mixture effects do not enter it
    assert ladder.pooled_paired_se((y + np.arange(4)[None, :] + np.arange(6)[:, None]).tolist())[0] == \
        pytest.approx(se)


def test_baselines_apart_on_the_ladder_keep_the_lower_mean():
    s = spec(ladder={"seeds": 3, "candidates": 1})
    rungs = ladder.plan(s, {d: 0.0 for d in DEMO_DOMAINS} | {"python": 1.0}, "regmix", {}, search_table())
    values = {"natural": [2.70, 2.71, 2.69], "uniform": [3.00, 3.01, 3.00], "regmix (recommended)": [3.3] * 3}
    out = ladder.decide(rungs, ladder_table(rungs, values, ladder.ladder_seeds(s)), s)
    assert out["baselines_apart"] is True and out["winner"] == "natural" and out["baseline_choice"] == "ladder"
