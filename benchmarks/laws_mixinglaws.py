"""Scaling and mixing laws on the released Data Mixing Laws runs, plus a synthetic D-CPT / CMR check.

1. Leave-one-mixture-out error of the data mixing law per validation domain (22 Pile domains, step 30000,
   5Mix and RedPajama at 70M–410M), against the linear law L = a + b·r in the same folds.
2. Predicting 1B losses at step 20000 (the last step every 1B run reached) from the 70M–410M runs, as the
   validation-weighted aggregate loss of the mixtures the 1B runs share with the proxies: the 410M loss as
   is, the size law (squares, and Huber δ = 0.02: the pipeline's default), the size law on step-law-smoothed
   losses, and the full nested pipeline (size law → mixing law). The column "410M from 70M–305M" runs the same
   methods one size down, on every mixture (a check that does not look at the 1B runs), and the correlation
   across sizes of each checkpoint's deviation from its run's step law (why measured checkpoints are used).
3. D-CPT and CMR on data generated from the laws with noise: in-sample R² and Huber, the error of predicting a
   held-out (larger) D and N, usage 1's ratio, and CMR recovery. On real continual-pretraining proxies (the
   cpt-demo recipe): `--cpt-job DIR` adds them here; benchmarks/laws_cpt.py prints their tables.

    python benchmarks/laws_mixinglaws.py [--data DIR] [--cpt-job DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "mixinglaws"
SIZES = ("70M", "160M", "305M", "410M")
# Non-embedding parameters (docs/methods.md §7b).
PARAMS = {"70M": 18_915_328, "160M": 85_056_000, "305M": 201_541_632, "410M": 302_311_424, "1B": 805_736_448}
TOKENS_PER_STEP = 4096 * 256  # the pipeline's batch (§7b); tokens only enter the laws through ratios
DATASETS = {"5mix": "5mix.csv", "redpajama": "redpajama.csv"}
REF_LOO = (0.024, 0.035)
REF_1B = {"410M loss": {"5mix": 0.118, "redpajama": 0.136},
          "size law, α shared per domain": {"5mix": 0.0073, "redpajama": 0.0123}}
GOAL_1B = 0.010


def load(path: Path, shares: pd.Series) -> dict:
    """Per checkpoint: weights (renormalised), size, step, and the 22 validation losses in `shares` order."""
    d = pd.read_csv(path)
    d = d[d["step"].notna()]
    wcols = [c for c in d.columns if c.startswith("w_")]
    piv = d.pivot_table(index=["model_size", "run_name", "step"], columns="valid_domain", values="loss")
    piv = piv[shares.index].dropna()
    meta = d.groupby(["model_size", "run_name"])[wcols + ["is_special_run"]].first()
    keys = piv.index.droplevel("step")
    W = meta.loc[keys, wcols].to_numpy(dtype=float)
    return {"W": W / W.sum(axis=1, keepdims=True), "size": np.array(piv.index.get_level_values("model_size")),
            "step": piv.index.get_level_values("step").to_numpy(dtype=float), "L": piv.to_numpy(dtype=float),
            "special": meta.loc[keys, "is_special_run"].to_numpy(dtype=bool), "domains": [c[2:] for c in wcols]}


def loo_table(data: dict, step: float = 30000) -> dict:
    from mixopt.laws.mixing import loo_linear, loo_mixing_law

    out = {}
    for size in SIZES:
        m = (data["size"] == size) & (data["step"] == step) & ~data["special"]
        W, L = data["W"][m], data["L"][m]
        t0 = time.perf_counter()
        pred = loo_mixing_law(W, L)
        secs = time.perf_counter() - t0
        lin = loo_linear(W, L)
        out[size] = {"runs": int(m.sum()), "mixing_law": float(np.abs(pred - L).mean()),
                     "linear": float(np.abs(lin - L).mean()), "seconds": secs}
    return out


def _match(keys: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Index of each row of W among keys (|Δ| ≤ 1e-3), −1 where none."""
    out = np.full(len(W), -1)
    for i, w in enumerate(W):
        hit = np.flatnonzero(np.abs(keys - w[None, :]).max(axis=1) <= 1e-3)
        if len(hit):
            out[i] = int(hit[0])
    return out


