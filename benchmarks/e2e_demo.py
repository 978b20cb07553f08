"""Proof of value: do recommended mixtures train a better *larger* model than the baselines? Measured end to end.

    python benchmarks/e2e_demo.py            # full mode: about an hour on a 2-core CPU (README has its table)
    python benchmarks/e2e_demo.py --quick    # < 20 minutes here: fewer runs and seeds, a smaller target
    python benchmarks/e2e_demo.py --json     # also print one JSON object at the end

1. Searches with tiny proxies on the demo corpus, each at the same proxy budget (number of runs), each through
   mixopt's own driver (Ray tasks, the SQLite run table, MLflow): `regmix`, `mfbo` (when installed), and
   Optuna's TPE sampler wrapped as a mixopt optimizer (it sees the same run table; Optuna is a benchmark-only
   dependency), for the objective stated up front (the mean validation loss over all domains by default; a single
   domain with --objective loss_<domain>).
2. A target model ≥ 8× the proxies' parameters, trained for ≥ 4× their tokens, on each recommended mixture and on
   the baselines `uniform`, `natural` (token-proportional) and the best mixture seen among all proxy runs, with
   several seeds. Every mixture of one seed gets the same initialisation and data seed (common random numbers make
   the paired comparisons sharper); on a GPU they train as one batched model, on a CPU spread over one-thread Ray
   tasks (`--workers`), which changes no number.
3. The second question: train the target on 8 of the regmix job's proxy mixtures spanning its measured range and
   report Spearman's ρ between proxy and target objective.

Output: a table (objective mean ± sd per mixture, paired gap to `natural` and whether it exceeds seed noise —
|mean gap| > 2 standard errors of the paired differences — compute spent on proxies vs one target run, wall
time), a JSON file, and a plot with error bars logged to the regmix job's MLflow parent run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mixopt.optimizers import _BUILTIN, list_optimizers  # noqa: E402
from mixopt.optimizers.base import OptimizerBase, Proposal, Recommendation  # noqa: E402
from mixopt.runs import RunTable  # noqa: E402

DOMAINS_FILE = ROOT / "datasets" / "demo.yaml"


# --------------------------------------------------------------------------------------------- Optuna TPE


class TPE(OptimizerBase):
    """Optuna's TPE sampler as a mixopt optimizer: what a user would reach for instead of a mixture method.

    Each weight is a free parameter in (0, 1]; the mixture is their normalisation (the usual way to put a box
    optimizer on the simplex). The study is rebuilt from the run table on every call (tells of every finished
    run, x = its weights), so TPE is as stateless as every other optimizer here. A round of n proposals uses
    Optuna's constant liar so the n asks differ. It has no surrogate to recommend from; its recommendation is
    the best mixture it measured.
    """

    name = "tpe"

    def propose(self, history: RunTable, n: int) -> list[Proposal]:
        import optuna
        from optuna.distributions import FloatDistribution
        from optuna.trial import create_trial

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        dists = {f"x_{d}": FloatDistribution(1e-4, 1.0) for d in history.domains}
        seed = int(self.rng(history).integers(2**31))
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True,
                                                                        n_startup_trials=8))
        usable, y = history.usable(self.objective)
        if len(usable):
            for w, v in zip(usable.weights, y, strict=True):
                params = {f"x_{d}": float(np.clip(x, 1e-4, 1.0)) for d, x in zip(history.domains, w, strict=True)}
                study.add_trial(create_trial(params=params, distributions=dists, value=float(v)))
        out = []
        for _ in range(n):
            trial = study.ask(dists)
            x = np.array([trial.params[f"x_{d}"] for d in history.domains])
            out.append(Proposal({d: float(v) for d, v in zip(history.domains, x / x.sum(), strict=True)}))
        return out

    def recommend(self, history: RunTable, target: Any = None) -> Recommendation:
        usable, y = history.usable(self.objective)
        i = int(np.argmin(y))
        return self._recommendation(usable.weights[i], history, predicted=float(y[i]),
                                    notes=["TPE has no surrogate: this is the best mixture it measured"])


_BUILTIN["tpe"] = f"{__name__}:TPE"


# --------------------------------------------------------------------------------------------- settings


def settings(mode: str) -> dict[str, Any]:
    proxy = dict(name="e2e-proxy", n_layer=2, n_head=4, d_model=64, seq_len=128, batch_size=16, lr=3e-3,
                 warmup_frac=0.1, eval_windows=32, num_cpus=1, proxies_per_task=2)
    target = dict(name="e2e-target", n_layer=5, n_head=4, d_model=128, seq_len=128, batch_size=16, lr=2e-3,
                  warmup_frac=0.05, eval_windows=32)
    if mode == "full":
        return dict(proxy=dict(proxy, tokens=250_000), target=dict(target, tokens=1_000_000), runs=24,
                    parallelism=4, seeds=3, rank_mixtures=8, n_candidates=100_000)
    if mode == "quick":
        return dict(proxy=dict(proxy, n_layer=1, d_model=48, tokens=150_000),
                    target=dict(target, n_layer=3, d_model=96, tokens=600_000), runs=12, parallelism=4, seeds=2,
                    rank_mixtures=8, n_candidates=20_000)
    # toy: keeps the script working in a test (seconds of training)
    return dict(proxy=dict(proxy, n_layer=1, d_model=16, n_head=2, seq_len=32, batch_size=4, tokens=4 * 32 * 3,
                           eval_windows=2),
                target=dict(target, n_layer=2, d_model=48, n_head=2, seq_len=32, batch_size=4, tokens=4 * 32 * 12,
                            eval_windows=2),
                runs=4, parallelism=2, seeds=2, rank_mixtures=4, n_candidates=2_000)


# --------------------------------------------------------------------------------------------- steps


def run_search(name: str, optimizer: dict[str, Any], cfg: dict, objective: dict, workdir: Path,
               seed: int, log) -> dict[str, Any]:
    from mixopt.search import Search
    from mixopt.spec import SearchSpec, load_dataset

    spec = SearchSpec(name=f"e2e-{name}", dataset=load_dataset(DOMAINS_FILE), proxy=cfg["proxy"],
                      optimizer=optimizer, objective=objective, budget={"runs": cfg["runs"]},
                      parallelism=cfg["parallelism"], seed=seed)
    t0 = time.perf_counter()
    done = [0]

    def on_event(event: str, data: dict) -> None:
        if event == "result":
            done[0] += 1
            log(f"  {name}: run {done[0]}/{cfg['runs']} {data['status']} objective={data.get('objective')}")

    search = Search(spec, workdir=workdir, on_event=on_event)
    rec = search.run()
    table = search.store.run_table()
    flops = float(table.df.get("fid_flops", np.zeros(len(table))).fillna(0).sum())
    return {"name": name, "weights": rec.weights, "predicted": rec.predicted, "seconds": time.perf_counter() - t0,
            "proxy_flops": flops, "table": table, "store": search.store}


def objective_of(losses: dict[str, float], objective: dict) -> float:
    metrics = objective.get("metrics")
    if not metrics:
        return float(np.mean(list(losses.values())))
    return float(np.mean([losses[m.removeprefix("loss_")] for m in metrics]))


if __name__ != "__main__":  # imported by file path (the test): Ray workers cannot import it by name
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _target_task(spec: dict, mixtures: list[dict[str, float]], seed: int, train, val, vocab: int,
                 threads: int) -> list[dict]:
    """Train target models on some mixtures of one seed (a batched model: the same initialisation and data
    order for each mixture); returns [{status, losses}]."""
    from mixopt.proxies import train_proxies
    from mixopt.spec import ProxySpec

    res = train_proxies(ProxySpec.model_validate(spec), mixtures, [seed] * len(mixtures), train, val, vocab,
                        threads=threads)
    return [{"status": r.status, "losses": r.losses} for r in res]


def train_targets(jobs: list[tuple[dict[str, dict[str, float]], int]], cfg: dict, data, objective: dict, log,
                  workers: int) -> list[dict[str, float]]:
    """Target objective per (mixtures, seed) job, in order.

    Splitting a seed's mixtures over tasks changes no number (batched equals separate runs), so on a CPU the
    (mixture, seed) pairs are spread over `workers` one-thread Ray tasks of up to 3 mixtures: a target step of a
    1M-parameter model keeps about one core busy, whatever the threads. With one worker (a GPU) each job is one
    batched model in this process."""
    train, val = data.load("train", mmap=False), data.load("val", mmap=False)
    units = [(j, name, seed) for j, (mixes, seed) in enumerate(jobs) for name in mixes]
    out: list[dict[str, float]] = [{} for _ in jobs]
    t0 = time.perf_counter()

    def record(group: list[tuple[int, str, int]], results: list[dict]) -> None:
        for (j, name, _), r in zip(group, results, strict=True):
            out[j][name] = objective_of(r["losses"], objective) if r["status"] == "ok" else float("nan")
        done = sum(len(o) for o in out)
        log(f"  target runs {done}/{len(units)} done ({time.perf_counter() - t0:.0f} s)")

    per = 3 if workers > 1 else max(len(m) for m, _ in jobs)
    groups = []
    for j, (mixes, seed) in enumerate(jobs):
        names = list(mixes)
        groups += [[(j, n, seed) for n in names[i:i + per]] for i in range(0, len(names), per)]
    if workers <= 1:
        for g in groups:
            record(g, _target_task(cfg["target"], [jobs[j][0][n] for j, n, _ in g], g[0][2], train, val,
                                   data.vocab_size, threads=os.cpu_count() or 1))
        return out
    import ray

    from mixopt.search import cluster

    started = cluster.connect()
    try:
        task = ray.remote(num_cpus=1)(_target_task)
        t_ref, v_ref = ray.put(train), ray.put(val)
        pending = {task.remote(cfg["target"], [jobs[j][0][n] for j, n, _ in g], g[0][2], t_ref, v_ref,
                               data.vocab_size, 1): g for g in groups}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            record(pending.pop(ready[0]), ray.get(ready[0]))
    finally:
        if started:
            cluster.shutdown()
    return out


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def paired_gap(a: list[float], b: list[float]) -> tuple[float, float, bool]:
    d = np.asarray(a) - np.asarray(b)
    if len(d) < 2:
        return float(d.mean()), float("nan"), False
    se = float(d.std(ddof=1) / math.sqrt(len(d)))
    return float(d.mean()), se, bool(abs(d.mean()) > 2 * se)


def plot_result(res: dict):
    """The README's figure: objective per mixture (mean ± sd over seeds), best first."""
    rows = sorted(res["rows"], key=lambda r: r["mean"])
    return plot(rows, f"target {res['target_params'] / 1e6:.2f}M params, {len(res['seeds'])} seeds "
                      f"({res['mode']} mode): objective per mixture")


