"""CLIMB: round schedule and pruning, determinism and resume, pool mode, and discovery → CLIMB end to end.

Runs are scored by synthetic functions of the weights (no Ray, no proxy training), so every test takes seconds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mixopt.errors import InputError
from mixopt.optimizers import get_optimizer
from mixopt.optimizers.pool import hellinger, nearest, replay
from mixopt.runs import RunTable
from mixopt.simplex import clean_mixtures
from mixopt.spec import SearchSpec, load_dataset
from tests.conftest import ROOT, run_cli
from tests.test_data_layer import WORDS, planted_docs, spec_of, write_jsonl

COUNTS = {"a": 1000.0, "b": 2000.0, "c": 3000.0, "d": 4000.0, "e": 5000.0}
OPTIMUM = np.array([0.4, 0.05, 0.3, 0.05, 0.2])
FAST = {"rounds": [16, 8, 4], "n_candidates": 20_000, "predictor": "gp"}


def bowl(W: np.ndarray) -> np.ndarray:
    """A smooth objective with its minimum (2.0) at OPTIMUM, in Hellinger geometry."""
    return 2.0 + 3.0 * hellinger(np.atleast_2d(W), OPTIMUM) ** 2


def append(history: RunTable, W: np.ndarray, f=bowl, status: str = "ok") -> RunTable:
    df = pd.DataFrame(W, columns=history.weight_columns)
    df["status"] = status
    df["loss_x"] = f(W) if status == "ok" else np.nan
    return RunTable(pd.concat([history.df, df], ignore_index=True), token_counts=history.token_counts)


def run_search(opt, budget: int, chunk: int, counts: dict = COUNTS, f=bowl) -> RunTable:
    """The driver's loop without proxies: propose `chunk` at a time, score, append."""
    h = RunTable.empty(list(counts), token_counts=counts)
    while len(h) < budget:
        props = opt.propose(h, min(chunk, budget - len(h)))
        assert props, "climb proposed nothing"
        h = append(h, np.array([[p.weights[d] for d in h.domains] for p in props]), f)
    return h


def weights_of(props) -> np.ndarray:
    return np.array([list(p.weights.values()) for p in props])


# ------------------------------------------------------------------------------------------------ rounds


def test_round_schedule_is_read_off_the_history():
    opt = get_optimizer("climb")
    assert opt.settings.rounds == [64, 32, 16]  # CLIMB's recipe
    assert [opt.round_at(i) for i in (0, 63, 64, 95, 96, 111)] == [
        (0, 0, 64), (0, 0, 64), (1, 64, 32), (1, 64, 32), (2, 96, 16), (2, 96, 16)]
    assert opt.round_at(112) == (3, 112, 16) and opt.round_at(130) == (4, 128, 16)  # the last size repeats
    fast = get_optimizer("climb", seed=1, **FAST)
    h = RunTable.empty(list(COUNTS), token_counts=COUNTS)
    assert len(fast.propose(h, 100)) == 16  # never crosses into a round whose predictor needs these results
    h = append(h, weights_of(fast.propose(h, 10)))
    assert len(fast.propose(h, 100)) == 6
    h = append(h, weights_of(fast.propose(h, 6)))
    assert len(fast.propose(h, 100)) == 8