def predict_size(data: dict, sizes: tuple[str, ...], target: str, step: float, method: str) -> tuple[np.ndarray,
                                                                                                       np.ndarray]:
    """Predicted losses of every mixture at `target` size and `step`, from runs at `sizes` (all their steps)."""
    from mixopt.laws.mixing import fit_mixing_law
    from mixopt.laws.pipeline import nested_predict

    m = np.isin(data["size"], sizes)
    N = np.array([PARAMS[s] for s in data["size"][m]], dtype=float)
    D = data["step"][m] * TOKENS_PER_STEP
    kw = {"size_delta": None} if method == "size law, squares" else {}
    if method == "size law on step-law-smoothed losses":
        kw["smooth_steps"] = True
        kw["step_window"] = (10000 * TOKENS_PER_STEP, 30000 * TOKENS_PER_STEP)
    res = nested_predict(data["W"][m], N, D, data["L"][m], PARAMS[target], step * TOKENS_PER_STEP, **kw)
    losses = res.losses
    if method == "nested: size law → mixing law":
        losses = fit_mixing_law(res.mixtures, res.losses).predict(res.mixtures)
    return res.mixtures, losses


METHODS_1B = ("size law, squares", "size law, Huber δ=0.02 (pipeline default)", "size law on step-law-smoothed losses",
              "nested: size law → mixing law")


def size_table(data: dict, shares: np.ndarray, step: float = 20000) -> dict:
    """MAE of the aggregate loss: 1B from 70M–410M (the mixtures the 1B runs share), 410M from 70M–305M (all)."""
    out: dict = {}
    for target, sizes in (("1B", SIZES), ("410M", SIZES[:3])):
        m_t = (data["size"] == target) & (data["step"] == step)
        W_t, obs = data["W"][m_t], data["L"][m_t] @ shares
        if target == "410M":
            W_t, obs = W_t[~data["special"][m_t]], obs[~data["special"][m_t]]
        res = {}
        base = (data["size"] == sizes[-1]) & (data["step"] == step)
        idx = _match(data["W"][base], W_t)
        ok = idx >= 0
        res[f"{sizes[-1]} loss"] = _mae((data["L"][base] @ shares)[idx[ok]], obs[ok])
        for method in METHODS_1B:
            keys, losses = predict_size(data, sizes, target, step, method)
            idx = _match(keys, W_t)
            ok = idx >= 0
            res[method] = _mae((losses @ shares)[idx[ok]], obs[ok])
        out[target] = res
    return out


def shared_checkpoint_noise(data: dict, shares: np.ndarray) -> dict:
    """How much of a checkpoint's deviation from its run's step law the other sizes share (same mixture, step).

    Per run, a step law is fitted to the aggregate loss over steps 10k–30k; the residuals of one mixture at one
    step are compared across sizes. High correlation means the deviations come from the data order (shared by
    every size, the target included), which is why measured checkpoints are not smoothed away.
    """
    from mixopt.laws.pipeline import mixture_keys
    from mixopt.laws.scaling import fit_power_law

    m = (data["step"] >= 10000) & (data["step"] <= 30000) & np.isin(data["size"], SIZES)
    keys, idx = mixture_keys(data["W"][m])
    size, step, agg = data["size"][m], data["step"][m], data["L"][m] @ shares
    resid: dict = {}
    for j in range(len(keys)):
        for sz in SIZES:
            r = (idx == j) & (size == sz)
            if r.sum() < 4:
                continue
            law = fit_power_law(step[r], agg[r][None, :])
            for st, e in zip(step[r], agg[r] - law.predict(step[r])[0], strict=True):
                resid[(j, st, sz)] = e
    table = pd.Series(resid).unstack()[list(SIZES)].dropna()
    corr = table.corr().to_numpy()
    pairs = corr[np.triu_indices(len(SIZES), 1)]
    return {"checkpoints": len(table), "corr_min": float(pairs.min()), "corr_max": float(pairs.max()),
            "sd": {sz: float(table[sz].std()) for sz in SIZES}}


