"""Pool-based multi-fidelity BO (ADMIRE's protocol) on released runs: cost to find the best high-fidelity run.

Each data set is a pool of finished runs at several fidelities. A method may only pick pool rows; a pick reveals
the row's objective and costs its level's cost (in units of one target-level run); a batch is paid in full. Two
measures, both against the same cumulative cost:

- pick-based (this benchmark's first measure): the cost at which a method first *trains* (picks) the pool's best
  target-level run, and the best true target-level objective it has trained by each cost.
- recommendation-based (ADMIRE's own loop, docs/methods.md §2f): after every round a method recommends one of the pool's
  target-level mixtures — mfbo and single-fidelity BO: the posterior-mean best of `recommend_pool` (ADMIRE's SF
  script), also the acquisition-based choice it reports (MES; qLogNEI in single mode; ADMIRE's MF script);
  RegMix: its LightGBM prediction's best, once its cheap runs are done; random search: the best target run it has
  trained. We report the cost after the round in which the recommendation *first* is the pool's best target
  mixture (a model can get there before paying for that run), the share of the run's later rounds in which it
  still is, and the simple regret (its true target objective − the best) by cost. A recommendation may leave the
  best again; "first reaches" is what ADMIRE's per-iteration log would show first, the regret curve the rest.

BO runs continue until the best run is picked and the posterior-mean recommendation is the best too (or twice the
pick's cost is spent; never past random search's expected cost). Unlike ADMIRE, no target-level mixtures are held
out of the pool (it held 16 of 64 1B Pile mixtures and 16 of 76 7B IFT ones out to measure the GP's error).

With --json one object: per data set `cost_ratio_vs_random` = mfbo's mean pick-based cost to the best ÷ random
search's expected cost ((n_target + 1) / 2; censored seeds count at that cost); `cost_ratio_vs_random_recommend` =
the same for mfbo's posterior-mean recommendation (random search's recommendation reaches the best exactly when it
picks it, so the denominator is the same; a seed whose run ended first counts at its end, a lower bound), and
`cost_ratio_vs_random_recommend_acquisition` for its acquisition-based choice.

- regmix: RegMix's Pile runs (docs/methods.md §1): 1M proxies (512 train + 256 test mixtures) and 60M proxies on the
  same 256 test mixtures; target 60M; objective loss_pile_cc; cost FLOPs-based, 1M = 1/60 of a 60M run.
- admire_ift: ADMIRE's Qwen2.5 SFT runs (0.5B/3B/7B; docs/methods.md §2); target 7B; objective −score_avg_id+ood;
  cost = mean measured train_time per size (0.177 / 0.482 / 1, ADMIRE's cost fractions).

Methods: random search at the target level (a random order of the target rows); single-fidelity BO (mfbo
mode single, qLogNEI on target rows only); RegMix (LightGBM on a random set of cheapest-level runs, then the
target rows in order of prediction); multi-fidelity BO (mfbo, MES per cost). Also measured: the simplex
transform the GP sees (sqrt, ilr, raw weights): as the Spearman ρ of the multi-fidelity GP's target-level
prediction on held-out target runs, and (raw weights; --transforms) as mf_bo[none] in the full loop.

    python benchmarks/mfbo_pool.py [--data DIR] [--seeds 5] [--quick] [--batch 2] [--transforms none,ilr]
        [--variant NAME=JSON ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mixopt.errors import InputError  # noqa: E402
from mixopt.optimizers import get_optimizer  # noqa: E402
from mixopt.optimizers.pool import simulate  # noqa: E402
from mixopt.predictors import make_predictor  # noqa: E402
from mixopt.runs import RunTable  # noqa: E402

warnings.filterwarnings("ignore")


@dataclass
class Pool:
    name: str
    table: RunTable
    objective: str
    cost: np.ndarray  # per row, in target-run units
    level_cost: list[float]
    target_mask: np.ndarray
    low_mask: np.ndarray
    regmix_low_runs: int
    checkpoints: list[float]

    @property
    def best_row(self) -> int:
        y = self.table.df[self.objective].to_numpy(float)
        return int(np.flatnonzero(self.target_mask)[np.argmin(y[self.target_mask])])

    @property
    def random_expected(self) -> float:
        return (self.target_mask.sum() + 1) / 2.0


def load_regmix(data: Path) -> Pool:
    parts = []
    for name, params in (("runs_1m_train.csv", 1e6), ("runs_1m_test.csv", 1e6), ("runs_60m_test.csv", 6e7)):
        df = pd.read_csv(data / "regmix" / name)
        df["fid_params"] = params
        parts.append(df)
    df = pd.concat(parts, ignore_index=True)
    cost = np.where(df["fid_params"] == 6e7, 1.0, 1e6 / 6e7)
    return Pool("regmix", RunTable(df, source="regmix"), "loss_pile_cc", cost, [1 / 60, 1.0],
                (df["fid_params"] == 6e7).to_numpy(), (df["fid_params"] == 1e6).to_numpy(), 512,
                [1, 2, 4, 8, 16, 32, 64, 128])


def load_admire(data: Path) -> Pool:
    df = pd.read_csv(data / "admire_ift" / "admire_ift_runs.csv")
    sizes = {"Qwen2.5-0.5B": 0.5e9, "Qwen2.5-3B": 3e9, "Qwen2.5-7B": 7e9}
    df["fid_params"] = df["model"].map(sizes)
    df["loss_neg_avg_score"] = -df["score_avg_id+ood"]  # mixopt minimises; the score is higher-is-better
    secs = df.groupby("fid_params")["train_time"].mean()
    level_cost = [float(secs[p] / secs[7e9]) for p in sorted(sizes.values())]
    cost = df["fid_params"].map(secs / secs[7e9]).to_numpy(float)
    return Pool("admire_ift", RunTable(df, source="admire_ift"), "loss_neg_avg_score", cost, level_cost,
                (df["fid_params"] == 7e9).to_numpy(), (df["fid_params"] == 0.5e9).to_numpy(), 64,
                [1, 2, 4, 8, 16, 32])


def oracle_bound(pool: Pool) -> dict:
    """What the cheaper levels can say about the best target run at most: with every cheaper level's score of
    every target mixture known for free, train the target runs in the order those scores (or their mean rank)
    give; the cost is the best target mixture's position in that order. A multi-fidelity method pays for the
    cheap runs and knows them only as far as it has trained them, so its pick-based cost can hardly beat this."""
    df = pool.table.df
    y = df[pool.objective].to_numpy(float)
    keys = pd.Series([tuple(np.round(r, 4)) for r in pool.table.weights])
    tgt = np.flatnonzero(pool.target_mask)
    best_key = keys[pool.best_row]
    ranks, out = [], {}
    for level in sorted(df.loc[~pool.target_mask, "fid_params"].unique()):
        rows = np.flatnonzero((df["fid_params"] == level).to_numpy())
        score = dict(zip(keys[rows], y[rows], strict=True))
        if not all(keys[i] in score for i in tgt):
            continue  # this level did not train every target mixture
        order = sorted(tgt, key=lambda i: score[keys[i]])
        pos = [keys[i] for i in order].index(best_key) + 1
        out[f"{level:.3g}"] = pos
        ranks.append(pd.Series([score[keys[i]] for i in tgt]).rank().to_numpy())
    if len(ranks) > 1:
        mean_rank = np.mean(ranks, axis=0)
        order = [keys[tgt[i]] for i in np.argsort(mean_rank, kind="stable")]
        out["mean rank"] = order.index(best_key) + 1
    if not out:
        return {}
    cost = float(min(out.values()))
    return {"position_by_level": out, "cost": cost, "ratio_vs_expected_random": float(cost / pool.random_expected)}


# ---------------------------------------------------------------------------------------------- methods


def trace_random(pool: Pool, seed: int) -> list[int]:
    return [int(i) for i in np.random.default_rng(seed).permutation(np.flatnonzero(pool.target_mask))]


def trace_regmix(pool: Pool, seed: int) -> list[int]:
    rng = np.random.default_rng(1000 + seed)
    low = rng.permutation(np.flatnonzero(pool.low_mask))[:pool.regmix_low_runs]
    y = pool.table.df[pool.objective].to_numpy(float)
    model = make_predictor("lightgbm", seed=seed).fit(pool.table.weights[low], y[low])
    hi = np.flatnonzero(pool.target_mask)
    order = hi[np.argsort(model.predict(pool.table.weights[hi]), kind="stable")]
    return [int(i) for i in low] + [int(i) for i in order]


def bo_settings(pool: Pool, mode: str, transform: str = "sqrt") -> dict:
    # kl_lambda 0: ADMIRE's own recommendation (the posterior-mean best), as the README's numbers were measured
    return {"mode": mode, "costs": pool.level_cost, "transform": transform, "kl_lambda": 0.0}


def run_bo(pool: Pool, seed: int, mode: str, batch: int, transform: str = "sqrt", min_cost: float = 0.0,
           extra: dict | None = None) -> tuple[list[int], list[int], list[dict]]:
    """Returns (revealed rows, round of each) and the recommendation after every round (`bo_recommendation`).

    The loop runs at least until the pool's best target run has been picked and `min_cost` is spent, then until
    the posterior-mean recommendation is that run's mixture too, but no further than twice the pick's cost (a
    recommendation that needs more than that is no shortcut; running on is what made full runs take hours), and
    never past random search's expected cost."""
    opt = get_optimizer("mfbo", seed=seed, objective=pool.objective, **bo_settings(pool, mode, transform),
                        **(extra or {}))
    best = pool.best_row
    budget = pool.random_expected  # beyond this a method is no better than random search on average
    recs: list[dict] = []
    picked_at: list[float] = []

    def after_round(rows: list[int]) -> bool:  # simulate calls this before each round: record, then decide
        if not recs or recs[-1]["n"] != len(rows):
            recs.append(bo_recommendation(pool, opt, rows))
        spent = recs[-1]["cost"]
        if best not in rows or spent < min_cost - 1e-9:
            return False
        if not picked_at:
            picked_at.append(spent)
        return recs[-1]["posterior_mean"] == best or spent >= 2 * picked_at[0] - 1e-9

    tr = simulate(opt, pool.table, pool.cost, budget=budget, batch=batch, stop=after_round)
    rows = tr["pool_row"].tolist()
    if recs[-1]["n"] != len(rows):  # the budget ran out: the last round's recommendation
        recs.append(bo_recommendation(pool, opt, rows))
    return rows, tr["round"].tolist(), recs