def test_later_rounds_are_drawn_from_the_predictors_best_candidates():
    opt = get_optimizer("climb", seed=3, **FAST)
    h = run_search(opt, 28, chunk=28)
    y = h.objective()
    first, second, third = y[:16], y[16:24], y[24:28]
    assert np.median(second) < np.median(first) - 0.1 and np.median(third) < np.median(first) - 0.1
    # Round 2 is a sample of the top max(8², 128) candidates of the predictor fitted on round 1 alone.
    earlier = h.head(16)
    model, _, _ = opt._fit(earlier)
    prior, _ = opt.prior(h)
    caps, _ = opt.caps(h, prior, None)
    pool, pool_y, _, _ = opt._simulate(model, prior, caps, opt.rng(earlier, "round1"), k=128)
    pool = clean_mixtures(pool, opt.settings)
    assert len(pool) == 128
    for w in h.weights[16:24]:
        assert np.abs(pool - w).max(axis=1).min() < 1e-9
    fresh = model.predict(np.random.default_rng(0).dirichlet(prior, 20_000))
    assert pool_y.max() <= np.quantile(fresh, 0.02)  # pruned: within the best ~1 % of the search space
    # A round of one mixture takes the single best candidate.
    one = get_optimizer("climb", seed=3, **{**FAST, "rounds": [16, 1]})
    (w1,) = weights_of(one.propose(earlier, 1))
    best, _, _, _ = one._simulate(model, prior, caps, one.rng(earlier, "round1"), k=1)
    np.testing.assert_allclose(w1, clean_mixtures(best, one.settings)[0], atol=1e-12)


@pytest.mark.slow
def test_recommend_is_the_best_candidate_within_the_caps():
    # Domain a would take 0.4, but the target run may repeat it at most 15 times: 15·1000/150000 = 0.1.
    opt = get_optimizer("climb", seed=0, target_tokens=150_000, **FAST)
    h = run_search(opt, 28, chunk=7)
    rec = opt.recommend(h)
    w = np.array([rec.weights[d] for d in h.domains])
    assert abs(w.sum() - 1) < 1e-9 and w[0] <= 0.1 + 1e-9
    assert rec.details["caps"]["a"] == pytest.approx(0.1)
    assert any("the best of" in n for n in rec.notes) and any("cap binds for: a" in n for n in rec.notes)
    assert bowl(w)[0] < np.median(h.objective()[:16])  # better than a typical first-round mixture
    assert rec.predicted == pytest.approx(rec.details["top_k_predicted"][0])
    assert [(r["round"], r["runs"], r["ok"]) for r in rec.details["rounds"]] == [(1, 16, 16), (2, 8, 8), (3, 4, 4)]
    assert (h.weights[:, 0] <= 0.1 + 2e-4 + 1e-9).all()  # every round's proposals keep the caps (up to rounding)


def test_round_one_samples_the_token_prior_like_regmix():
    from mixopt.simplex import sample_mixtures

    opt = get_optimizer("climb", seed=5, **FAST)
    h = RunTable.empty(list(COUNTS), token_counts=COUNTS)
    caps, _ = opt.caps(h, h.prior, None)
    expect = sample_mixtures(h.prior, 16, opt.rng(h, "round0"), opt.settings, caps=caps)
    np.testing.assert_array_equal(weights_of(opt.propose(h, 16)), expect)


# ------------------------------------------------------------------------------------------------ purity


@pytest.mark.slow
def test_deterministic_per_seed_and_independent_of_chunking():
    a = run_search(get_optimizer("climb", seed=7, **FAST), 28, chunk=28)
    b = run_search(get_optimizer("climb", seed=7, **FAST), 28, chunk=3)  # e.g. parallelism 3
    np.testing.assert_array_equal(a.weights, b.weights)
    c = run_search(get_optimizer("climb", seed=8, **FAST), 28, chunk=28)
    assert not np.allclose(a.weights[:16], c.weights[:16]) and not np.allclose(a.weights[16:], c.weights[16:])
    ra, rb = get_optimizer("climb", seed=7, **FAST).recommend(a), get_optimizer("climb", seed=7, **FAST).recommend(b)
    assert ra.weights == rb.weights and ra.predicted == rb.predicted