def _mae(pred: np.ndarray, obs: np.ndarray) -> dict:
    e = pred - obs
    return {"mae": float(np.abs(e).mean()), "bias": float(e.mean()), "n": int(len(e)), "errors": e.round(4).tolist()}


# ------------------------------------------------------------------------------------------ synthetic D-CPT / CMR

DCPT_TRUE = {"general": {"E": 1.9, "A": 0.45, "B": 0.35, "C": 0.20, "alpha": 0.34, "beta": 0.28, "gamma": 0.40,
                         "eta": 0.6, "eps": 0.05},
             "domain": {"E": 1.2, "A": 0.55, "B": 0.25, "C": 0.30, "alpha": 0.30, "beta": 0.32, "gamma": 0.45,
                        "eta": 0.4, "eps": 0.02}}


def synthetic_dcpt(seed: int = 0, noise: float = 0.004) -> dict:
    """Proxies at 4 N × 4 D × 9 shares from the law, Gaussian noise; fits on subsets, errors on held-out points."""
    from mixopt.laws.dcpt import DCPTLaws, dcpt_form, fit_dcpt, fit_dcpt_pair
    from mixopt.laws.fit import FittedLaw, huber

    rng = np.random.default_rng(seed)
    Ns, Ds = np.array([5e7, 1e8, 2e8, 4e8]), np.array([1e9, 2e9, 4e9, 8e9])
    rs = np.array([0.0, 0.1, 0.2, 1 / 3, 0.5, 2 / 3, 0.8, 0.9, 1.0])
    N, D, r = (a.ravel() for a in np.meshgrid(Ns, Ds, rs, indexing="ij"))
    form = dcpt_form(1.4e8, 2.8e9)
    truth = {k: form.predict(v, np.column_stack([N, D, 1 - r if k == "general" else r])) for k, v in DCPT_TRUE.items()}
    y = {k: v + rng.normal(0, noise, len(v)) for k, v in truth.items()}
    out: dict = {"noise_sd": noise, "points": len(N)}
    t0 = time.perf_counter()
    laws = fit_dcpt_pair(N, D, r, y["general"], y["domain"])
    out["fit_seconds"] = time.perf_counter() - t0
    for k, law in (("general", laws.general), ("domain", laws.domain)):
        out[k] = {"r2": law.r2, "huber": law.huber}
    for label, train in (("held-out D (8e9)", D < Ds[-1]), ("held-out N (4e8)", N < Ns[-1])):
        row = {}
        for k in ("general", "domain"):
            rr = 1 - r if k == "general" else r
            law = fit_dcpt(N[train], D[train], rr[train], y[k][train])
            X = np.column_stack([N, D, rr])[~train]
            pred = law.predict(X)
            row[k] = {"mae": float(np.abs(pred - y[k][~train]).mean()),
                      "mae_vs_truth": float(np.abs(pred - truth[k][~train]).mean()),
                      "r2": float(1 - ((pred - y[k][~train]) ** 2).sum() / ((y[k][~train] - y[k][~train].mean()) ** 2)
                                  .sum()),
                      "huber": float(huber(pred - y[k][~train], law.delta).mean())}
        out[label] = row
    exact = DCPTLaws(*(FittedLaw(form=form, params=DCPT_TRUE[k], huber=0, r2=1, n=0, delta=1e-3)
                       for k in ("general", "domain")))
    n_t, d_t = 1e9, 1.6e10
    out["usage1"] = {"target": [n_t, d_t], "fitted": laws.max_domain_ratio(n_t, d_t, 0.03)[0],
                     "true": exact.max_domain_ratio(n_t, d_t, 0.03)[0]}
    return out