def target_row(pool: Pool, weights: dict[str, float]) -> int | None:
    """The pool's target-level row of a mixture (None if the pool has no target run of it)."""
    w = np.array([weights[d] for d in pool.table.domains])
    hit = np.flatnonzero(pool.target_mask & (np.abs(pool.table.weights - w[None, :]).max(axis=1) < 1e-9))
    return int(hit[0]) if len(hit) else None


def bo_recommendation(pool: Pool, opt, rows: list[int]) -> dict:
    """mfbo's `recommend_pool` over the pool's target-level mixtures after `rows` were revealed, as pool rows:
    the posterior-mean best and the acquisition-based choice (MES; qLogNEI in single mode). None before the GP
    can be fitted."""
    out = {"n": len(rows), "cost": float(pool.cost[rows].sum()), "posterior_mean": None, "acquisition": None}
    try:
        r = opt.recommend_pool(RunTable(pool.table.df.iloc[rows], source="revealed"), pool.table)
    except InputError:  # fewer than 2 usable runs (single-fidelity BO: at the target level)
        return out
    out["posterior_mean"] = target_row(pool, r.details["posterior_mean_best"]["weights"])
    out["acquisition"] = target_row(pool, r.details["acquisition_best"]["weights"])
    return out


def recs_random(pool: Pool, rows: list[int]) -> list[dict]:
    """Random search recommends the best target run it has trained, after each pick."""
    y = pool.table.df[pool.objective].to_numpy(float)
    out, best = [], None
    for k, i in enumerate(rows):
        if best is None or y[i] < y[best]:
            best = i
        out.append({"n": k + 1, "cost": float(pool.cost[rows[:k + 1]].sum()), "posterior_mean": best})
    return out


