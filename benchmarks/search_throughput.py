"""Search throughput: proxies through the Ray driver vs the same proxies trained one after another in-process.

Prints a table of wall times and the ratio (driver ÷ sequential runs per minute), so the cost of Ray, the run
table and MLflow, and the gain from running proxies in parallel, are measured in the same run. Also times
RegMix's recommend (fit + simulate) on the job's runs.

    python benchmarks/search_throughput.py [--runs 8] [--tokens 200000] [--parallelism 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from mixopt.data import prepare
    from mixopt.optimizers import get_optimizer
    from mixopt.proxies import train_proxy
    from mixopt.search import Search
    from mixopt.search.driver import run_seed
    from mixopt.spec import SearchSpec

    spec = SearchSpec.from_yaml(ROOT / "search" / "demo.yaml")
    spec = spec.model_copy(update={
        "proxy": spec.proxy.model_copy(update={"tokens": args.tokens}),
        "budget": spec.budget.model_copy(update={"runs": args.runs}),
        "parallelism": args.parallelism, "include_mixtures": [], "name": "bench"})
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        data = prepare(spec.dataset, wd / "data")  # shared by both paths, not timed
        t0 = time.perf_counter()
        search = Search(spec, workdir=wd)
        search.run()
        t_driver = time.perf_counter() - t0
        table = search.store.run_table()

        train, val = data.load("train", mmap=False), data.load("val", mmap=False)
        t0 = time.perf_counter()
        for i, w in enumerate(table.weights):
            train_proxy(spec.proxy, dict(zip(table.domains, w, strict=True)), train, val, data.vocab_size,
                        run_seed(spec.seed, i), threads=1)
        t_seq = time.perf_counter() - t0

        timings = {}
        for n in (100_000, 1_000_000):
            opt = get_optimizer("regmix", seed=0, n_candidates=n)
            t0 = time.perf_counter()
            opt.recommend(table)
            timings[n] = time.perf_counter() - t0

    res = {"runs": args.runs, "tokens_per_run": args.tokens, "parallelism": args.parallelism,
           "driver_s": t_driver, "sequential_s": t_seq, "speedup": t_seq / t_driver,
           "mean_run_s": float(np.mean(table.df["seconds"])),
           "recommend_100k_s": timings[100_000], "recommend_1m_s": timings[1_000_000]}
    if args.json:
        print(json.dumps(res))
        return
    print(f"| path | {args.runs} runs × {args.tokens:,} tokens | runs/min | ratio |")
    print("|---|---|---|---|")
    print(f"| sequential, in-process, 1 thread | {t_seq:.1f} s | {60 * args.runs / t_seq:.1f} | 1.00× |")
    print(f"| driver: Ray ×{args.parallelism} + run table + MLflow (incl. startup) | {t_driver:.1f} s | "
          f"{60 * args.runs / t_driver:.1f} | {t_seq / t_driver:.2f}× |")
    print()
    print("| regmix recommend on these runs | seconds |")
    print("|---|---|")
    for n, t in timings.items():
        print(f"| {n:,} candidates | {t:.2f} |")


if __name__ == "__main__":
    main()
