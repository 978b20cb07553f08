"""Online mixing on the demo corpus: stratified, natural, DoReMi and Aioli at equal token budgets.

Every method trains the same proxy for the same number of steps, on the same seeds (seed i gives every method
the same initial weights and sampler stream, so differences are paired). Aioli's LearnParams steps are part of
its run, so it spends no extra tokens; DoReMi's reference runs are the natural-mixture runs of the same table.
Each domain's validation split is cut in two: the first half is what the online methods may look at (Aioli's
loss drops, the reference losses), the second half is the test set every number below is measured on.

Rows:
- stratified (uniform), natural (token shares): static mixtures;
- DoReMi (online) and Aioli (online): the runs that steer their own proportions;
- DoReMi → ᾱ and Aioli → average: fresh static runs on what the `doremi` / `aioli` optimizers recommend for a
  full-scale run (DoReMi's output is ᾱ; for Aioli, its proportions averaged over training, probes left out);
- with `--ablations`, Aioli with η≈0 (the LearnParams probes alone, proportions kept uniform) and with η = 10;
- with `--law N`, N extra static runs on Dirichlet mixtures fit the static log-linear law (METHODS §4a), whose
  minimiser (within the per-domain range the sweep covered) is trained too ("log-linear law").

The claim tested (Aioli, arXiv 2411.05735): Aioli beats stratified sampling on average test perplexity (the mean
over domains of exp(loss)), where other methods often do not.

    python benchmarks/aioli_demo.py [--workdir DIR] [--seeds 3] [--steps 360] [--quick] [--json] [--save FILE]
                                    [--law N] [--aioli-eta ETA] [--ablations] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Proxy: proxies/tiny.yaml's model (2 layers, d_model 64, byte-level, 128-token context) with a budget that lets
# the losses separate while the whole benchmark stays around 10–15 minutes on two shared cores.
PROXY = dict(name="aioli-demo", n_layer=2, n_head=4, d_model=64, seq_len=128, batch_size=16, lr=3e-3,
             warmup_frac=0.1, weight_decay=0.1, eval_windows=16)
FULL = dict(steps=360, seeds=3)
QUICK = dict(steps=120, seeds=2)
# Aioli: the paper's full-SlimPajama setting (7 groups: eta 1, one_hot_factor 0.75, ema 0.1, A normalised) with
# the round scaled to the proxy's length: 1 sweep of 2-step probes (14 steps) in each round of 60 steps.
AIOLI = dict(lp_rounds=1, lp_steps=2, update_steps=60, eta=1.0, one_hot_factor=0.75, ema=0.1)
AIOLI_QUICK = dict(AIOLI, update_steps=40)
DOREMI = dict(eta=1.0, smoothing=1e-3, every=1, signal="train")  # DoReMi's scripts, updated every step
TEST = "test/"


def split_validation(val: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """First half of each domain's validation tokens stays the validation set, the second half is the test set."""
    out: dict[str, np.ndarray] = {}
    for d, a in val.items():
        half = len(a) // 2
        out[d] = np.asarray(a[:half])
        out[TEST + d] = np.asarray(a[half:])
    return out


def run_table(results: list, weights: list[dict[str, float]], schedules: list, seeds: list[int],
              domains: list[str], token_counts: dict[str, int], first_id: int = 0):
    """What the job store would record for these runs (validation losses only; the test half stays hidden)."""
    from mixopt.runs import RunTable

    rows = []
    for i, (r, w, sched, seed) in enumerate(zip(results, weights, schedules, seeds, strict=True)):
        rows.append({"run_id": f"r{first_id + i:04d}", "seed": seed, "status": r.status, "steps": r.steps,
                     **{f"w_{d}": float(w.get(d, 0.0)) for d in domains},
                     **{f"loss_{d}": r.losses.get(d, math.nan) for d in domains},
                     "schedule": sched, "trajectory": r.trajectory, "mean_weights": r.mean_weights})
    return RunTable(pd.DataFrame(rows), token_counts=token_counts)


def test_scores(r, domains: list[str]) -> dict[str, Any]:
    losses = {d: r.losses[TEST + d] for d in domains}
    return {"loss": float(np.mean(list(losses.values()))),
            "ppl": float(np.mean([math.exp(v) for v in losses.values()])), "losses": losses}