def recs_regmix(pool: Pool, rows: list[int]) -> list[dict]:
    """RegMix recommends its LightGBM prediction's best target mixture (the first target row of its trace) as soon
    as its cheapest-level runs are done; it fits on those runs only, so the recommendation stays."""
    k = next(k for k, i in enumerate(rows) if pool.target_mask[i])
    return [{"n": k, "cost": float(pool.cost[rows[:k]].sum()), "posterior_mean": rows[k]}]


# ---------------------------------------------------------------------------------------------- measuring


def reach_cost(pool: Pool, rows: list[int], rounds: list[int] | None = None, top: int = 1) -> float | None:
    """Cumulative cost when one of the pool's `top` best target runs is first revealed (None: never); a batch
    is paid for in full."""
    y = pool.table.df[pool.objective].to_numpy(float)
    hi = np.flatnonzero(pool.target_mask)
    goal = set(hi[np.argsort(y[hi], kind="stable")[:top]].tolist())
    hits = [k for k, i in enumerate(rows) if i in goal]
    if not hits:
        return None
    k = hits[0]
    if rounds is not None:  # everything proposed in the same round was running in parallel and is paid for
        k = max(i for i, r in enumerate(rounds) if r == rounds[k])
    return float(pool.cost[rows[:k + 1]].sum())


