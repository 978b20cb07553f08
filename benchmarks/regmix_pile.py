"""RegMix on its released Pile runs: how well each predictor ranks unseen mixtures, and how fast it simulates.

Fits each predictor on the 512 1M-parameter training runs and reports Spearman ρ against the measured losses of
the 256 unseen 1M runs and of the 256 60M runs trained on the same unseen mixtures — for Pile-CC (RegMix's
target) and for the mean of the 13 validation losses. Then the same from 32/64/128/256 training runs (mean over
5 random subsets), and the time to fit and to simulate 1M candidates, with the screened simulation's recall of
the exact top-k measured in the same run.

    python benchmarks/regmix_pile.py [--data DIR] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "regmix"
PREDICTORS = ("lightgbm", "linear", "gp", "ensemble")
REFERENCE = {("loss_pile_cc", "lightgbm"): (0.990, 0.986), ("loss_pile_cc", "linear"): (0.902, 0.893)}


def rho(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(a, b)[0])


def evaluate(train, tests, objective, idx, seed: int = 0) -> tuple[dict, dict]:
    """ρ per predictor on each test table; the ensemble is the mean of the lightgbm and gp predictions."""
    from mixopt.predictors import make_predictor

    X, y = train.weights[idx], train.objective(objective)[idx]
    preds, fit_s = {}, {}
    for name in ("lightgbm", "linear", "gp"):
        t0 = time.perf_counter()
        model = make_predictor(name, seed=seed).fit(X, y)
        fit_s[name] = time.perf_counter() - t0
        preds[name] = [model.predict(t.weights) for t in tests]
    preds["ensemble"] = [(a + b) / 2 for a, b in zip(preds["lightgbm"], preds["gp"], strict=True)]
    fit_s["ensemble"] = fit_s["lightgbm"] + fit_s["gp"]
    out = {n: [rho(p, t.objective(objective)) for p, t in zip(preds[n], tests, strict=True)] for n in PREDICTORS}
    return out, fit_s


def simulation(train, objective, n: int, prior: np.ndarray) -> dict:
    from mixopt.optimizers import get_optimizer

    res = {}
    cases = (("lightgbm, screened", {"predictor": "lightgbm"}),
             ("lightgbm, exact", {"predictor": "lightgbm", "screen_keep": 0}),
             ("gp", {"predictor": "gp"}),
             ("ensemble, screened (default)", {"predictor": "ensemble"}),
             ("ensemble, exact", {"predictor": "ensemble", "screen_keep": 0}))
    for label, settings in cases:
        opt = get_optimizer("regmix", seed=42, objective=objective, n_candidates=n, n_bootstrap=0,
                            prior=dict(zip(train.domains, prior, strict=True)), max_epochs=None, **settings)
        model = opt.predictor(42).fit(train.weights, train.objective(objective))
        t0 = time.perf_counter()
        top_w, _, n_exact, _ = opt._simulate(model, prior, None, np.random.default_rng(7))
        res[label] = {"seconds": time.perf_counter() - t0, "scored_exactly": n_exact, "top": top_w}
    for name in ("lightgbm", "ensemble"):
        scr = next(v for k, v in res.items() if k.startswith(f"{name}, screened"))["top"]
        exa = res[f"{name}, exact"]["top"]
        a, b = {tuple(r) for r in scr.round(12)}, {tuple(r) for r in exa.round(12)}
        res[f"{name}_recall"] = len(a & b) / len(b)
        res[f"{name}_max_weight_diff"] = float(np.abs(scr.mean(0) - exa.mean(0)).max())
    for v in res.values():
        if isinstance(v, dict):
            v.pop("top")
    return res


PRIOR = [0.11328527, 0.07960865, 0.00391349, 0.1853759, 0.05108136, 0.01596293, 0.10175077, 0.00370752,
         0.06652935, 0.00175077, 0.02708548, 0.23686921, 0.01184346, 0.00792997, 0.00803296, 0.03882595,
         0.04644696]  # RegMix notebook's token prior, in the weight-column order (shared/benchmarks README)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="one objective, 2 subsets, 100k candidates")
    args = ap.parse_args()
    from mixopt.runs import RunTable

    train = RunTable.from_csv(args.data / "runs_1m_train.csv")
    tests = [RunTable.from_csv(args.data / "runs_1m_test.csv"), RunTable.from_csv(args.data / "runs_60m_test.csv")]
    objectives = {"Pile-CC": "loss_pile_cc", "mean of 13": None}
    if args.quick:
        objectives = {"Pile-CC": "loss_pile_cc"}
    sizes, reps = ((32, 64, 128, 256), 5) if not args.quick else ((128,), 2)
    result: dict = {"full": {}, "subsets": {}, "fit_seconds": {}}
    for label, obj in objectives.items():
        full, fit_s = evaluate(train, tests, obj, np.arange(len(train)))
        result["full"][label] = full
        result["fit_seconds"][label] = fit_s
        result["subsets"][label] = {}
        for n in sizes:
            runs = [evaluate(train, tests, obj, np.random.default_rng(r).choice(len(train), n, replace=False), r)[0]
                    for r in range(reps)]
            result["subsets"][label][n] = {p: np.mean([r[p] for r in runs], axis=0).tolist() for p in PREDICTORS}
    n_sim = 100_000 if args.quick else 1_000_000
    result["simulation"] = simulation(train, "loss_pile_cc", n_sim, np.array(PRIOR))
    result["simulation"]["candidates"] = n_sim
    if args.json:
        print(json.dumps(result))
        return

    for label in objectives:
        print(f"\n### {label}: Spearman ρ, fitted on 512 1M runs\n")
        print("| predictor | 1M test (256) | 60M test (256) | fit s | reference (released runs) |")
        print("|---|---|---|---|---|")
        for p in PREDICTORS:
            r1, r60 = result["full"][label][p]
            ref = REFERENCE.get((objectives[label], p))
            ref_s = f"{ref[0]:.3f} / {ref[1]:.3f}" if ref else ""
            print(f"| {p} | {r1:.4f} | {r60:.4f} | {result['fit_seconds'][label][p]:.1f} | {ref_s} |")
        print(f"\n### {label}: ρ on 1M test / 60M test by training runs (mean of {reps} subsets)\n")
        print("| predictor | " + " | ".join(str(n) for n in sizes) + " |")
        print("|---|" + "---|" * len(sizes))
        for p in PREDICTORS:
            cells = [f"{a:.3f} / {b:.3f}" for a, b in (result["subsets"][label][n][p] for n in sizes)]
            print(f"| {p} | " + " | ".join(cells) + " |")
    sim = result["simulation"]
    print(f"\n### Simulating {n_sim:,} candidates (Pile-CC, fitted on 512 runs)\n")
    print("| scoring | seconds | scored exactly |")
    print("|---|---|---|")
    for k, v in sim.items():
        if isinstance(v, dict):
            print(f"| {k} | {v['seconds']:.2f} | {v['scored_exactly']:,} |")
    print()
    for name in ("lightgbm", "ensemble"):
        print(f"{name} screened vs exact: recall of the exact top-128 {sim[f'{name}_recall']:.3f}, largest weight "
              f"difference of the recommendation {sim[f'{name}_max_weight_diff']:.4f}")


if __name__ == "__main__":
    main()