def test_resume_mid_round_proposes_the_same_mixtures():
    full = run_search(get_optimizer("climb", seed=2, **FAST), 28, chunk=28)
    # A driver killed 5 runs into round 2: 3 finished, 2 pending (no result). A new process resumes.
    h = append(full.head(19), full.weights[19:21], status="pending")
    fresh = get_optimizer("climb", seed=2, **FAST)
    np.testing.assert_array_equal(weights_of(fresh.propose(h, 100)), full.weights[21:24])
    # Runs of round 2 that already finished do not change the rest of round 2 (its predictor saw round 1 only).
    altered = h.df.copy()
    altered.loc[16:18, "loss_x"] = 99.0
    again = get_optimizer("climb", seed=2, **FAST)
    np.testing.assert_array_equal(weights_of(again.propose(RunTable(altered, token_counts=COUNTS), 3)),
                                  full.weights[21:24])
    # A failed run counts as a run of its round (positions stay aligned) and is never fitted on.
    failed = append(full.head(15), full.weights[15:16], status="failed")
    props = get_optimizer("climb", seed=2, **FAST).propose(failed, 8)
    assert len(props) == 8 and not np.allclose(weights_of(props), full.weights[16:24])


def test_settings_are_checked():
    with pytest.raises(ValueError, match="rounds"):
        get_optimizer("climb", rounds=[])
    with pytest.raises(ValueError, match="rounds"):
        get_optimizer("climb", rounds=[8, 0])
    with pytest.raises(ValueError, match="setting 'keep' of climb: .*largest later round"):
        get_optimizer("climb", rounds=[16, 32], keep=20)
    with pytest.raises(ValueError, match="has no setting 'round'"):
        get_optimizer("climb", round=[4])
    opt = get_optimizer("climb", seed=0, **FAST)
    h = append(RunTable.empty(list(COUNTS), token_counts=COUNTS),
               weights_of(opt.propose(RunTable.empty(list(COUNTS), token_counts=COUNTS), 16)), status="failed")
    with pytest.raises(InputError, match="climb needs at least 4 successful runs"):
        opt.propose(h, 4)


# ------------------------------------------------------------------------------------------------ pool mode


def test_pool_replay_reveals_only_what_it_chooses():
    rng = np.random.default_rng(0)
    sampler = get_optimizer("random", seed=4)
    empty = RunTable.empty(list(COUNTS), token_counts=COUNTS)
    own = weights_of(sampler.propose(empty, 20))
    W = np.concatenate([rng.dirichlet(np.ones(5), 60), own])
    pool = append(empty, W[rng.permutation(len(W))])
    rep = replay(sampler, pool, budget=20)
    # The sampler's own mixtures are in the pool: each is found exactly, and nothing else is revealed.
    assert rep.distances == pytest.approx([0.0] * 20, abs=1e-9) and len(set(rep.chosen)) == 20
    np.testing.assert_allclose(pool.weights[rep.chosen], own, atol=1e-12)
    assert len(rep.history) == 20 and rep.history.objective().tolist() == pool.objective()[rep.chosen].tolist()
    assert rep.calls == [0] * 20
    # CLIMB chooses round by round, never a pool run twice.
    climb = replay("climb", pool, budget=28, seed=1, **FAST)
    assert climb.calls == [0] * 16 + [1] * 8 + [2] * 4 and len(set(climb.chosen)) == 28
    assert replay("climb", pool, budget=28, seed=1, **FAST).chosen == climb.chosen
    i, d = nearest(pool, pool.weights[5] + 0.0)
    assert i == 5 and d == 0.0
    with pytest.raises(ValueError, match="budget"):
        replay(sampler, pool, budget=len(pool) + 1)


# ------------------------------------------------------------------------------------------------ discovery → climb


@pytest.fixture(scope="module")
def discovered(tmp_path_factory) -> Path:
    """Four planted kinds of text, one input domain each, clustered by discovery into a manifest."""
    from mixopt.data.discover import discover

    root = tmp_path_factory.mktemp("climb-corpus")
    for name, docs in planted_docs(n_per=40).items():
        write_jsonl(root / f"{name}.jsonl", [{"text": d} for d in docs])
    spec = spec_of({n: {"sources": [{"jsonl": str(root / f"{n}.jsonl")}]} for n in WORDS})
    out = root / "datasets" / "demo-clusters.yaml"
    d = discover(spec, k=8, out=out, seed=0)
    assert len(d.clusters) == 4
    return out