def synthetic_cmr(seed: int = 0, noise: float = 0.002) -> dict:
    """ΔL_gen = (0.4R − 0.1)·T^0.3 (so CMR(T) = 0.25 + 2.5·ε·T^−0.3 exactly), ΔL_dom = −0.5·√R·T^0.25 + 0.05."""
    from mixopt.laws.cmr import fit_cmr, fit_cmr_scaling

    rng = np.random.default_rng(seed)
    ratios, T = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), np.arange(1, 11) * 1e9
    R, TT = (a.ravel() for a in np.meshgrid(ratios, T, indexing="ij"))
    t = TT / 2e8
    g = (0.4 * R - 0.1) * t ** 0.3 + rng.normal(0, noise, len(R))
    d = -0.5 * np.sqrt(R) * t ** 0.25 + 0.05 + rng.normal(0, noise, len(R))
    eps = 0.05

    def true_cmr(tokens: float) -> float:
        return 0.25 + 2.5 * eps * (tokens / 2e8) ** -0.3

    t0 = time.perf_counter()
    fit = fit_cmr(R, TT, g, d)
    secs = time.perf_counter() - t0
    curve = fit.cmr_curve(T, eps)
    scaling = fit_cmr_scaling(T, curve)
    far = 4e10
    return {"noise_sd": noise, "fit_seconds": secs,
            "r2_general": [law.r2 for law in fit.general], "r2_domain": [law.r2 for law in fit.domain],
            "cmr_1e10": {"fitted": fit.critical_ratio(1e10, eps), "true": true_cmr(1e10)},
            "cmr_curve_mae": float(np.abs(curve - np.array([true_cmr(x) for x in T])).mean()),
            "scaling_r2": scaling.r2, "scaling_params": scaling.params,
            "cmr_4e10_extrapolated": {"fitted": float(scaling.predict(np.array([[far / 2e8]]))[0]),
                                      "true": true_cmr(far)}}


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with 5mix.csv, redpajama.csv, "
                    "pile_valid_weights.csv")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cpt-job", type=Path, default=None, help="also fit D-CPT and CMR on a finished cpt-demo job "
                    "(search/cpt-demo.yaml; benchmarks/laws_cpt.py runs it and prints the full tables)")
    args = ap.parse_args()
    t_start = time.perf_counter()
    shares = pd.read_csv(args.data / "pile_valid_weights.csv").set_index("valid_domain")["weight"]
    result: dict = {"loo": {}, "size": {}}
    for name, file in DATASETS.items():
        data = load(args.data / file, shares)
        result["loo"][name] = loo_table(data)
        result["size"][name] = size_table(data, shares.to_numpy())
        result.setdefault("shared_checkpoint_noise", {})[name] = shared_checkpoint_noise(data, shares.to_numpy())
    chosen = METHODS_1B[1]
    result["mae_1b_aggregate"] = {n: result["size"][n]["1B"][chosen]["mae"] for n in DATASETS}
    result["method_1b"] = chosen
    result["synthetic"] = {"dcpt": synthetic_dcpt(), "cmr": synthetic_cmr()}
    if args.cpt_job is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import laws_cpt

        from mixopt.search.store import JobStore

        pts = laws_cpt.points(JobStore(args.cpt_job).run_table())
        result["cpt_demo"] = {"dcpt": laws_cpt.dcpt_section(pts, 0), "cmr": laws_cpt.cmr_section(pts, 0)}
    result["seconds"] = time.perf_counter() - t_start
    if args.json:
        print(json.dumps(result))
        return
    report(result)


