"""CLIMB in pool mode on released runs: the best mixture its rounds select vs one-shot RegMix and random.

Pools (every mixture's objective was measured, and is revealed to a method only when it chooses that run):
- RegMix's 768 1M-parameter Pile runs (train + test, 17 domains), objective the Pile-CC loss, RegMix's token
  prior and its 15-epoch caps;
- OLMix's `full_recomputation` swarm (512 runs, 64 domains), objective the mean of its 110 BPB metrics; the
  source's token prior is not in the released CSV, so the pool's mean mixture stands in for it, without caps.

Each method gets the same number of runs (a CLIMB schedule's sum: 64 + 32 + 16 = 112, and 32 + 16 + 8 = 56):
- random: that many pool runs drawn uniformly, and that many proposed by RegMix's sampler (snapped to the
  nearest unused pool mixture, as every proposal here); its pick is the best of them;
- regmix: RegMix's sampler proposes them in one shot (snapped to the nearest unused pool mixture), then its
  recommendation (mean of the top-128 of 1M simulated candidates) is snapped to the nearest pool mixture;
- climb: its rounds (mixopt.optimizers.pool.replay), then its recommendation (the predictor's best of 100k
  candidates), snapped the same way; with the default predictor and with the paper's LightGBM.
Reported over seeds (mean ± sd): the best objective among the runs chosen; the final pick (the recommendation
snapped to the nearest pool mixture), its rank in the pool (share of pool runs better than it) and how far it was
snapped (Hellinger; √2 is the largest); and the final predictor's own pick among the pool runs not chosen.
Snapping favours pool mixtures on the edge of the pool (their neighbourhoods are large), so a sampler's
proposals reach extreme pool runs more often than a uniform draw does: compare methods that snap with each other.

    python benchmarks/climb_pool.py [--data DIR] [--seeds 5] [--schedules '64,32,16;32,16,8'] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from regmix_pile import PRIOR  # noqa: E402  (RegMix notebook's token prior)

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
METHODS = {"random (uniform over the pool)": ("uniform-pool", {}), "random (RegMix's sampler)": ("random", {}),
           "regmix (one shot)": ("regmix", {}),
           "climb": ("climb", {}), "climb, paper LightGBM": ("climb", {"predictor": "climb"})}


def load_pools(data: Path) -> dict[str, dict]:
    """Each pool as a RunTable whose token counts are the prior (shares), so every sampler starts from it."""
    from mixopt.runs import RunTable

    rm = pd.concat([pd.read_csv(data / "regmix" / f"runs_1m_{s}.csv") for s in ("train", "test")],
                   ignore_index=True)
    names = [c[2:] for c in rm.columns if c.startswith("w_")]
    regmix = RunTable(rm, token_counts=dict(zip(names, PRIOR, strict=True)), source="regmix 1M train+test")
    ol = pd.read_csv(data / "olmix" / "full_recomputation.csv")
    bpb = ol[[c for c in ol.columns if c.startswith("bpb_")]].mean(axis=1).rename("loss_bpb_mean")
    ol = pd.concat([ol, bpb], axis=1)
    cols = [c for c in ol.columns if c.startswith("w_")]
    olmix = RunTable(ol, token_counts=dict(zip([c[2:] for c in cols], ol[cols].mean(axis=0), strict=True)),
                     source="olmix full_recomputation")
    return {
        "regmix": {"table": regmix, "objective": "loss_pile_cc", "label": "RegMix 1M Pile runs", "settings": {}},
        "olmix": {"table": olmix, "objective": "loss_bpb_mean", "label": "OLMix full_recomputation",
                  "settings": {"max_epochs": None}},
    }


def run_one(method: str, pool: dict, schedule: list[int], seed: int, n_candidates: int | None) -> dict:
    from mixopt.optimizers import get_optimizer
    from mixopt.optimizers.pool import nearest, replay

    table, objective = pool["table"], pool["objective"]
    y = table.objective(objective)
    budget = sum(schedule)
    name, extra = METHODS[method]
    t0 = time.perf_counter()
    pool_pick = None
    if name == "uniform-pool":
        chosen = np.random.default_rng(seed).choice(len(table), budget, replace=False)
        final, dist, rounds = int(chosen[np.argmin(y[chosen])]), 0.0, []
    elif name == "random":  # the sampler RegMix and CLIMB's first round use, through the same snapping
        chosen = np.array(replay("random", table, budget, seed=seed, objective=objective).chosen)
        final, dist, rounds = int(chosen[np.argmin(y[chosen])]), 0.0, []
    else:
        settings = {**pool["settings"], **extra}
        if name == "climb":
            settings["rounds"] = schedule
        if n_candidates:
            settings["n_candidates"] = n_candidates
        opt = get_optimizer(name, seed=seed, objective=objective, **settings)
        rep = replay(opt, table, budget)
        chosen = np.array(rep.chosen)
        rec = opt.recommend(rep.history)
        final, dist = nearest(table, np.array([rec.weights[d] for d in table.domains]))
        rounds = [r["median"] for r in rec.details.get("rounds", [])]
        # Where the pool is far from the recommendation (OLMix: 64 domains, 512 runs), snapping decides the
        # pick; the final predictor's own choice among the unchosen pool mixtures is the fairer test of it.
        model, _, _ = opt._fit(rep.history)
        free = np.setdiff1d(np.arange(len(table)), chosen)
        pool_pick = float(y[free[np.argmin(model.predict(table.weights[free]))]])
    return {"best": float(y[chosen].min()), "final": float(y[final]), "final_rank": float((y < y[final]).mean()),
            "final_distance": dist, "pool_pick": pool_pick, "round_medians": rounds,
            "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding regmix/ and olmix/")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--schedules", default="64,32,16;32,16,8",
                    help="CLIMB's runs per round, schedules separated by ';'; every method gets a schedule's sum")
    ap.add_argument("--pools", default="regmix,olmix")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="2 seeds, 20k candidates (a smoke run)")
    args = ap.parse_args()
    schedules = [[int(x) for x in sch.split(",")] for sch in args.schedules.split(";")]
    seeds = range(2 if args.quick else args.seeds)
    n_cand = 20_000 if args.quick else None
    pools = load_pools(args.data)
    result: dict = {"seeds": len(seeds), "pools": {}}
    for key in args.pools.split(","):
        pool = pools[key]
        y = pool["table"].objective(pool["objective"])
        out = result["pools"][key] = {"runs": len(y), "domains": len(pool["table"].domains),
                                      "objective": pool["objective"], "pool_best": float(y.min()),
                                      "pool_median": float(np.median(y)), "schedules": {}}
        for sch in schedules:
            out["schedules"][",".join(map(str, sch))] = {m: [run_one(m, pool, sch, s, n_cand) for s in seeds]
                                                         for m in METHODS}
    if args.json:
        print(json.dumps(result))
        return
    for key, r in result["pools"].items():
        print(f"\n### {pools[key]['label']}: {r['runs']} runs, {r['domains']} domains, objective {r['objective']} "
              f"(lower is better); pool best {r['pool_best']:.4f}, median {r['pool_median']:.4f}")
        for sch, methods in r["schedules"].items():
            budget = sum(int(x) for x in sch.split(","))
            print(f"\n{budget} runs per method (CLIMB rounds {sch}), {len(seeds)} seeds, mean ± sd:\n")
            print("| method | best of the runs chosen | final pick | its rank in the pool | its snap distance | "
                  "predictor's pick among unchosen pool runs | s per seed |")
            print("|---|---|---|---|---|---|---|")
            for m, runs in methods.items():
                def ms(k: str, runs: list = runs) -> str:
                    if runs[0][k] is None:
                        return "—"
                    v = np.array([x[k] for x in runs])
                    return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}"
                rank = 100 * np.mean([x["final_rank"] for x in runs])
                secs = np.mean([x["seconds"] for x in runs])
                dist = np.mean([x["final_distance"] for x in runs])
                print(f"| {m} | {ms('best')} | {ms('final')} | top {rank:.1f}% | {dist:.3f} | {ms('pool_pick')} "
                      f"| {secs:.1f} |")
            for m, runs in methods.items():
                if runs[0]["round_medians"]:
                    med = np.mean([x["round_medians"] for x in runs], axis=0)
                    print(f"\n{m}: median objective of each round's runs (mean over seeds): "
                          + ", ".join(f"{v:.4f}" for v in med))


if __name__ == "__main__":
    main()