def best_at(pool: Pool, rows: list[int], checkpoints: list[float]) -> list[float]:
    """Best true target-level objective found within each cost checkpoint (NaN: none yet)."""
    y = pool.table.df[pool.objective].to_numpy(float)
    spent = np.cumsum(pool.cost[rows])
    out = []
    for c in checkpoints:
        got = [i for i, s in zip(rows, spent, strict=True) if s <= c + 1e-9 and pool.target_mask[i]]
        out.append(float(min(y[got])) if got else float("nan"))
    return out


def transform_probe(pool: Pool, seeds: list[int], n_target: int = 8) -> dict[str, tuple[float, float]]:
    """Spearman ρ of the MF GP's target-level mean on held-out target runs, given the lower-level runs (bounded
    to max_train as in a search) plus `n_target` random target runs, per transform."""
    from scipy.stats import spearmanr

    y = pool.table.df[pool.objective].to_numpy(float)
    out = {}
    for transform in ("sqrt", "ilr", "none"):
        rhos = []
        for seed in seeds:
            rng = np.random.default_rng(500 + seed)
            hi = rng.permutation(np.flatnonzero(pool.target_mask))
            train = np.concatenate([np.flatnonzero(~pool.target_mask), hi[:n_target]])
            hist = RunTable(pool.table.df.iloc[train], source="probe")
            opt = get_optimizer("mfbo", seed=seed, objective=pool.objective, **bo_settings(pool, "multi", transform))
            levels = opt._levels(hist, pool.table)
            sur = opt._surrogate(hist, levels, opt._data(hist, levels))
            m, _ = sur.mean_sd(sur.inputs(pool.table.weights[hi[n_target:]]))
            rhos.append(spearmanr(-m, y[hi[n_target:]])[0])
        out[transform] = (float(np.mean(rhos)), float(np.std(rhos)))
    return out


def fmt(values: list[float | None], cap: float | None = None) -> str:
    v = np.array([cap if x is None else x for x in values], dtype=float)
    if np.isnan(v).all():
        return "—"
    censored = any(x is None for x in values)
    return f"{'≥' if censored else ''}{np.nanmean(v):.2f} ± {np.nanstd(v):.2f}"


def run_methods(pool: Pool, seeds: list[int], batch: int, transforms: list[str], variants: dict[str, dict]
                ) -> dict[str, dict]:
    methods: dict[str, dict] = {"random": {"rows": [trace_random(pool, s) for s in seeds]},
                                "regmix": {"rows": [trace_regmix(pool, s) for s in seeds]}}
    methods["random"]["recs"] = [recs_random(pool, r) for r in methods["random"]["rows"]]
    methods["regmix"]["recs"] = [recs_regmix(pool, r) for r in methods["regmix"]["rows"]]
    for label, mode, transform, extra in [("sf_bo", "single", "sqrt", {}), ("mf_bo", "multi", "sqrt", {})] + [
            (f"mf_bo[{t}]", "multi", t, {}) for t in transforms] + [
            (f"mf_bo[{name}]", "multi", "sqrt", v) for name, v in variants.items()]:
        out: dict[str, list] = {"rows": [], "rounds": [], "recs": [], "seconds": []}
        for s in seeds:
            t1 = time.time()
            min_cost = pool.random_expected / 10 if label == "mf_bo" else 0.0  # for report_recommendation
            r, rd, rec = run_bo(pool, s, mode, batch, transform, min_cost=min_cost, extra=extra)
            for k, v in zip(("rows", "rounds", "recs", "seconds"), (r, rd, rec, time.time() - t1), strict=True):
                out[k].append(v)
        methods[label] = out
    return methods


