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

from mixopt.optimizers import register_optimizer  # noqa: E402
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


register_optimizer("tpe", TPE)  # for this process only


# --------------------------------------------------------------------------------------------- settings


def _zoo(name: str, **over: Any) -> dict[str, Any]:
    import yaml

    return {**yaml.safe_load((ROOT / "proxies" / f"{name}.yaml").read_text()), **over}


def settings(mode: str, demo: Any = None) -> dict[str, Any]:
    """Full mode is the demo's own recipe — the proxy, the ladder's rung (its first `fidelity`, if any) and the
    ladder as search/demo.yaml sets them — against a target of 117k parameters (2 × 64: 15.6× nano's) trained for
    3.0M tokens, the target of every earlier run of this benchmark."""
    if mode == "full":
        proxy = demo.proxy.model_dump(mode="json") if demo is not None else _zoo("nano")
        ladder = demo.fidelities[0].model_dump(mode="json") if demo is not None and demo.fidelities else None
        return dict(proxy=proxy, ladder_proxy=ladder,
                    target=dict(name="e2e-target", n_layer=2, n_head=4, d_model=64, seq_len=128, batch_size=16,
                                lr=3e-3, warmup_frac=0.1, eval_windows=32, tokens=748_800 * 4),
                    runs=demo.budget.runs if demo is not None else 24, parallelism=4, seeds=3, rank_mixtures=0,
                    n_candidates=100_000, ladder=dict(candidates=3, seeds=2))
    if mode == "quick":
        return dict(proxy=_zoo("nano", tokens_per_param=40), ladder_proxy=_zoo("micro", tokens_per_param=20),
                    target=dict(name="e2e-target", n_layer=2, n_head=2, d_model=48, seq_len=128, batch_size=16,
                                lr=3e-3, warmup_frac=0.1, eval_windows=32, tokens=4 * 299_520),
                    runs=16, parallelism=4, seeds=2, rank_mixtures=0, n_candidates=20_000,
                    ladder=dict(candidates=2, seeds=2))
    # toy: keeps the script working in a test (seconds of training)
    small = dict(n_head=2, seq_len=32, batch_size=4, eval_windows=2, proxies_per_task=2, num_cpus=1)
    return dict(proxy=dict(small, name="e2e-proxy", n_layer=1, d_model=16, tokens=4 * 32 * 3),
                ladder_proxy=dict(small, name="e2e-ladder", n_layer=1, d_model=24, tokens=4 * 32 * 6),
                target=dict(small, name="e2e-target", n_layer=2, d_model=48, tokens=4 * 32 * 12),
                runs=6, parallelism=2, seeds=2, rank_mixtures=4, n_candidates=2_000,
                ladder=dict(candidates=1, seeds=2))


# --------------------------------------------------------------------------------------------- steps