def summarise(rows: dict[str, list], domains: list[str]) -> dict[str, Any]:
    base = [test_scores(r, domains) for r in rows["stratified"]]
    out: dict[str, Any] = {}
    for name, results in rows.items():
        if any(r.status != "ok" for r in results):
            out[name] = {"failed": [r.error for r in results if r.status != "ok"]}
            continue
        sc = [test_scores(r, domains) for r in results]
        ppl = np.array([s["ppl"] for s in sc])
        delta = ppl - np.array([b["ppl"] for b in base])
        out[name] = {
            "loss": float(np.mean([s["loss"] for s in sc])), "loss_std": float(np.std([s["loss"] for s in sc],
                                                                                     ddof=1)),
            "ppl": float(ppl.mean()), "ppl_std": float(ppl.std(ddof=1)),
            "delta_ppl": float(delta.mean()), "delta_ppl_se": float(delta.std(ddof=1) / math.sqrt(len(delta))),
            "wins_vs_stratified": int((delta < 0).sum()), "seeds": len(sc),
            "per_seed_ppl": ppl.round(4).tolist(),
            "domain_loss": {d: float(np.mean([s["losses"][d] for s in sc])) for d in domains},
            "mixture": {d: float(np.mean([r.mean_weights.get(d, 0.0) for r in results])) for d in domains},
        }
    return out