def report_costs(pool: Pool, methods: dict[str, dict], n_seeds: int) -> dict:
    cap = pool.random_expected
    print(f"\ncost to reach the pool's best target run, and one of its 3 best (target-run units; mean ± sd over "
          f"{n_seeds} seeds; ÷ E[random]: ÷ random search's expected cost {cap:.1f}; BO runs stop at that cost)")
    print(f"{'method':<14}{'cost to best':>18}{'reached':>9}{'÷ E[random]':>13}{'÷ random':>10}"
          f"{'cost to top-3':>18}{'s/seed':>8}")
    out: dict = {}
    same_seed_random = None
    for m, v in methods.items():
        rounds = v.get("rounds", [None] * n_seeds)
        c = [reach_cost(pool, r, rd) for r, rd in zip(v["rows"], rounds, strict=True)]
        c3 = [reach_cost(pool, r, rd, top=3) for r, rd in zip(v["rows"], rounds, strict=True)]
        vals = np.array([cap if x is None else x for x in c], dtype=float)
        if m == "random":
            same_seed_random = float(vals.mean())
        reached = sum(x is not None for x in c)
        sec = v.get("seconds")
        print(f"{m:<14}{fmt(c, cap):>18}{f'{reached}/{len(c)}':>9}{vals.mean() / cap:>13.3f}"
              f"{vals.mean() / same_seed_random:>10.3f}{fmt(c3, cap):>18}{np.mean(sec) if sec else 0:>8.1f}")
        out[m] = {"cost_to_best": [None if x is None else round(x, 4) for x in c],
                  "cost_to_best_mean": float(vals.mean()), "cost_to_best_sd": float(vals.std()), "reached": reached,
                  "ratio_vs_expected_random": float(vals.mean() / cap),
                  "ratio_vs_random_same_seeds": float(vals.mean() / same_seed_random),
                  "cost_to_top3": [None if x is None else round(x, 4) for x in c3]}
    return out


def report_curves(pool: Pool, methods: dict[str, dict], out: dict) -> None:
    print(f"\nbest true target-level {pool.objective} found by cumulative cost (mean ± sd; — = no target run yet "
          "in some seed)")
    print(f"{'method':<14}" + "".join(f"{f'≤{c:g}':>17}" for c in pool.checkpoints))
    for m, v in methods.items():
        curves = np.array([best_at(pool, r, pool.checkpoints) for r in v["rows"]])
        cells = ["—" if np.isnan(col).any() else f"{col.mean():.4f} ± {col.std():.4f}" for col in curves.T]
        print(f"{m:<14}" + "".join(f"{c:>17}" for c in cells))
        out[m]["best_by_cost"] = {f"{c:g}": [None if np.isnan(x) else float(x) for x in curves[:, j]]
                                  for j, c in enumerate(pool.checkpoints)}


def report_recommendation(pool: Pool, recs: list[list[dict]]) -> dict:
    """mf_bo's two recommendations once 1/10 of random search's expected cost is spent (end of that round)."""
    y = pool.table.df[pool.objective].to_numpy(float)
    at = [next(r for r in rs if r["cost"] >= pool.random_expected / 10 - 1e-9) for rs in recs]
    pm = [float("nan") if r["posterior_mean"] is None else float(y[r["posterior_mean"]]) for r in at]
    aq = [float("nan") if r["acquisition"] is None else float(y[r["acquisition"]]) for r in at]
    spent = [r["cost"] for r in at]
    print(f"\nmf_bo recommend() after ≈{np.mean(spent):.1f} cost (1/10 of random's expectation), true target "
          f"{pool.objective}: posterior-mean best {np.nanmean(pm):.4f} ± {np.nanstd(pm):.4f}, acquisition-based "
          f"choice {np.nanmean(aq):.4f} ± {np.nanstd(aq):.4f} (pool best {y[pool.best_row]:.4f}, "
          f"target median {np.median(y[pool.target_mask]):.4f})")
    return {"cost": spent, "posterior_mean_best_true": pm, "acquisition_best_true": aq}


