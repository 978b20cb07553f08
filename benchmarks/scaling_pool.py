"""The scale-aware optimizer's law forms (nested, additive, joint) on released runs at several scales.

1. Data Mixing Laws runs (5Mix, RedPajama; 22 Pile validation losses aggregated with the validation shares, step
   20000): each form fitted on the 70M–410M runs predicts the 1B runs (the mixtures the 1B runs share with the
   proxies, as benchmarks/laws_mixinglaws.py scores them), and — what `form: auto` looks at — the 410M runs
   from 70M–305M.
2. RegMix runs (17 domains): 1M (512 train + 256 test mixtures) and 60M (the 256 test mixtures). Each form is
   fitted on every 1M run plus half of the 60M mixtures and predicts the other half at 60M (Spearman ρ and MAE),
   for Pile-CC and for the mean of the 13 losses; then every form is refitted on all runs and solved at
   1B params × 25B tokens for kl_lambda 0, 0.05, 0.2, reporting KL(w ‖ RegMix's token prior).

    python benchmarks/scaling_pool.py [--data DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
FORMS = ("nested", "additive", "joint")
README_NESTED_1B = {"5mix": "0.0101 (size law) – 0.0208 (size law → mixing law)", "redpajama": "0.0097–0.0098"}
LAMBDAS = (0.0, 0.05, 0.2)
REGMIX_SIZES = {"1M": 1e6, "60M": 6e7}
REGMIX_TOKENS = 1e9
REGMIX_TARGET = (1e9, 2.5e10)


def _scores(pred: np.ndarray, obs: np.ndarray) -> dict:
    rho = spearmanr(pred, obs)[0] if len(obs) >= 3 else float("nan")
    e = pred - obs
    return {"mae": float(np.abs(e).mean()), "bias": float(e.mean()), "spearman": float(rho), "n": int(len(obs))}


def _fit_predict(opt, form: str, W, N, D, L, shares, cols, target: tuple[float, float], W_test) -> np.ndarray:
    law, _ = opt._fit(form, W, N, D, L, shares, cols, *target)
    return law.aggregate(W_test)


def mixinglaws_section(folder: Path) -> dict:
    import laws_mixinglaws as lm

    from mixopt.optimizers import get_optimizer

    shares_s = pd.read_csv(folder / "pile_valid_weights.csv").set_index("valid_domain")["weight"]
    shares = shares_s.to_numpy()
    cols = [f"loss_{d}" for d in shares_s.index]
    step = 20000.0
    out: dict = {}
    for name, file in lm.DATASETS.items():
        data = lm.load(folder / file, shares_s)
        at = data["step"] == step
        opt = get_optimizer("scaling", objective={"metrics": cols, "weights": shares.tolist()})
        res: dict = {}
        for target, sizes in (("1B", lm.SIZES), ("410M", lm.SIZES[:3])):
            fit = at & np.isin(data["size"], sizes)
            N = np.array([lm.PARAMS[s] for s in data["size"][fit]], dtype=float)
            D = np.full(fit.sum(), step * lm.TOKENS_PER_STEP)
            m_t = at & (data["size"] == target)
            if target == "410M":
                m_t &= ~data["special"]
            W_t, obs = data["W"][m_t], data["L"][m_t] @ shares
            seen = lm._match(data["W"][fit], W_t) >= 0  # mixtures the proxies ran (how the README scores 1B)
            row = {}
            for form in FORMS:
                t0 = time.perf_counter()
                try:
                    pred = _fit_predict(opt, form, data["W"][fit], N, D, data["L"][fit], shares, cols,
                                        (lm.PARAMS[target], step * lm.TOKENS_PER_STEP), W_t[seen])
                    row[form] = {**_scores(pred, obs[seen]), "seconds": time.perf_counter() - t0}
                except ValueError as e:
                    row[form] = {"error": str(e)}
            res[target] = row
        ok = [f for f in FORMS if "mae" in res["410M"][f]]
        res["auto_pick"] = min(ok, key=lambda f: res["410M"][f]["mae"]) if ok else None
        out[name] = res
    return out


def _regmix_tables(folder: Path):
    from mixopt.runs import RunTable

    parts = []
    for file, scale in (("runs_1m_train.csv", "1M"), ("runs_1m_test.csv", "1M"), ("runs_60m_test.csv", "60M")):
        df = pd.read_csv(folder / file)
        df["fid_params"], df["fid_tokens"] = REGMIX_SIZES[scale], REGMIX_TOKENS
        parts.append(df)
    return RunTable(pd.concat(parts, ignore_index=True), source="regmix runs")


def regmix_section(folder: Path, seed: int = 0) -> dict:
    import regmix_pile

    from mixopt.optimizers import get_optimizer
    from mixopt.simplex import distance_to_prior

    table = _regmix_tables(folder)
    df = table.df
    big = (df["scale"] == "60M").to_numpy()
    mixtures = np.sort(df.loc[big, "mixture_id"].unique())
    held = set(np.random.default_rng(seed).permutation(mixtures)[: len(mixtures) // 2])
    test = big & df["mixture_id"].isin(held).to_numpy()
    prior = np.array(regmix_pile.PRIOR)
    prior_d = dict(zip(table.domains, prior.tolist(), strict=True))
    W, N, D = table.weights, df["fid_params"].to_numpy(float), df["fid_tokens"].to_numpy(float)
    out: dict = {"runs_fit": int((~test).sum()), "runs_test": int(test.sum()), "objectives": {}}
    for label, metrics in (("Pile-CC", ["loss_pile_cc"]), ("mean of 13", table.loss_columns)):
        opt = get_optimizer("scaling", objective={"metrics": metrics}, prior=prior_d, max_epochs=None)
        L = df[metrics].to_numpy(float)
        obs = L[test].mean(axis=1)
        res: dict = {"held_out": {}, "optimum": {}}
        for form in FORMS:
            t0 = time.perf_counter()
            try:
                pred = _fit_predict(opt, form, W[~test], N[~test], D[~test], L[~test], None, metrics,
                                    (REGMIX_SIZES["60M"], REGMIX_TOKENS), W[test])
                res["held_out"][form] = {**_scores(pred, obs), "seconds": time.perf_counter() - t0}
            except ValueError as e:
                res["held_out"][form] = {"error": str(e)}
            law, _ = opt._fit(form, W, N, D, L, None, metrics, *REGMIX_TARGET)
            starts = [prior, np.full(len(prior), 1 / len(prior))]
            res["optimum"][form] = {}
            for lam in LAMBDAS:
                w = opt._solve(law, None, None, starts, lam, prior)
                res["optimum"][form][str(lam)] = {**distance_to_prior(w, prior),
                                                  "predicted": float(law.aggregate(w[None, :])[0]),
                                                  "top": _top(table.domains, w)}
        out["objectives"][label] = res
    return out


def _top(domains: list[str], w: np.ndarray, k: int = 3) -> str:
    order = np.argsort(-w)[:k]
    return ", ".join(f"{domains[i]} {w[i]:.2f}" for i in order)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with mixinglaws/ and regmix/")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    with threadpool_limits(1):  # many tiny fits: threaded BLAS only slows them on a shared machine
        result = {"mixinglaws": mixinglaws_section(args.data / "mixinglaws"),
                  "regmix": regmix_section(args.data / "regmix")}
    result["seconds"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps(result))
        return
    report(result)


def _cell(r: dict, key: str = "mae") -> str:
    if "error" in r:
        return "could not fit"
    rho = "" if not np.isfinite(r["spearman"]) else f", ρ {r['spearman']:.3f}"
    return f"{r[key]:.4f} (bias {r['bias']:+.4f}{rho}, n={r['n']})"


def report(result: dict) -> None:
    print("\n### Data Mixing Laws runs: aggregate-loss MAE at step 20000\n")
    print("| form | 5mix: 1B from 70M–410M | redpajama: 1B | 5mix: 410M from 70M–305M | redpajama: 410M |")
    print("|---|---|---|---|---|")
    ml = result["mixinglaws"]
    for form in FORMS:
        cells = [_cell(ml[n][t][form]) for t in ("1B", "410M") for n in ("5mix", "redpajama")]
        print(f"| {form} | " + " | ".join(cells) + " |")
    print(f"| README, nested pipeline | {README_NESTED_1B['5mix']} | {README_NESTED_1B['redpajama']} | | |")
    print("\n`form: auto` (lowest 410M error) picks: " + ", ".join(f"{n} {r['auto_pick']}" for n, r in ml.items()))
    rg = result["regmix"]
    print(f"\n### RegMix runs: 60M held-out mixtures ({rg['runs_fit']} runs fitted: all 1M + half the 60M "
          f"mixtures; {rg['runs_test']} 60M runs predicted)\n")
    print("| objective | form | Spearman ρ | MAE | bias | fit s |")
    print("|---|---|---|---|---|---|")
    for label, res in rg["objectives"].items():
        for form, r in res["held_out"].items():
            if "error" in r:
                print(f"| {label} | {form} | could not fit | | | |")
                continue
            print(f"| {label} | {form} | {r['spearman']:.4f} | {r['mae']:.4f} | {r['bias']:+.4f} | "
                  f"{r['seconds']:.1f} |")
    t = REGMIX_TARGET
    print(f"\n### RegMix: optimum at N={t[0]:.3g}, D={t[1]:.3g}, refitted on all runs: KL(w ‖ prior) and L1 by λ\n")
    print("| objective | form | " + " | ".join(f"λ={lam:g}: KL / L1 / predicted" for lam in LAMBDAS)
          + " | top weights at λ=0.05 |")
    print("|---|---|" + "---|" * (len(LAMBDAS) + 1))
    for label, res in rg["objectives"].items():
        for form, by in res["optimum"].items():
            cells = [f"{v['kl']:.3f} / {v['l1']:.3f} / {v['predicted']:.4f}" for v in by.values()]
            print(f"| {label} | {form} | " + " | ".join(cells) + f" | {by['0.05']['top']} |")
    print(f"\ntotal {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