def print_table(summary: dict[str, Any], domains: list[str], seconds: dict[str, float], cfg: dict) -> None:
    print(f"\nAioli demo benchmark — {cfg['steps']} steps × {cfg['tokens_per_step']} tokens per run "
          f"({cfg['tokens']:,} tokens), {cfg['seeds']} seeds, test = held-out half of each validation split")
    head = f"{'method':<22}{'test loss':>10}{'avg test ppl':>16}{'Δppl vs strat.':>18}{'wins':>6}"
    print(head)
    print("-" * len(head))
    for name, s in summary.items():
        if "failed" in s:
            print(f"{name:<22}  failed: {s['failed'][0]}")
            continue
        delta = "—" if name == "stratified" else f"{s['delta_ppl']:+.3f} ± {s['delta_ppl_se']:.3f}"
        wins = "—" if name == "stratified" else f"{s['wins_vs_stratified']}/{s['seeds']}"
        print(f"{name:<22}{s['loss']:>10.4f}{s['ppl']:>9.3f} ± {s['ppl_std']:<5.3f}{delta:>18}{wins:>6}")
    print("\nper-domain test loss (mean over seeds)")
    short = [d[:9] for d in domains]
    print(f"{'method':<22}" + "".join(f"{d:>10}" for d in short))
    for name, s in summary.items():
        if "domain_loss" in s:
            print(f"{name:<22}" + "".join(f"{s['domain_loss'][d]:>10.4f}" for d in domains))
    print("\nproportions actually sampled (time-average over training, mean over seeds)")
    print(f"{'method':<22}" + "".join(f"{d:>10}" for d in short))
    for name, s in summary.items():
        if "mixture" in s:
            print(f"{name:<22}" + "".join(f"{s['mixture'][d]:>10.3f}" for d in domains))
    print("\ntime: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))


def verdict(summary: dict[str, Any]) -> dict[str, Any]:
    """Does Aioli beat stratified on average test perplexity, and do the others?"""
    out = {}
    for name, s in summary.items():
        if name == "stratified" or "delta_ppl" not in s:
            continue
        better = s["delta_ppl"] < 0
        sure = better and s["delta_ppl"] + 2 * s["delta_ppl_se"] < 0
        out[name] = {"beats_stratified_on_mean": better, "beats_stratified_by_2se": sure,
                     "wins": f"{s['wins_vs_stratified']}/{s['seeds']}", "delta_ppl": s["delta_ppl"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=None, help="where the demo corpus is prepared (default: temp)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per method (default 3; --quick: 2)")
    ap.add_argument("--steps", type=int, default=None, help="training steps per run (default 360; --quick: 120)")
    ap.add_argument("--law", type=int, default=0, help="static runs for the log-linear law (0: skip; ≥ 9)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--quick", action="store_true", help="short runs, 2 seeds: a smoke test of the pipeline")
    ap.add_argument("--aioli-eta", type=float, default=None, help="Aioli's step size (default: the paper's 1.0)")
    ap.add_argument("--ablations", action="store_true", help="also run Aioli with η≈0 (its probes alone, "
                    "proportions kept uniform) and with η = 10")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    ap.add_argument("--save", type=Path, default=None, help="also write the JSON object to this file")
    args = ap.parse_args()

    from mixopt.data import prepare
    from mixopt.laws.loglinear import fit_loglinear
    from mixopt.optimizers import get_optimizer
    from mixopt.proxies import train_proxies
    from mixopt.runs import RunTable
    from mixopt.spec import ProxySpec, load_dataset

    base = QUICK if args.quick else FULL
    S, steps = args.seeds or base["seeds"], args.steps or base["steps"]
    if S < 2:
        ap.error("--seeds must be at least 2 (the spread is part of the result)")
    spec = ProxySpec(**PROXY, tokens=steps * PROXY["batch_size"] * PROXY["seq_len"])
    aioli_cfg = dict(AIOLI_QUICK if args.quick else AIOLI)
    if args.aioli_eta is not None:
        aioli_cfg["eta"] = args.aioli_eta

    def log(*a: Any) -> None:
        print(*a, file=sys.stderr, flush=True)

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="aioli-demo-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    data = prepare(load_dataset(ROOT / "datasets" / "demo.yaml"), workdir / "data")
    seconds["prepare"] = time.perf_counter() - t
    domains, counts, vocab = data.domains, data.token_counts, data.vocab_size
    train = data.load("train")
    evalset = split_validation(data.load("val"))
    seeds = list(range(S))
    uniform = {d: 1 / len(domains) for d in domains}
    natural = {d: counts[d] / sum(counts.values()) for d in domains}
    empty = RunTable.empty(domains, token_counts=counts)

    def train_many(mixtures, run_seeds, schedules=None, label=""):
        t0 = time.perf_counter()
        log(f"[{label}] training {len(mixtures)} proxies × {spec.steps} steps together …")
        out = train_proxies(spec, mixtures, run_seeds, train, evalset, vocab, threads=args.threads,
                            schedules=schedules)
        seconds[label] = time.perf_counter() - t0
        log(f"[{label}] {seconds[label]:.0f} s")
        return out

    # 1. static mixtures: stratified, natural (= DoReMi's reference runs), and the law's sweep
    doremi = get_optimizer("doremi", seed=0, reference_runs=S, **DOREMI)
    ref_props = doremi.propose(empty, S)
    assert len(ref_props) == S  # DoReMi's reference runs are the natural-mixture runs
    assert all(max(abs(p.weights[d] - natural[d]) for d in domains) < 1e-9 for p in ref_props)
    sweep = (list(np.random.default_rng(123).dirichlet(np.ones(len(domains)), size=args.law)) if args.law else [])
    sweep_w = [{d: float(x) for d, x in zip(domains, w, strict=True)} for w in sweep]
    static = train_many([uniform] * S + [p.weights for p in ref_props] + sweep_w, seeds + seeds + [0] * len(sweep),
                        label="static")
    rows: dict[str, list] = {"stratified": static[:S], "natural": static[S:2 * S]}
    ref_table = run_table(static[S:2 * S], [p.weights for p in ref_props], [None] * S, seeds, domains, counts)

    # 2. online runs, proposed by the optimizers: DoReMi against the natural runs' losses, and Aioli
    aioli = get_optimizer("aioli", seed=0, **aioli_cfg)
    d_props, a_props = doremi.propose(ref_table, S), aioli.propose(empty, S)
    variants = {"Aioli, η≈0 (probes only)": 1e-9, "Aioli, η=10": 10.0} if args.ablations else {}
    x_props = [p for eta in variants.values()
               for p in get_optimizer("aioli", seed=0, **dict(aioli_cfg, eta=eta)).propose(empty, S)]
    props = d_props + a_props + x_props
    online = train_many([p.weights for p in props], seeds * (len(props) // S),
                        schedules=[p.schedule for p in props], label="online")
    rows["DoReMi (online)"], rows["Aioli (online)"] = online[:S], online[S:2 * S]
    for i, name in enumerate(variants):
        rows[name] = online[(2 + i) * S:(3 + i) * S]
    online = online[:2 * S]
    d_table = RunTable(pd.concat([ref_table.df, run_table(online[:S], [p.weights for p in d_props],
                                                          [p.schedule for p in d_props], seeds, domains, counts,
                                                          first_id=S).df], ignore_index=True),
                       token_counts=counts)
    a_table = run_table(online[S:], [p.weights for p in a_props], [p.schedule for p in a_props], seeds, domains,
                        counts)
    d_rec, a_rec = doremi.recommend(d_table), aioli.recommend(a_table)

    # 3. what a full-scale run would get: static runs on the recommended mixtures (and the law's optimum)
    transfer = [d_rec.weights] * S + [a_rec.weights] * S
    law_info: dict[str, Any] = {}
    if sweep:
        sw = static[2 * S:]
        ok = [i for i, r in enumerate(sw) if r.status == "ok"]
        P = np.array([sweep[i] for i in ok])
        L = np.array([[sw[i].losses[d] for d in domains] for i in ok])
        law = fit_loglinear(P, L, domains=domains, targets=domains)
        # The optimum is searched within the range each domain had in the sweep: the law extrapolates badly to
        # corners it never saw (with few runs it happily predicts a one-domain mixture to be best).
        p_law, predicted = law.optimise(caps=P.max(axis=0))
        law_w = {d: float(x) for d, x in zip(domains, p_law, strict=True)}
        transfer += [law_w] * S
        law_info = {"runs": len(ok), "rmse": law.rmse.tolist(), "mixture": law_w, "predicted_val_loss": predicted}
    final = train_many(transfer, seeds * (len(transfer) // S), label="transfer")
    rows["DoReMi → ᾱ"], rows["Aioli → average"] = final[:S], final[S:2 * S]
    if sweep:
        rows["log-linear law"] = final[2 * S:]
        law_info["measured_val_loss"] = float(np.mean([np.mean([r.losses[d] for d in domains])
                                                       for r in final[2 * S:]]))

    summary = summarise(rows, domains)
    cfg = {"steps": spec.steps, "tokens": spec.tokens, "tokens_per_step": spec.batch_size * spec.seq_len,
           "seeds": S, "proxy": PROXY, "aioli": aioli_cfg, "doremi": DOREMI, "threads": args.threads}
    result = {"config": cfg, "methods": summary, "claim": verdict(summary), "seconds": seconds,
              "aioli": {"average": a_rec.details["average"], "final": a_rec.details["final"],
                        "sampled_average": a_rec.details["sampled_average"],
                        "schedule_stages": len(a_rec.details["schedule"]["stages"])},
              "doremi": {"average": d_rec.details["average"], "final": d_rec.details["final"],
                         "reference": d_props[0].schedule["reference"]}}
    if law_info:
        result["law"] = law_info
    if args.save:
        args.save.write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(summary, domains, seconds, cfg)
        print("\nrecommended static mixtures (for a full-scale run)")
        print(f"{'':<22}" + "".join(f"{d[:9]:>10}" for d in domains))
        for label, w in (("Aioli average", a_rec.details["average"]), ("Aioli final", a_rec.details["final"]),
                         ("DoReMi ᾱ", d_rec.details["average"]), ("DoReMi final α", d_rec.details["final"]),
                         *((("log-linear law", law_info["mixture"]),) if law_info else ())):
            print(f"{label:<22}" + "".join(f"{w[d]:>10.3f}" for d in domains))
        if law_info:
            print(f"\nlog-linear law on {law_info['runs']} runs: in-sample RMSE per domain "
                  f"{np.round(law_info['rmse'], 4).tolist()}; predicted mean val loss at its optimum "
                  f"{law_info['predicted_val_loss']:.4f}, measured {law_info['measured_val_loss']:.4f}")
        print("\nclaim: Aioli beats stratified on average test perplexity; others often do not")
        for name, v in result["claim"].items():
            word = "beats" if v["beats_stratified_on_mean"] else "does not beat"
            sure = " (by more than 2 standard errors)" if v["beats_stratified_by_2se"] else ""
            print(f"  {name:<20} {word} stratified: Δppl {v['delta_ppl']:+.3f}, better on {v['wins']} seeds{sure}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
