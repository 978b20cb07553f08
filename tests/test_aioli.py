"""Aioli and DoReMi as mixing schedules, their optimizers, and the static log-linear law.

The algorithmic tests drive the schedules with a simulated linear dynamic mixing law (L ← L − A·q each step,
q the mixture in force), whose interaction matrix is known; the trainer tests run real tiny proxies.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mixopt.errors import InputError
from mixopt.laws.loglinear import fit_loglinear
from mixopt.optimizers import get_optimizer, list_optimizers
from mixopt.optimizers.aioli import aioli_path
from mixopt.proxies import train_proxies, train_proxy
from mixopt.runs import RunTable
from mixopt.schedules import SCHEDULES, Feedback, PiecewiseSchedule, make_schedule
from mixopt.schedules.aioli import AioliSchedule, plan
from mixopt.schedules.doremi import DoReMiSchedule
from mixopt.spec import ProxySpec

TINY = dict(n_layer=1, d_model=32, n_head=2, seq_len=64, batch_size=8, eval_windows=4)
FAST_AIOLI = {"name": "aioli", "lp_rounds": 1, "lp_steps": 2, "update_steps": 30}


def simulate(schedule, domains: list[str], A: np.ndarray, steps: int, noise: float = 0.0, seed: int = 0,
             start_loss: float = 5.0, targets: list[str] | None = None) -> list[dict[str, float]]:
    """Run a schedule against L_{t+1} = L_t − A·q_t (+ noise), one row of A per validation loss (`targets`,
    default the domains); returns the mixture in force at every step."""
    rng = np.random.default_rng(seed)
    names = targets or domains
    L = np.full(A.shape[0], start_loss)
    weights = schedule.start(domains, steps)
    seen = []
    for step in range(1, steps + 1):
        q = np.array([weights.get(d, 0.0) for d in domains])
        seen.append(dict(weights))
        L = L - A @ (q / q.sum()) + rng.normal(0, noise, len(L))
        if step % schedule.every == 0 and step < steps:
            snapshot = {d: float(v) for d, v in zip(names, L, strict=True)}
            new = schedule.update(Feedback(step=step, total_steps=steps, weights=dict(weights), train_losses={},
                                           evaluate=lambda s=snapshot: s))
            if new is not None:
                weights = new
    return seen


@pytest.mark.parametrize("factor", [0.75, 1.0])
def test_learnparams_recovers_the_interaction_matrix(factor):
    A = np.array([[0.030, 0.010], [0.004, 0.020]])  # per step: row i = loss i, column j = training on j
    s = AioliSchedule({"a": 0.5, "b": 0.5}, lp_rounds=4, lp_steps=4, update_steps=50, one_hot_factor=factor,
                      seed=1)
    simulate(s, ["a", "b"], A, steps=400, noise=1e-4)
    assert len(s.rounds) == 8  # rounds start at 4, 54, …, 354
    for r in s.rounds:  # each probe lasts lp_steps steps, so A is measured per lp_steps
        np.testing.assert_allclose(r["A"] / 4, A, atol=2e-3)
        assert r["A_used"].min() >= 0 and r["A_used"].sum() == pytest.approx(1.0)


def test_learnparams_with_three_domains_and_a_validation_only_target():
    A = np.array([[0.05, 0.00, 0.01], [0.00, 0.03, 0.00], [0.01, 0.01, 0.02], [0.02, 0.02, 0.02]])
    doms = ["a", "b", "c"]
    s = AioliSchedule({d: 1 / 3 for d in doms}, lp_rounds=2, lp_steps=3, update_steps=40, targets=[*doms, "t"])
    simulate(s, doms, A, steps=200, targets=[*doms, "t"])
    assert s.rounds[-1]["A"].shape == (4, 3)  # the fourth loss is a validation-only target
    np.testing.assert_allclose(s.rounds[-1]["A"] / 3, A, atol=1e-9)


def test_eg_moves_weight_to_the_domain_whose_training_lowers_total_loss():
    A = np.array([[0.03, 0.00], [0.02, 0.01]])  # training on a lowers both losses; on b only its own, less
    for ema in (None, 0.1):
        s = AioliSchedule({"a": 0.5, "b": 0.5}, lp_rounds=2, lp_steps=2, update_steps=20, eta=1.0, ema=ema)
        simulate(s, ["a", "b"], A, steps=200)
        ps = [r["p"][0] for r in s.rounds]
        assert all(p > 0.5 for p in ps)
        if ema is None:  # cumulative updates keep pushing
            assert all(b > a for a, b in zip(ps, ps[1:], strict=False))
    # the mirror image moves the other way
    s = AioliSchedule({"a": 0.5, "b": 0.5}, lp_rounds=2, lp_steps=2, update_steps=20)
    simulate(s, ["a", "b"], A[::-1, ::-1], steps=200)
    assert s.rounds[-1]["p"][0] < 0.5


def test_plan_and_bad_settings():
    segs = plan(100, 2, AioliSchedule({}, lp_rounds=1, lp_steps=5, update_steps=30).settings)
    assert [(s.start, s.end, s.kind) for s in segs] == [
        (0, 5, "initial"), (5, 15, "learn"), (15, 35, "mix"), (35, 45, "learn"), (45, 65, "mix"),
        (65, 75, "learn"), (75, 95, "mix"), (95, 100, "mix")]
    with pytest.raises(ValueError, match="must exceed the LearnParams steps"):
        AioliSchedule({"a": 0.5, "b": 0.5}, lp_rounds=2, lp_steps=10, update_steps=40).start(["a", "b"], 1000)
    with pytest.raises(ValueError, match="no room for one round"):
        AioliSchedule({"a": 0.5, "b": 0.5}, lp_rounds=2, lp_steps=10, update_steps=100).start(["a", "b"], 30)
    with pytest.raises(ValueError, match="at least two domains"):
        AioliSchedule({"a": 1.0}).start(["a", "b"], 1000)
    with pytest.raises(ValueError, match="equals 1/2"):
        AioliSchedule({"a": 0.5, "b": 0.5}, one_hot_factor=0.5).start(["a", "b"], 1000)
    with pytest.raises(ValueError, match="no setting 'lp_round'"):
        make_schedule({"name": "aioli", "lp_round": 3}, {"a": 1.0})


def _table(results, schedules, domains, seeds) -> RunTable:
    rows = []
    for i, (r, sched, seed) in enumerate(zip(results, schedules, seeds, strict=True)):
        rows.append({"run_id": f"r{i}", "seed": seed, "status": r.status, "steps": r.steps,
                     **{f"w_{d}": r.trajectory[0]["weights"].get(d, 0.0) for d in domains},
                     **{f"loss_{d}": v for d, v in r.losses.items()},
                     "schedule": sched, "trajectory": r.trajectory, "mean_weights": r.mean_weights})
    return RunTable(pd.DataFrame(rows))


@pytest.mark.slow
def test_real_run_respects_the_budget_and_stays_on_the_simplex(prepared):
    train, val = prepared.load("train"), prepared.load("val")
    spec = ProxySpec(**TINY, tokens=8 * 64 * 100)
    w = {d: 1 / len(prepared.domains) for d in prepared.domains}
    r = train_proxy(spec, w, train, val, prepared.vocab_size, seed=0, schedule=dict(FAST_AIOLI, seed=5))
    assert r.status == "ok" and r.steps == spec.steps == 100 and r.tokens == spec.tokens
    steps = [p["step"] for p in r.trajectory]
    assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] < spec.steps
    for p in r.trajectory:
        v = np.array(list(p["weights"].values()))
        assert (v >= 0).all() and v.sum() == pytest.approx(1.0)
    assert sum(r.mean_weights.values()) == pytest.approx(1.0)
    # LearnParams (7 probes × 2 steps) at 2, 32, 62; Aioli's own p from 16, 46, 76; 10 steps left, too few
    probe_starts = [s for s, p in zip(steps, r.trajectory, strict=True)
                    if abs(max(p["weights"].values()) - 0.75) < 1e-9]
    assert probe_starts[:3] == [2, 4, 6] and {16, 46, 76} <= set(steps)
    assert len(probe_starts) == 21


def test_online_run_is_deterministic_so_a_pending_run_restarts_identically(prepared):
    train, val = prepared.load("train"), prepared.load("val")
    spec = ProxySpec(**TINY, tokens=8 * 64 * 70)
    w = {d: 1 / len(prepared.domains) for d in prepared.domains}
    a, b, c = (train_proxy(spec, w, train, val, prepared.vocab_size, seed=3, schedule=dict(FAST_AIOLI, seed=s))
               for s in (1, 1, 2))
    assert a.trajectory == b.trajectory and a.losses == b.losses and a.mean_weights == b.mean_weights
    assert a.trajectory != c.trajectory  # another probe order


def test_aioli_optimizer_proposes_and_recommends_from_real_runs(prepared):
    train, val = prepared.load("train"), prepared.load("val")
    domains = prepared.domains
    opt = get_optimizer("aioli", seed=4, lp_rounds=1, lp_steps=2, update_steps=30, static="average")
    empty = RunTable.empty(domains, token_counts=prepared.token_counts)
    props = opt.propose(empty, 2)
    assert props == get_optimizer("aioli", seed=4, lp_rounds=1, lp_steps=2, update_steps=30).propose(empty, 2)
    assert len({p.schedule["seed"] for p in props}) == 2
    assert all(p.schedule["name"] == "aioli" and p.weights == pytest.approx({d: 1 / 7 for d in domains})
               for p in props)
    natural = get_optimizer("aioli", initial="natural").propose(empty, 1)[0]
    assert natural.weights == pytest.approx(dict(zip(domains, empty.prior, strict=True)))

    spec = ProxySpec(**TINY, tokens=8 * 64 * 100)
    res = train_proxies(spec, [p.weights for p in props], [11, 12], train, val, prepared.vocab_size,
                        schedules=[p.schedule for p in props])
    table = _table(res, [p.schedule for p in props], domains, [11, 12])
    rec = opt.recommend(table)
    d = rec.details
    assert sum(rec.weights.values()) == pytest.approx(1.0) and rec.weights == pytest.approx(d["average"])
    assert rec.runs_used == ["r0", "r1"]
    # final = mean of the two runs' last proportions, which are Aioli's p (no probe at the end)
    finals = np.mean([[r.trajectory[-1]["weights"][x] for x in domains] for r in res], axis=0)
    assert list(d["final"].values()) == pytest.approx(list(finals / finals.sum()))
    # probes are left out of the average, but not out of what was sampled
    assert max(d["average"].values()) < 0.3 and d["sampled_average"] != pytest.approx(d["average"])
    assert get_optimizer("aioli", lp_rounds=1, lp_steps=2, update_steps=30, static="final").recommend(
        table).weights == pytest.approx(d["final"])
    # the exported schedule is valid and replays the mean path in a real run
    sched = d["schedule"]
    PiecewiseSchedule({}, sched["stages"])
    assert [s["until"] for s in sched["stages"]] == pytest.approx([16 / 100, 46 / 100, 76 / 100, 1.0])
    replay = train_proxy(spec, sched["stages"][0]["weights"], train, val,
                         prepared.vocab_size, seed=0, schedule=sched)
    assert [p["step"] for p in replay.trajectory] == [0, 16, 46, 76]
    assert replay.mean_weights == pytest.approx(d["average"], abs=1e-9)
    assert rec.to_dict() == opt.recommend(table).to_dict()  # a pure function of the table


def test_recommend_reads_a_run_table_written_to_csv(tmp_path):
    traj = [{"step": 0, "weights": {"a": 0.5, "b": 0.5}}, {"step": 2, "weights": {"a": 0.75, "b": 0.25}},
            {"step": 4, "weights": {"a": 0.25, "b": 0.75}}, {"step": 6, "weights": {"a": 0.6, "b": 0.4}}]
    sched = {"name": "aioli", "lp_rounds": 1, "lp_steps": 2, "update_steps": 10, "seed": 1}
    df = pd.DataFrame([{"run_id": "r0", "seed": 3, "status": "ok", "steps": 12, "w_a": 0.5, "w_b": 0.5,
                        "loss_a": 2.0, "loss_b": 2.5, "schedule": sched, "trajectory": traj, "mean_weights": None}])
    RunTable(df).to_csv(tmp_path / "runs.csv")
    rec = get_optimizer("aioli").recommend(RunTable.from_csv(tmp_path / "runs.csv"))
    assert rec.details["average"] == pytest.approx({"a": 0.5 * 0.5 + 0.5 * 0.6, "b": 0.5 * 0.5 + 0.5 * 0.4})
    assert rec.details["final"] == pytest.approx({"a": 0.6, "b": 0.4})


def test_aioli_path_drops_probes():
    traj = [{"step": 0, "weights": {"a": 0.5, "b": 0.5}}, {"step": 2, "weights": {"a": 0.75, "b": 0.25}},
            {"step": 4, "weights": {"a": 0.25, "b": 0.75}}, {"step": 6, "weights": {"a": 0.6, "b": 0.4}},
            {"step": 12, "weights": {"a": 0.25, "b": 0.75}}, {"step": 14, "weights": {"a": 0.75, "b": 0.25}},
            {"step": 16, "weights": {"a": 0.7, "b": 0.3}}]
    path = aioli_path({"name": "aioli", "lp_rounds": 1, "lp_steps": 2, "update_steps": 10}, traj, 20, ["a", "b"])
    assert [(s, list(w)) for s, w in path] == [(0, [0.5, 0.5]), (6, [0.6, 0.4]), (16, [0.7, 0.3])]


def test_recommend_needs_online_runs():
    table = RunTable(pd.DataFrame({"w_a": [0.5], "w_b": [0.5], "loss_a": [2.0], "loss_b": [2.0]}))
    with pytest.raises(InputError, match="at least one successful run with the aioli schedule"):
        get_optimizer("aioli").recommend(table)


# ------------------------------------------------------------------------------------------------------ DoReMi

def test_doremi_schedule_is_group_dro_against_the_reference():
    s = DoReMiSchedule({"a": 0.5, "b": 0.5, "c": 0.0}, reference={"a": 2.0, "b": 2.0}, eta=1.0, smoothing=0.01)
    w = s.start(["a", "b", "c"], 100)
    assert w == {"a": 0.5, "b": 0.5}  # c had no initial weight: it takes no part
    w = s.update(Feedback(1, 100, w, {"a": 3.0, "b": 1.5}, lambda: {}))
    expected = np.array([0.5 * np.e, 0.5]) / (0.5 * np.e + 0.5) * 0.99 + 0.005
    assert [w["a"], w["b"]] == pytest.approx(list(expected))
    w2 = s.update(Feedback(2, 100, w, {"b": 2.5}, lambda: {}))  # a absent: keeps its excess of 1.0
    assert w2["a"] > w["a"] or w2["b"] > w["b"]
    assert s.excess.tolist() == [1.0, 0.5]
    assert sum(w2.values()) == pytest.approx(1.0) and min(w2.values()) >= 0.005
    with pytest.raises(ValueError, match="no reference loss"):
        DoReMiSchedule({"a": 1.0, "b": 1.0}, reference={"a": 2.0}).start(["a", "b"], 10)


def test_doremi_optimizer_reference_first_then_dro_runs(prepared):
    train, val = prepared.load("train"), prepared.load("val")
    domains = prepared.domains
    opt = get_optimizer("doremi", seed=0)
    empty = RunTable.empty(domains, token_counts=prepared.token_counts)
    first = opt.propose(empty, 3)
    assert len(first) == 1 and first[0].schedule is None
    assert first[0].weights == pytest.approx(dict(zip(domains, empty.prior, strict=True)))

    spec = ProxySpec(**TINY, tokens=8 * 64 * 40)
    ref = train_proxy(spec, first[0].weights, train, val, prepared.vocab_size, seed=1)
    hist = _table([ref], [None], domains, [1])
    hist = RunTable(hist.df, token_counts=prepared.token_counts)
    props = opt.propose(hist, 2)
    assert len(props) == 2 and all(p.schedule["name"] == "doremi" for p in props)
    assert props[0].schedule["reference"] == pytest.approx(ref.losses)
    res = train_proxies(spec, [p.weights for p in props], [2, 3], train, val, prepared.vocab_size,
                        schedules=[p.schedule for p in props])
    assert all(r.status == "ok" and len(r.trajectory) > 5 for r in res)
    full = RunTable(pd.concat([hist.df, _table(res, [p.schedule for p in props], domains, [2, 3]).df],
                              ignore_index=True), token_counts=prepared.token_counts)
    rec = opt.recommend(full)
    assert rec.weights == pytest.approx(rec.details["average"]) and len(rec.runs_used) == 2
    means = np.mean([[r.mean_weights.get(d, 0) for d in domains] for r in res], axis=0)
    assert list(rec.weights.values()) == pytest.approx(list(means / means.sum()))  # ᾱ, as the trainer saw it
    # α changes every step; the export averages it over at most max_stages slices, keeping the mean
    assert len(rec.details["schedule"]["stages"]) == 40
    stages = get_optimizer("doremi", max_stages=8).recommend(full).details["schedule"]["stages"]
    PiecewiseSchedule({}, stages)
    assert len(stages) == 8 and [s["until"] for s in stages] == pytest.approx([(i + 1) / 8 for i in range(8)])
    spans = np.diff([0.0] + [s["until"] for s in stages])
    replayed = sum(span * np.array([s["weights"][d] for d in domains]) for span, s in zip(spans, stages, strict=True))
    assert replayed == pytest.approx(list(rec.weights.values()), abs=1e-9)


def test_registries():
    assert {"aioli", "doremi"} <= set(list_optimizers()) and {"aioli", "doremi"} <= set(SCHEDULES)


# ------------------------------------------------------------------------------------------- log-linear law

def test_loglinear_law_recovers_a_known_law_and_its_optimum():
    rng = np.random.default_rng(0)
    m = 3
    A = np.array([[3.0, 0.5, -1.0], [0.0, 2.0, 1.0]])
    c, b = np.array([1.0, 2.0]), np.array([1.5, 0.8])

    def truth(P):
        return c + b * np.exp(-P @ A.T)

    P = rng.dirichlet(np.ones(m), 25)
    law = fit_loglinear(P, truth(P) + rng.normal(0, 1e-3, (25, 2)), domains=list("xyz"), targets=["u", "v"])
    test = rng.dirichlet(np.ones(m), 500)
    assert np.abs(law.predict(test) - truth(test)).max() < 0.02
    assert law.A.sum(axis=1) == pytest.approx([0, 0], abs=1e-9) and (law.rmse < 2e-3).all()
    p, v = law.optimise()
    grid = rng.dirichlet(np.ones(m), 100_000)
    best = truth(grid).mean(axis=1)
    assert p.sum() == pytest.approx(1.0) and (p >= 0).all()
    assert truth(p[None])[0].mean() <= best.min() + 1e-3
    capped, _ = law.optimise(caps=np.array([0.3, 1.0, 1.0]))
    assert capped[0] <= 0.3 + 1e-9 and capped.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 5 runs"):
        fit_loglinear(P[:4], truth(P[:4]))