@pytest.mark.slow
def test_discovery_then_climb_end_to_end(discovered, tmp_path):
    spec = load_dataset(discovered)
    info = {d: s.discovered for d, s in spec.domains.items()}
    domains = list(info)
    # Synthetic proxy: the model learns each kind of text in proportion to how much of it the mixture holds;
    # the objective wants mostly code. The optimizer sees only cluster weights and losses.
    kinds = list(WORDS)
    share = np.array([[info[d].origins.get(k, 0) / info[d].documents for k in kinds] for d in domains])
    want = np.array([0.1, 0.6, 0.1, 0.2])

    def proxy_loss(W: np.ndarray) -> np.ndarray:
        return 2.0 + hellinger(np.atleast_2d(W) @ share, want) ** 2

    counts = {d: float(info[d].bytes) for d in domains}  # byte tokenizer: tokens ≈ bytes
    opt = get_optimizer("climb", seed=0, rounds=[12, 8, 4], n_candidates=20_000, predictor="gp",
                        manifest=str(discovered))
    h = run_search(opt, 24, chunk=2, counts=counts, f=proxy_loss)
    rec = opt.recommend(h)
    code = next(d for d in domains if info[d].origins.get("code", 0) > info[d].documents / 2)
    assert max(rec.weights, key=rec.weights.get) == code and rec.weights[code] > 0.4
    assert proxy_loss(np.array([rec.weights[d] for d in domains]))[0] < h.objective()[:12].min()
    clusters = rec.details["clusters"]
    assert list(clusters) == sorted(domains, key=lambda d: -rec.weights[d])
    assert clusters[code]["weight"] == rec.weights[code] and clusters[code]["documents"] == 40
    assert {"def", "return", "self", "lambda", "yield"} & set(clusters[code]["top_terms"])
    assert all(c["examples"] and c["top_terms"] for c in clusters.values())
    # The same run table from the command line: the recommendation names the clusters with their terms.
    h.to_csv(tmp_path / "runs.csv")
    r = run_cli("recommend-table", str(tmp_path / "runs.csv"), "--optimizer", "climb", "-s", "rounds=[12, 8, 4]",
                "-s", "n_candidates=20000", "-s", "predictor=gp", "-s", f"manifest={discovered}")
    assert r.returncode == 0, r.stderr
    assert "the clusters" in r.stdout and code in r.stdout and "document" in r.stdout


@pytest.mark.slow
def test_cluster_descriptions_are_optional(tmp_path):
    opt = get_optimizer("climb", seed=0, manifest=str(tmp_path / "nope.yaml"), **FAST)
    h = run_search(opt, 20, chunk=20)
    rec = opt.recommend(h)
    assert "clusters" not in rec.details and any("cluster descriptions left out" in n for n in rec.notes)
    assert "round 2 is incomplete: 4 of 8 runs" in rec.notes
    plain = get_optimizer("climb", seed=0, **FAST).recommend(h)
    assert "clusters" not in plain.details and plain.weights == rec.weights


def test_climb_demo_recipe_validates(discovered, tmp_path):
    """search/climb-demo.yaml against a discovered manifest laid out where the recipe's step 1 writes it."""
    (tmp_path / "search").mkdir()
    shutil.copy(ROOT / "search" / "climb-demo.yaml", tmp_path / "search" / "climb-demo.yaml")
    shutil.copytree(discovered.parent, tmp_path / "datasets")
    shutil.copytree(ROOT / "proxies", tmp_path / "proxies")
    spec = SearchSpec.from_yaml(tmp_path / "search" / "climb-demo.yaml")
    assert spec.optimizer.name == "climb" and sorted(spec.dataset.domains) == [f"cluster_0{i}" for i in range(4)]
    assert sum(spec.optimizer.settings["rounds"]) == spec.budget.runs
    assert spec.dataset.domains["cluster_00"].discovered is not None
    raw = yaml.safe_load((ROOT / "search" / "climb-demo.yaml").read_text())
    assert raw["optimizer"]["manifest"] == "datasets/demo-clusters.yaml"  # where step 1 writes it