def plot(rows: list[dict], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    names = [r["mixture"] for r in rows]
    ax.errorbar(range(len(rows)), [r["mean"] for r in rows], yerr=[r["sd"] for r in rows], fmt="o", capsize=4)
    ax.set_xticks(range(len(rows)), names, rotation=20)
    ax.set_ylabel("target objective (lower is better)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="< 20 minutes here: fewer runs/seeds, smaller target")
    ap.add_argument("--toy", action="store_true", help="seconds of training; for the test that keeps this working")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    ap.add_argument("--objective", default=None, help="loss_<domain> to minimise (default: mean over domains)")
    ap.add_argument("--workdir", type=Path, default=None, help="work dir (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here too")
    ap.add_argument("--plot", type=Path, default=None, help="save the plot (PNG) here too (also: --from-json)")
    ap.add_argument("--from-json", type=Path, default=None, help="only redraw --plot from an earlier --out file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="parallel target trainings (default: 1 on a GPU, "
                    "else one per CPU core)")
    args = ap.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    if args.from_json is not None:
        if args.plot is None:
            ap.error("--from-json needs --plot")
        res = json.loads(args.from_json.read_text())
        plot_result(res).savefig(args.plot, dpi=120)
        return res
    con = Console(stderr=args.json, width=150)
    mode = "toy" if args.toy else "quick" if args.quick else "full"
    cfg = settings(mode)
    objective = {"metrics": [args.objective]} if args.objective else {"metrics": None}
    from mixopt.spec import ObjectiveSpec

    obj_spec = ObjectiveSpec.model_validate(objective)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mixopt-e2e-"))
    t_start = time.perf_counter()
    from mixopt.data import prepare
    from mixopt.proxies import model_size
    from mixopt.spec import ProxySpec, load_dataset

    data = prepare(load_dataset(DOMAINS_FILE), workdir / "data")
    p_size = model_size(ProxySpec.model_validate(cfg["proxy"]), data.vocab_size)
    t_size = model_size(ProxySpec.model_validate(cfg["target"]), data.vocab_size)
    ratio_params, ratio_tokens = t_size.total / p_size.total, cfg["target"]["tokens"] / cfg["proxy"]["tokens"]
    con.print(f"mode {mode}: proxy {p_size.total:,} params × {cfg['proxy']['tokens']:,} tokens; target "
              f"{t_size.total:,} params ({ratio_params:.1f}×) × {cfg['target']['tokens']:,} tokens "
              f"({ratio_tokens:.1f}×); objective {objective['metrics'] or 'mean over domains'}")

    searches: dict[str, dict] = {}
    plan = [("regmix", {"name": "regmix", "n_candidates": cfg["n_candidates"]}), ("tpe", {"name": "tpe"})]
    skipped = {}
    if "mfbo" in list_optimizers():
        plan.insert(1, ("mfbo", {"name": "mfbo"}))
    else:
        skipped["mfbo"] = "not installed in this version of mixopt"
    for name, opt in plan:
        con.print(f"[bold]search {name}[/] ({cfg['runs']} proxy runs)")
        try:
            searches[name] = run_search(name, opt, cfg, objective, workdir, args.seed, con.print)
        except Exception as e:  # a method that cannot run here is reported, not hidden
            skipped[name] = f"{type(e).__name__}: {e}"
            con.print(f"  [red]skipped {name}: {skipped[name]}")

    # Candidate mixtures for the target.
    tc = data.token_counts
    total = sum(tc.values())
    mixtures = {f"{n} (rec.)": s["weights"] for n, s in searches.items()}
    mixtures["uniform"] = {d: 1 / len(tc) for d in tc}
    mixtures["natural"] = {d: v / total for d, v in tc.items()}
    best_seen, best_val = None, math.inf
    for s in searches.values():
        usable, y = s["table"].usable(obj_spec)
        i = int(np.argmin(y))
        if y[i] < best_val:
            best_val, best_seen = float(y[i]), dict(zip(usable.domains, usable.weights[i].tolist(), strict=True))
    mixtures["best proxy run"] = best_seen
    seeds = [1000 + i for i in range(cfg["seeds"])]
    jobs = [(mixtures, s) for s in seeds]
    # Second question: does the proxies' ranking hold at the target size? (Trained alongside, one seed.)
    picked: dict[str, dict[str, float]] = {}
    if "regmix" in searches:
        usable, y = searches["regmix"]["table"].usable(obj_spec)
        order = np.argsort(y)
        pick = order[np.unique(np.linspace(0, len(order) - 1, cfg["rank_mixtures"]).round().astype(int))]
        picked = {f"run{int(i)}": dict(zip(usable.domains, usable.weights[i].tolist(), strict=True))
                  for i in pick}
        jobs.append((picked, seeds[0]))
    workers = args.workers or (1 if torch_cuda() else os.cpu_count() or 1)
    con.print(f"[bold]target runs[/]: {len(mixtures)} mixtures × {len(seeds)} seeds + {len(picked)} proxy mixtures "
              f"for the ranking check; {workers} worker(s)")
    t0 = time.perf_counter()
    trained = train_targets(jobs, cfg, data, objective, con.print, workers)
    target = {n: [trained[i][n] for i in range(len(seeds))] for n in mixtures}
    target_seconds = time.perf_counter() - t0
    rank = {}
    if picked:
        from scipy.stats import spearmanr

        proxy_y = [float(y[i]) for i in pick]
        target_y = [trained[-1][k] for k in picked]
        rho = float(spearmanr(proxy_y, target_y).statistic)
        rank = {"spearman_rho": rho, "proxy": proxy_y, "target": target_y}

    target_flops = t_size.flops_per_token * cfg["target"]["tokens"]
    rows = []
    for name, vals in target.items():
        gap, se, sig = paired_gap(vals, target["natural"])
        src = name.removesuffix(" (rec.)")
        proxy_flops = searches[src]["proxy_flops"] if src in searches else 0.0
        rows.append({"mixture": name, "mean": float(np.mean(vals)), "sd": float(np.std(vals, ddof=1))
                     if len(vals) > 1 else float("nan"), "values": vals, "gap_to_natural": gap, "gap_se": se,
                     "exceeds_noise": sig if name != "natural" else None,
                     "proxy_flops": proxy_flops, "proxy_compute_vs_target_run": proxy_flops / target_flops,
                     "search_seconds": searches[src]["seconds"] if src in searches else None,
                     "weights": mixtures[name]})
    t = Table(title=f"Target model ({t_size.total / 1e6:.2f}M params, {cfg['target']['tokens']:,} tokens), "
                    f"{len(seeds)} seeds — objective {objective['metrics'] or 'mean val loss'} (lower is better)")
    for c in ("mixture", "target objective", "gap to natural", "beyond seed noise?", "proxy compute ÷ 1 target run",
              "search wall time"):
        t.add_column(c, justify="left" if c == "mixture" else "right")
    for r in sorted(rows, key=lambda r: r["mean"]):
        t.add_row(r["mixture"], f"{r['mean']:.4f} ± {r['sd']:.4f}",
                  "—" if r["mixture"] == "natural" else f"{r['gap_to_natural']:+.4f} (se {r['gap_se']:.4f})",
                  "—" if r["exceeds_noise"] is None else ("yes" if r["exceeds_noise"] else "no"),
                  f"{r['proxy_compute_vs_target_run']:.2f}" if r["proxy_flops"] else "—",
                  f"{r['search_seconds']:.0f} s" if r["search_seconds"] else "—")
    con.print(t)
    if rank:
        con.print(f"proxy → target ranking of {len(rank['proxy'])} regmix proxy mixtures: Spearman ρ = "
                  f"{rank['spearman_rho']:.3f}")
    for n, why in skipped.items():
        con.print(f"skipped {n}: {why}")
    result = {"mode": mode, "objective": objective["metrics"] or "mean", "proxy_params": p_size.total,
              "target_params": t_size.total, "params_ratio": ratio_params, "tokens_ratio": ratio_tokens,
              "seeds": seeds, "rows": rows, "ranking": rank, "skipped": skipped,
              "target_seconds": target_seconds, "wall_seconds": time.perf_counter() - t_start}
    if "regmix" in searches:
        store = searches["regmix"]["store"]
        parent = store.get_meta("mlflow_parent_run_id")
        if parent:
            from mlflow import MlflowClient

            client = MlflowClient(store.get_meta("tracking_uri"))
            client.log_figure(parent, plot(sorted(rows, key=lambda r: r["mean"]), "target objective per mixture"),
                              "e2e/target_objective.png")
            client.log_dict(parent, _clean(result), "e2e/result.json")
            result["mlflow_parent_run"] = parent
    if args.out:
        args.out.write_text(json.dumps(_clean(result), indent=1))
    if args.plot:
        plot_result(_clean(result)).savefig(args.plot, dpi=120)
    if args.json:
        print(json.dumps(_clean(result)))
    return result


def _clean(x):
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, np.floating | np.integer | np.bool_):
        return x.item()
    return x


if __name__ == "__main__":
    main()