def report(result: dict) -> None:
    print("\n### Leave-one-mixture-out MAE per validation domain (22 Pile domains, step 30000)\n")
    print("| dataset | size | runs | mixing law | linear | fit s | reference |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in result["loo"].items():
        for size, r in rows.items():
            print(f"| {name} | {size} | {r['runs']} | {r['mixing_law']:.4f} | {r['linear']:.4f} | "
                  f"{r['seconds']:.1f} | {REF_LOO[0]}–{REF_LOO[1]} |")
    print("\n### Aggregate loss at step 20000: MAE (bias) of predicting a larger size\n")
    print("| method | 5mix: 1B from 70M–410M | redpajama: 1B | 5mix: 410M from 70M–305M | redpajama: 410M |")
    print("|---|---|---|---|---|")
    s = result["size"]
    for method in ("410M loss", *METHODS_1B):
        cells = []
        for target in ("1B", "410M"):
            for name in DATASETS:
                key = method if method != "410M loss" else ("410M loss" if target == "1B" else "305M loss")
                r = s[name][target][key]
                cells.append(f"{r['mae']:.4f} ({r['bias']:+.4f}, n={r['n']})")
        label = method if method != "410M loss" else "largest proxy's loss (410M; 305M one size down)"
        print(f"| {label} | " + " | ".join(cells) + " |")
    for ref, v in REF_1B.items():
        print(f"| reference: {ref} | {v['5mix']} | {v['redpajama']} | | |")
    print(f"| goal | ≤ {GOAL_1B} | ≤ {GOAL_1B} | | |")
    print("| authors' published 1B predictions (100k steps) | 0.063, 0.110 (RedPajama default, optimised) | | | |")
    for name, r in result["shared_checkpoint_noise"].items():
        print(f"\n{name}: checkpoint deviations from each run's step law correlate {r['corr_min']:.2f}–"
              f"{r['corr_max']:.2f} across sizes (same mixture and step, {r['checkpoints']} checkpoints; sd "
              + ", ".join(f"{k} {v:.4f}" for k, v in r["sd"].items()) + ")")
    for name in DATASETS:
        print(f"\n{name} 1B errors per mixture ({result['method_1b']}): "
              f"{s[name]['1B'][result['method_1b']]['errors']}")
    d, c = result["synthetic"]["dcpt"], result["synthetic"]["cmr"]
    print(f"\n### D-CPT on synthetic proxies ({d['points']} points, noise sd {d['noise_sd']}; "
          "paper in-sample R² 0.98–0.997)\n")
    print("| fit | general R² | general Huber | domain R² | domain Huber | general MAE | domain MAE |")
    print("|---|---|---|---|---|---|---|")
    print(f"| in-sample | {d['general']['r2']:.4f} | {d['general']['huber']:.2e} | {d['domain']['r2']:.4f} | "
          f"{d['domain']['huber']:.2e} | | |")
    for label in ("held-out D (8e9)", "held-out N (4e8)"):
        g, m = d[label]["general"], d[label]["domain"]
        print(f"| {label} | {g['r2']:.4f} | {g['huber']:.2e} | {m['r2']:.4f} | {m['huber']:.2e} | {g['mae']:.4f} | "
              f"{m['mae']:.4f} |")
    u = d["usage1"]
    print(f"\nusage 1 (N={u['target'][0]:.3g}, D={u['target'][1]:.3g}, T=3%): fitted r_d {u['fitted']:.3f}, "
          f"true {u['true']:.3f}")
    print(f"\n### CMR on synthetic runs (noise sd {c['noise_sd']})\n")
    print(f"per-share fits R²: general {min(c['r2_general']):.4f}–{max(c['r2_general']):.4f}, domain "
          f"{min(c['r2_domain']):.4f}–{max(c['r2_domain']):.4f}")
    print(f"CMR at 1e10 tokens: fitted {c['cmr_1e10']['fitted']:.4f}, true {c['cmr_1e10']['true']:.4f}; "
          f"MAE over 10 budgets {c['cmr_curve_mae']:.4f}")
    print(f"CMR scaling law R² {c['scaling_r2']:.4f}; extrapolated to 4e10 tokens: "
          f"{c['cmr_4e10_extrapolated']['fitted']:.4f} (true {c['cmr_4e10_extrapolated']['true']:.4f})")
    if "cpt_demo" in result:
        d, c = result["cpt_demo"]["dcpt"], result["cpt_demo"]["cmr"]
        print(f"\n### D-CPT and CMR on the cpt-demo job ({d['n_points']} checkpoints of {d['n_runs']} runs)\n")
        for k in ("general", "domain"):
            held = ", ".join(f"{f} {v[k]['law']['r2']:.4f}" for f, v in d["held_out"].items())
            print(f"D-CPT {k}: R² in-sample {d['in_sample'][k]['r2']:.4f}; held out: {held}")
        print("CMR (ε = 0.05) per size: " + ", ".join(
            f"{int(float(n)):,}: {'none' if v['cmr'] is None else round(v['cmr'], 3)}" for n, v in c.items()))
    print(f"\nmae_1b_aggregate: {json.dumps(result['mae_1b_aggregate'])}; total {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