def run_search(name: str, optimizer: dict[str, Any], cfg: dict, objective: dict, workdir: Path,
               seed: int, log, dataset, runs: int, ladder: bool) -> dict[str, Any]:
    from mixopt.search import Search
    from mixopt.spec import SearchSpec

    spec = SearchSpec(name=f"e2e-{name.split()[0]}", dataset=dataset, proxy=cfg["proxy"],
                      fidelities=[cfg["ladder_proxy"]] if cfg.get("ladder_proxy") else [], optimizer=optimizer,
                      objective=objective,
                      budget={"runs": runs}, ladder={**cfg["ladder"], "enabled": True} if ladder else False,
                      parallelism=cfg["parallelism"], seed=seed)
    t0 = time.perf_counter()
    done = [0]

    def on_event(event: str, data: dict) -> None:
        if event == "result":
            done[0] += 1
            log(f"  {name}: run {done[0]} ({data.get('stage', 'search')}) {data['status']} "
                f"objective={data.get('objective')}")
        elif event == "ladder":
            log(f"  {name}: ladder of {data['runs']} runs: {', '.join(data['mixtures'])}")

    search = Search(spec, workdir=workdir, on_event=on_event)
    rec = search.run()
    table = search.store.run_table()
    full = search.store.run_table(ladder=True)
    flops = float(full.df.get("fid_flops", np.zeros(len(full))).fillna(0).sum())
    return {"name": name, "weights": rec.weights, "predicted": rec.predicted, "seconds": time.perf_counter() - t0,
            "proxy_flops": flops, "table": table, "store": search.store, "details": rec.details,
            "notes": rec.notes, "runs": runs}


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
    return plot(rows, f"{res.get('dataset', 'demo')}: target {res['target_params'] / 1e3:.0f}k params, "
                      f"{len(res['seeds'])} seeds ({res['mode']} mode): objective per mixture")


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
    ap.add_argument("--dataset", type=Path, default=DOMAINS_FILE, help="dataset manifest (default: the demo "
                    "corpus), e.g. one built by benchmarks/debian_corpus.py or your own")
    ap.add_argument("--quick", action="store_true", help="fewer runs and seeds, a smaller target")
    ap.add_argument("--toy", action="store_true", help="seconds of training; for the test that keeps this working")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    ap.add_argument("--objective", default=None, help="loss_<domain> to minimise (default: mean over domains)")
    ap.add_argument("--workdir", type=Path, default=None, help="work dir (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here too")
    ap.add_argument("--plot", type=Path, default=None, help="save the plot (PNG) here too (also: --from-json)")
    ap.add_argument("--from-json", type=Path, default=None, help="only redraw --plot from an earlier --out file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rank-mixtures", type=int, default=None, help="also train the target on this many of the "
                    "default search's proxy mixtures and report the proxy → target Spearman ρ (full mode: 0)")
    ap.add_argument("--ladder-candidates", action="store_true", help="also train the target on the default's "
                    "ladder candidates (were the ladder's rejections right at the target?)")
    ap.add_argument("--workers", type=int, default=None, help="parallel target trainings (default: 1 on a GPU, "
                    "else one per CPU core)")
    ap.add_argument("--seeds", type=int, default=None, help="target seeds per mixture (full mode: 3)")
    ap.add_argument("--recipe", type=Path, default=ROOT / "search" / "demo.yaml", help="the search spec whose "
                    "proxy, rung, optimizer, budget and ladder are the 'default' row (default: search/demo.yaml)")
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
    from mixopt.spec import SearchSpec

    demo = SearchSpec.from_yaml(args.recipe)  # the default recipe
    cfg = settings(mode, demo)
    if args.seeds is not None:
        if args.seeds < 2:
            ap.error("--seeds must be at least 2 (the gaps are paired over seeds)")
        cfg["seeds"] = args.seeds
    if args.rank_mixtures is not None:
        cfg["rank_mixtures"] = args.rank_mixtures
    objective = {"metrics": [args.objective]} if args.objective else {"metrics": None}
    from mixopt.spec import ObjectiveSpec

    obj_spec = ObjectiveSpec.model_validate(objective)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mixopt-e2e-"))
    t_start = time.perf_counter()
    from mixopt.data import prepare
    from mixopt.proxies import model_size
    from mixopt.spec import ProxySpec, load_dataset

    dataset = load_dataset(args.dataset)
    data = prepare(dataset, workdir / "data")
    proxy = ProxySpec.model_validate(cfg["proxy"]).for_vocab(data.vocab_size)
    cfg["proxy"] = proxy.model_dump(mode="json")
    if mode != "full":  # the quick and toy proxies are scaled down with their target
        cfg["target"]["tokens"] = max(cfg["target"]["tokens"], 4 * proxy.tokens)
    elif proxy.tokens > cfg["target"]["tokens"]:
        ap.error(f"the demo's proxy trains {proxy.tokens:,} tokens, more than the target's {cfg['target']['tokens']:,}")
    p_size = model_size(proxy, data.vocab_size)
    t_size = model_size(ProxySpec.model_validate(cfg["target"]), data.vocab_size)
    ratio_params, ratio_tokens = t_size.total / p_size.total, cfg["target"]["tokens"] / proxy.tokens
    target_flops = t_size.flops_per_token * cfg["target"]["tokens"]
    proxy_run_flops = p_size.flops_per_token * proxy.tokens
    con.print(f"{dataset.name}, mode {mode}: proxy {p_size.total:,} params × {proxy.tokens:,} tokens; target "
              f"{t_size.total:,} params ({ratio_params:.1f}×) × {cfg['target']['tokens']:,} tokens "
              f"({ratio_tokens:.1f}×); objective {objective['metrics'] or 'mean over domains'}")

    # 1. mixopt's default: regmix as `mixopt submit` runs it (per-domain surrogate, KL-regularised optimum,
    #    verification ladder). 2. At the same total compute (its proxies + ladder): today's regmix (λ = 0, the
    #    aggregate objective, no ladder) and Optuna's TPE, each with as many proxy runs as that compute buys.
    searches: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    opt = {"name": demo.optimizer.name, **demo.optimizer.settings}
    if "n_candidates" in demo.optimizer.settings:
        opt["n_candidates"] = cfg["n_candidates"]
    ladder_on = demo.ladder.enabled is not False
    if mode == "full":
        cfg["ladder"] = {"candidates": demo.ladder.candidates, "seeds": demo.ladder.seeds}
    con.print(f"[bold]search default[/] ({demo.optimizer.name} as {args.recipe.name} sets it, {cfg['runs']} "
              "proxy runs"
              + (" + the ladder)" if ladder_on else "; no ladder)"))
    searches["default"] = run_search("default", opt, cfg, objective, workdir, args.seed, con.print, dataset,
                                     cfg["runs"], ladder=ladder_on)
    equal_runs = max(cfg["runs"], int(round(searches["default"]["proxy_flops"] / proxy_run_flops)))
    today = {"name": "regmix", "n_candidates": cfg["n_candidates"], "kl_lambda": 0.0, "per_domain": "aggregate"}
    plan = [("regmix λ=0, no ladder", today),
            ("tpe", {"name": "tpe"})]
    for name, o in plan:
        con.print(f"[bold]search {name}[/] ({equal_runs} proxy runs: the default's compute)")
        try:
            searches[name] = run_search(name, o, cfg, objective, workdir, args.seed, con.print, dataset,
                                        equal_runs, ladder=False)
        except Exception as e:  # a method that cannot run here is reported, not hidden
            skipped[name] = f"{type(e).__name__}: {e}"
            con.print(f"  [red]skipped {name}: {skipped[name]}")

    tc = data.token_counts
    total = sum(tc.values())
    mixtures = {"default": searches["default"]["weights"]}
    for n in searches:
        if n != "default":
            mixtures[n] = searches[n]["weights"]
    mixtures["uniform"] = {d: 1 / len(tc) for d in tc}
    mixtures["natural"] = {d: v / total for d, v in tc.items()}
    best_seen, best_val = None, math.inf
    for s in searches.values():
        usable, y = s["table"].usable(obj_spec)
        i = int(np.argmin(y))
        if y[i] < best_val:
            best_val, best_seen = float(y[i]), dict(zip(usable.domains, usable.weights[i].tolist(), strict=True))
    mixtures["best proxy run"] = best_seen
    if args.ladder_candidates:  # the ladder's verdict checked where it matters: its candidates at the target
        for r in (searches["default"]["details"].get("ladder") or {}).get("rows", []):
            if r["kind"] == "candidate":
                mixtures[f"ladder: {r['label']}"] = r["weights"]
    # Identical mixtures (the ladder may keep a baseline; TPE recommends its best run) are trained once.
    distinct: dict[str, dict[str, float]] = {}
    alias: dict[str, str] = {}
    for n, w in mixtures.items():
        same = next((m for m, v in distinct.items()
                     if sum(abs(w.get(d, 0) - v.get(d, 0)) for d in tc) < 1e-9), None)
        alias[n] = same or n
        if same is None:
            distinct[n] = w
    seeds = [1000 + i for i in range(cfg["seeds"])]
    jobs = [(distinct, s) for s in seeds]
    picked: dict[str, dict[str, float]] = {}
    if cfg["rank_mixtures"]:
        usable, y = searches["default"]["table"].usable(obj_spec)
        order = np.argsort(y)
        pick = order[np.unique(np.linspace(0, len(order) - 1, cfg["rank_mixtures"]).round().astype(int))]
        picked = {f"run{int(i)}": dict(zip(usable.domains, usable.weights[i].tolist(), strict=True))
                  for i in pick}
        jobs.append((picked, seeds[0]))
    workers = args.workers or (1 if torch_cuda() else os.cpu_count() or 1)
    con.print(f"[bold]target runs[/]: {len(distinct)} distinct mixtures × {len(seeds)} seeds"
              + (f" + {len(picked)} proxy mixtures for the ranking check" if picked else "") + f"; {workers} worker(s)")
    t0 = time.perf_counter()
    trained = train_targets(jobs, cfg, data, objective, con.print, workers)
    target = {n: [trained[i][alias[n]] for i in range(len(seeds))] for n in mixtures}
    target_seconds = time.perf_counter() - t0
    rank = {}
    if picked:
        from scipy.stats import spearmanr

        proxy_y = [float(y[i]) for i in pick]
        target_y = [trained[-1][k] for k in picked]
        rank = {"spearman_rho": float(spearmanr(proxy_y, target_y).statistic), "proxy": proxy_y, "target": target_y}

    better_base = min(("uniform", "natural"), key=lambda n: float(np.mean(target[n])))
    rows = []
    for name, vals in target.items():
        gap, se, sig = paired_gap(vals, target["natural"])
        gu, seu, sigu = paired_gap(vals, target["uniform"])
        src = searches.get(name)
        flops = src["proxy_flops"] if src else 0.0
        rows.append({"mixture": name, "mean": float(np.mean(vals)), "sd": float(np.std(vals, ddof=1))
                     if len(vals) > 1 else float("nan"), "values": vals, "weights": mixtures[name],
                     "same_as": alias[name] if alias[name] != name else None,
                     "gap_to_natural": gap, "gap_natural_se": se, "beyond_noise_vs_natural": sig,
                     "gap_to_uniform": gu, "gap_uniform_se": seu, "beyond_noise_vs_uniform": sigu,
                     "proxy_flops": flops, "compute_vs_target_run": flops / target_flops if flops else None,
                     "proxy_runs": src["runs"] if src else None,
                     "search_seconds": src["seconds"] if src else None})
    t = Table(title=f"{dataset.name}: target {t_size.total / 1e3:.0f}k params × {cfg['target']['tokens']:,} tokens, "
                    f"{len(seeds)} seeds, objective {objective['metrics'] or 'mean val loss'} (lower is better)")
    for c in ("mixture", "target objective", "vs natural", "vs uniform", "proxies + ladder ÷ 1 target run",
              "search wall time"):
        t.add_column(c, justify="left" if c == "mixture" else "right")

    def cell(g: float, se: float, sig: bool) -> str:
        return f"{g:+.4f} ± {se:.4f}" + (" *" if sig else "")

    for r in sorted(rows, key=lambda r: r["mean"]):
        t.add_row(r["mixture"] + (f" (= {r['same_as']})" if r["same_as"] else ""),
                  f"{r['mean']:.4f} ± {r['sd']:.4f}",
                  "—" if r["mixture"] == "natural" else cell(r["gap_to_natural"], r["gap_natural_se"],
                                                             r["beyond_noise_vs_natural"]),
                  "—" if r["mixture"] == "uniform" else cell(r["gap_to_uniform"], r["gap_uniform_se"],
                                                             r["beyond_noise_vs_uniform"]),
                  f"{r['compute_vs_target_run']:.2f}" if r["compute_vs_target_run"] else "—",
                  f"{r['search_seconds']:.0f} s" if r["search_seconds"] else "—")
    con.print(t)
    con.print("gaps are paired over seeds (mean ± standard error); * = beyond 2 standard errors")
    lad = searches["default"]["details"].get("ladder") or {}
    if lad:
        con.print(f"the default's ladder: {lad.get('reason')}")
    if rank:
        con.print(f"proxy → target ranking of {len(rank['proxy'])} proxy mixtures: Spearman ρ = "
                  f"{rank['spearman_rho']:.3f}")
    for n, why in skipped.items():
        con.print(f"skipped {n}: {why}")
    default_row = next(r for r in rows if r["mixture"] == "default")
    gap_b, se_b, sig_b = paired_gap(target["default"], target[better_base])
    result = {"dataset": dataset.name, "mode": mode, "objective": objective["metrics"] or "mean",
              "default": "default", "compute_ratio": default_row["compute_vs_target_run"],
              "proxy_params": p_size.total, "proxy_tokens": proxy.tokens, "target_params": t_size.total,
              "target_tokens": cfg["target"]["tokens"], "params_ratio": ratio_params, "tokens_ratio": ratio_tokens,
              "seeds": seeds, "rows": rows, "ranking": rank, "skipped": skipped,
              "better_baseline": better_base,
              "default_vs_better_baseline": {"gap": gap_b, "se": se_b, "beyond_noise": sig_b},
              "ladder": {k: v for k, v in lad.items() if k != "rows"} | {"rows": [
                  {k: r[k] for k in ("label", "kind", "values", "mean")} for r in lad.get("rows", [])]},
              "default_details": {k: searches["default"]["details"].get(k) for k in
                                  ("per_domain", "modelling", "kl_lambda", "kl_lambda_choice", "distance_to_prior",
                                   "oof_spearman", "verified_by", "optimizer_weights", "elasticity",
                                   "gain_over_uniform", "gain_over_uniform_se", "gain_over_prior",
                                   "gain_over_prior_se")},
              "equal_compute_runs": equal_runs, "target_seconds": target_seconds,
              "wall_seconds": time.perf_counter() - t_start}
    store = searches["default"]["store"]
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
