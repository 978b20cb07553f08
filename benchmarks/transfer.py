"""Do proxies rank mixtures the way a larger target does? Short against long-trained proxies at equal compute.

    python benchmarks/transfer.py                       # the demo corpus (README table; ~15 minutes on 2 cores)
    python benchmarks/transfer.py --dataset MANIFEST    # any manifest, e.g. a corpus of your own
    python benchmarks/transfer.py --json                # also print one JSON object at the end

The same mixtures (RegMix's sampler around the token prior, plus `uniform` and `natural`) are trained on three
proxies that cost the same compute (parameters × tokens) but spend it differently: a wide model for ~2 tokens
per parameter, a middle one for ~20, and a narrow one for ~100. A target model ≥ 8× the narrow proxy's
parameters, trained for ≥ 4× its tokens, is trained on the same mixtures. Every mixture of a configuration uses
one seed (common random numbers), so differences between mixtures are not initialisation noise.

Reported per proxy: Spearman ρ between proxy and target objective over the mixtures, the target rank of the
proxy's best mixture (1 = the target's best) and its regret (target objective of that mixture minus the
target's best). The table sets the zoo's default proxy budget (README, "Proxy budgets").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from e2e_demo import _clean, train_targets  # noqa: E402  (Ray one-thread tasks for the trainings)

DEFAULT_DATASET = ROOT / "datasets" / "demo.yaml"


def settings(mode: str) -> dict[str, Any]:
    """Three proxies of (about) equal compute, at ~2, ~20 and ~100 tokens per parameter, and the target.

    Parameters × tokens: 50k × 112k ≈ 17k × 327k ≈ 7.5k × 749k ≈ 5.6e9. The target (2×48, 68k parameters) is
    9.1× the long-trained proxy and trains on 4× its tokens."""
    common = dict(n_head=2, seq_len=128, batch_size=16, lr=3e-3, warmup_frac=0.1, eval_windows=32, num_cpus=1)
    if mode == "toy":  # seconds of training: keeps the script working in a test
        common.update(seq_len=32, batch_size=4, eval_windows=2)
        return dict(proxies={"2 tok/param": dict(common, name="wide", n_layer=1, d_model=24, tokens=4 * 32 * 3),
                             "100 tok/param": dict(common, name="narrow", n_layer=1, d_model=16,
                                                   tokens=4 * 32 * 6)},
                    target=dict(common, name="target", n_layer=2, d_model=32, tokens=4 * 32 * 12), mixtures=4)
    budget = 7488 * 100  # the narrow proxy's parameters × 100: every proxy gets this compute ÷ its size
    proxies = {
        "~2 tok/param": dict(common, name="wide-2tpp", n_layer=2, d_model=40),
        "~20 tok/param": dict(common, name="mid-20tpp", n_layer=1, d_model=28),
        "~100 tok/param": dict(common, name="narrow-100tpp", n_layer=1, d_model=16),
    }
    from mixopt.spec import ProxySpec

    for p in proxies.values():
        n = ProxySpec.model_validate(p).param_count(257)
        p["tokens"] = int(round(budget * 7488 / n / 2048)) * 2048  # equal params × tokens, whole batches
    return dict(proxies=proxies, target=dict(common, name="target", n_layer=2, d_model=48, lr=2e-3,
                                             tokens=4 * proxies["~100 tok/param"]["tokens"]),
                mixtures=12 if mode == "full" else 8)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="dataset manifest (default: the demo)")
    ap.add_argument("--quick", action="store_true", help="8 mixtures instead of 12")
    ap.add_argument("--toy", action="store_true", help="seconds of training; for the test that keeps this working")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here too")
    ap.add_argument("--workdir", type=Path, default=None, help="work dir (default: a temporary folder)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="parallel trainings (default: one per CPU core)")
    args = ap.parse_args(argv)
    from rich.console import Console
    from rich.table import Table
    from scipy.stats import spearmanr

    from mixopt.data import prepare
    from mixopt.proxies import model_size
    from mixopt.simplex import sample_mixtures
    from mixopt.spec import ProxySpec, load_dataset

    con = Console(stderr=args.json, width=150)
    mode = "toy" if args.toy else "quick" if args.quick else "full"
    cfg = settings(mode)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mixopt-transfer-"))
    t_start = time.perf_counter()
    dataset = load_dataset(args.dataset)
    data = prepare(dataset, workdir / "data")
    counts = np.array([data.token_counts[d] for d in data.domains], dtype=float)
    prior = counts / counts.sum()
    W = sample_mixtures(prior, cfg["mixtures"] - 2, np.random.default_rng(args.seed))
    mixtures = {f"m{i:02d}": dict(zip(data.domains, w.tolist(), strict=True)) for i, w in enumerate(W)}
    mixtures["uniform"] = {d: 1 / len(data.domains) for d in data.domains}
    mixtures["natural"] = dict(zip(data.domains, prior.tolist(), strict=True))
    objective = {"metrics": None}
    workers = args.workers or os.cpu_count() or 1
    t_size = model_size(ProxySpec.model_validate(cfg["target"]), data.vocab_size)
    con.print(f"{dataset.name}: {len(mixtures)} mixtures; target {t_size.total:,} params × "
              f"{cfg['target']['tokens']:,} tokens; {workers} worker(s)")
    results: dict[str, dict[str, float]] = {}
    sizes: dict[str, dict[str, float]] = {}
    from mixopt.search import cluster

    started = cluster.connect()  # one local cluster for every training below
    for label, p in [*cfg["proxies"].items(), ("target", cfg["target"])]:
        size = model_size(ProxySpec.model_validate(p), data.vocab_size)
        sizes[label] = {"params": size.total, "tokens": p["tokens"], "tokens_per_param": p["tokens"] / size.total,
                        "compute": size.total * p["tokens"]}
        con.print(f"[bold]{label}[/]: {size.total:,} params × {p['tokens']:,} tokens "
                  f"({p['tokens'] / size.total:.1f} tokens/param)")
        t0 = time.perf_counter()
        out = train_targets([(mixtures, 1000 + args.seed)], {"target": p}, data, objective, con.print, workers)
        results[label] = out[0]
        sizes[label]["seconds"] = time.perf_counter() - t0
    if started:
        cluster.shutdown()
    names = list(mixtures)
    y_target = np.array([results["target"][n] for n in names])
    rows = []
    for label in cfg["proxies"]:
        y = np.array([results[label][n] for n in names])
        ok = np.isfinite(y) & np.isfinite(y_target)
        rho = float(spearmanr(y[ok], y_target[ok]).statistic) if ok.sum() > 2 else float("nan")
        best = names[int(np.nanargmin(y))]
        rank = int((y_target < results["target"][best]).sum()) + 1
        rows.append({"proxy": label, **sizes[label], "spearman_rho": rho, "proxy_best": best,
                     "target_rank_of_proxy_best": rank,
                     "regret": float(results["target"][best] - np.nanmin(y_target)),
                     "objective": {n: results[label][n] for n in names}})
    t = Table(title=f"Proxy → target ranking on {dataset.name}: {len(names)} mixtures, equal proxy compute, "
                    f"target {t_size.total / 1e3:.0f}k params × {cfg['target']['tokens'] / 1e6:.2f}M tokens")
    for c in ("proxy", "params", "tokens", "tokens/param", "Spearman ρ", "target rank of proxy's best",
              "regret", "seconds"):
        t.add_column(c, justify="left" if c == "proxy" else "right")
    for r in rows:
        t.add_row(r["proxy"], f"{r['params']:,}", f"{r['tokens']:,}", f"{r['tokens_per_param']:.1f}",
                  f"{r['spearman_rho']:.3f}", f"{r['target_rank_of_proxy_best']} of {len(names)} "
                  f"({r['proxy_best']})", f"{r['regret']:.4f}", f"{r['seconds']:.0f}")
    con.print(t)
    best_t = names[int(np.nanargmin(y_target))]
    con.print(f"target's best: {best_t} ({np.nanmin(y_target):.4f}); uniform {results['target']['uniform']:.4f}, "
              f"natural {results['target']['natural']:.4f}")
    result = {"dataset": dataset.name, "mode": mode, "mixtures": mixtures, "target": {**sizes["target"],
              "objective": results["target"]}, "rows": rows, "wall_seconds": time.perf_counter() - t_start}
    if args.out:
        args.out.write_text(json.dumps(_clean(result), indent=1))
    if args.json:
        print(json.dumps(_clean(result)))
    return result


if __name__ == "__main__":
    main()