def rec_reach(pool: Pool, recs: list[dict], key: str) -> tuple[float | None, float | None, float]:
    """Cost after the first round whose `key` recommendation is the pool's best target mixture (None: not within
    the run), the share of the run's later rounds in which it still is (None: no later round), and the cost at
    which the run's recommendations end (the censoring point)."""
    hit = [r[key] == pool.best_row for r in recs]
    end = recs[-1]["cost"]
    if not any(hit):
        return None, None, end
    k = hit.index(True)
    return recs[k]["cost"], (float(np.mean(hit[k + 1:])) if k + 1 < len(hit) else None), end


def regret_at(pool: Pool, recs: list[dict], key: str, checkpoints: list[float]) -> list[float]:
    """Simple regret (true target objective of the recommendation − the pool's best) of the last recommendation
    made within each cost checkpoint; NaN: none yet. After a run stops the last one is carried forward."""
    y = pool.table.df[pool.objective].to_numpy(float)
    out = []
    for c in checkpoints:
        done = [r for r in recs if r["cost"] <= c + 1e-9 and r[key] is not None]
        out.append(float(y[done[-1][key]] - y[pool.best_row]) if done else float("nan"))
    return out


def report_recommend(pool: Pool, methods: dict[str, dict], n_seeds: int, out: dict) -> None:
    """ADMIRE's measure (docs/methods.md §2f): the recommendation after every round, against cumulative cost."""
    cap = pool.random_expected
    rows = []
    for m, v in methods.items():
        keys = ["posterior_mean"] + (["acquisition"] if "rounds" in v else [])
        for key in keys:
            acq = "qLogNEI" if m == "sf_bo" else "MES"
            label = {"random": "best trained", "regmix": "LightGBM best"}.get(
                m, "post. mean" if key == "posterior_mean" else acq)
            rows.append((m, key, label))
    print(f"\nrecommendation = the pool's best target mixture (ADMIRE's protocol): cost after the round in which it "
          f"first is (mean ± sd over {n_seeds} seeds; ≥: a lower bound, some seed's run ended first and counts at "
          "its end — BO: best picked and 2× that cost spent; RegMix: E[random]), share of the later rounds of the "
          "run in which it still is, and the regret of the last recommendation")
    print(f"{'method':<14}{'recommends':<15}{'cost to best':>18}{'reached':>9}{'÷ E[random]':>13}{'stays':>8}"
          f"{'final regret':>15}")
    for m, key, label in rows:
        reach = [rec_reach(pool, rs, key) for rs in methods[m]["recs"]]
        c = [x for x, _, _ in reach]
        stay = [s for _, s, _ in reach if s is not None]
        # not reached within the run: its end is a lower bound (RegMix and random: random's expected cost)
        ends = [cap if m in ("random", "regmix") else e for _, _, e in reach]
        vals = np.array([e if x is None else x for x, e in zip(c, ends, strict=True)], dtype=float)
        final = [regret_at(pool, rs, key, [np.inf])[0] for rs in methods[m]["recs"]]
        curves = np.array([regret_at(pool, rs, key, pool.checkpoints) for rs in methods[m]["recs"]])
        cell = f"{'≥' if None in c else ''}{vals.mean():.2f} ± {vals.std():.2f}"
        print(f"{m:<14}{label:<15}{cell:>18}{f'{sum(x is not None for x in c)}/{len(c)}':>9}"
              f"{vals.mean() / cap:>13.3f}{f'{np.mean(stay):.2f}' if stay else '—':>8}"
              f"{np.nanmean(final):>15.4f}")
        out[m].setdefault("recommend", {})[key] = {
            "label": label, "cost_to_best": [None if x is None else round(x, 4) for x in c],
            "cost_to_best_mean": float(vals.mean()), "reached": sum(x is not None for x in c),
            "censored_at": [round(e, 4) for x, e in zip(c, ends, strict=True) if x is None],
            "ratio_vs_expected_random": float(vals.mean() / cap), "stays": stay, "final_regret": final,
            "regret_by_cost": {f"{cp:g}": [None if np.isnan(x) else float(x) for x in curves[:, j]]
                               for j, cp in enumerate(pool.checkpoints)}}
    print(f"\nsimple regret of the recommendation by cumulative cost ({pool.objective}; mean ± sd; — = no "
          "recommendation yet in some seed; a stopped run's last recommendation is carried forward)")
    print(f"{'method':<14}{'recommends':<15}" + "".join(f"{f'≤{c:g}':>16}" for c in pool.checkpoints))
    for m, key, label in rows:
        curves = np.array([regret_at(pool, rs, key, pool.checkpoints) for rs in methods[m]["recs"]])
        cells = ["—" if np.isnan(col).any() else f"{col.mean():.4f} ± {col.std():.4f}" for col in curves.T]
        print(f"{m:<14}{label:<15}" + "".join(f"{c:>16}" for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "benchmarks")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 seeds, no transform probe or raw-weight loop")
    ap.add_argument("--batch", type=int, default=2, help="proposals per round (parallel workers)")
    ap.add_argument("--datasets", default="regmix,admire_ift")
    ap.add_argument("--transforms", default=None, help="other GP transforms to run in the full MF loop "
                    "(default: none, i.e. raw weights; --quick: no extra loop)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                    help='an mfbo variant to run as mf_bo[NAME], e.g. kg=\'{"acquisition": "kg"}\' (repeatable)')
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    seeds = list(range(2 if args.quick else args.seeds))
    variants = {v.split("=", 1)[0]: json.loads(v.split("=", 1)[1]) for v in args.variant}
    loaders = {"regmix": load_regmix, "admire_ift": load_admire}
    result: dict = {"seeds": len(seeds), "batch": args.batch, "datasets": {}}
    t_all = time.time()
    for name in args.datasets.split(","):
        t0 = time.time()
        pool = loaders[name](args.data)
        y = pool.table.df[pool.objective].to_numpy(float)
        print(f"\n=== {name}: {len(pool.table)} pool runs, {int(pool.target_mask.sum())} at the target level; "
              f"level costs {[round(c, 4) for c in pool.level_cost]} (target = 1); best target run "
              f"{pool.table.run_ids()[pool.best_row]} ({pool.objective} = {y[pool.best_row]:.5g}); batch {args.batch}")
        extra = args.transforms if args.transforms is not None else ("" if args.quick else "none")
        bound = oracle_bound(pool)
        if bound:
            print(f"oracle bound: every cheaper-level score known for free, target runs in that order → the best "
                  f"target mixture is run {bound['position_by_level']} → cost ≥ {bound['cost']:.0f} "
                  f"({bound['ratio_vs_expected_random']:.3f} of random's expected cost)")
        methods = run_methods(pool, seeds, args.batch, [t for t in extra.split(",") if t], variants)
        res = report_costs(pool, methods, len(seeds))
        report_curves(pool, methods, res)
        report_recommend(pool, methods, len(seeds), res)
        ds: dict = {"pool_runs": len(pool.table), "target_runs": int(pool.target_mask.sum()),
                    "level_costs": pool.level_cost, "random_expected_cost": pool.random_expected, "methods": res,
                    "cost_ratio_vs_random": res["mf_bo"]["ratio_vs_expected_random"],
                    "cost_ratio_vs_random_same_seeds": res["mf_bo"]["ratio_vs_random_same_seeds"],
                    "cost_ratio_vs_random_recommend":
                        res["mf_bo"]["recommend"]["posterior_mean"]["ratio_vs_expected_random"],
                    "cost_ratio_vs_random_recommend_acquisition":
                        res["mf_bo"]["recommend"]["acquisition"]["ratio_vs_expected_random"]}
        ds["recommendation"] = report_recommendation(pool, methods["mf_bo"]["recs"])
        ds["oracle_bound"] = bound
        if not args.quick:
            probe = transform_probe(pool, seeds[:3])
            print("\nsimplex transform (MF GP on the lower-level runs + 8 target runs → Spearman ρ on the held-out "
                  "target runs, mean ± sd over 3 draws): " + ", ".join(f"{t} {m:.3f} ± {s:.3f}"
                                                                     for t, (m, s) in probe.items()))
            ds["transform_probe_spearman"] = {t: m for t, (m, _) in probe.items()}
        ds["seconds"] = round(time.time() - t0, 1)
        result["datasets"][name] = ds
    result["seconds"] = round(time.time() - t_all, 1)
    print(f"\ntotal {result['seconds']:.0f} s")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
