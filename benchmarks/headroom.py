"""How much better than uniform can any mixture be at the target? The headroom, estimated at the target itself.

    python benchmarks/headroom.py                       # the demo corpus at e2e_demo.py's target (~30 min here)
    python benchmarks/headroom.py --dataset MANIFEST    # any manifest, e.g. the Debian documentation corpus
    python benchmarks/headroom.py --trend               # also the design at nano and micro: can a ladder read
                                                        # the target's gaps off the trend across rungs?
    python benchmarks/headroom.py --json                # also print one JSON object at the end

The proof of value (`benchmarks/e2e_demo.py`) asks mixopt's default to beat uniform beyond seed noise at the
target. Whether any method can depends on how far the target's best mixture is from uniform, which no proxy
shows. So this spends what no user would (target runs only; it is a benchmark, not a method) to measure it:

1. **Design.** uniform, natural, natural reflected through uniform and `--draws` Dirichlet draws around uniform
   are trained at the target with `--design-seeds` seeds, every mixture of a seed with the same initialisation
   and data order (common random numbers).
2. **Fit.** Per domain, its loss against the log of its own weight, with one offset per seed (least squares
   over every design run): L_d ≈ c_d,seed − s_d · log w_d. Under this model the objective (the mean over
   domains) is smallest on the simplex at w_d ∝ s_d — a domain's share is its elasticity's share — and that
   optimum's predicted gain over uniform is mean_d s_d · log(w_d / u_d). The model ignores transfer between
   domains; it is a first-order picture of the target, fitted on the target.
3. **Check.** uniform, that optimum and the point halfway to it are trained with `--eval-seeds` fresh seeds;
   their paired gaps to uniform (mean ± standard error) say whether even a mixture chosen *at the target* beats
   uniform beyond noise there.

If it does not, no proxy-based recommendation can be shown to beat uniform at this target with this many seeds,
and the ladder keeping uniform is the right outcome. The figure to read is `check` against 2 SE.

4. **Trend** (`--trend`). The design mixtures are also trained at the search's proxy (nano) and the ladder's
   (micro) with the design seeds; for each, the straight line in log compute through its nano and micro gaps to
   uniform, extended to the target's compute, is set against the gap measured there. A ladder that read the
   trend across rungs instead of one rung would be exactly as right as these signs.
5. **Fitted at a rung** (`--fit-at nano|micro --from FILE`). The same fit on the design trained at a cheap rung
   (per-domain losses there), its optimum w ∝ s, and that optimum trained at the target with FILE's fresh seeds,
   paired with FILE's uniform runs there: does the optimum a proxy would find hold at the target? Written into
   FILE's result under `fitted_at` (to --out).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import emit, prepared, training_args  # noqa: E402

sys.path.insert(0, str(ROOT))

DEFAULT_DATASET = ROOT / "datasets" / "demo.yaml"


def target_spec(vocab: int, toy: bool) -> dict[str, Any]:
    """e2e_demo.py's full-mode target (2 × 64, 4× nano's tokens), or a seconds-long one for the test."""
    import yaml

    from mixopt.spec import ProxySpec

    if toy:
        return dict(name="headroom-toy", n_layer=1, n_head=2, d_model=16, seq_len=32, batch_size=4,
                    eval_windows=2, tokens=4 * 32 * 8)
    nano = ProxySpec.model_validate(yaml.safe_load((ROOT / "proxies" / "nano.yaml").read_text())).for_vocab(vocab)
    return dict(name="e2e-target", n_layer=2, n_head=4, d_model=64, seq_len=128, batch_size=16, lr=3e-3,
                warmup_frac=0.1, eval_windows=32, tokens=max(748_800 * 4, 4 * nano.tokens))


def rung_specs(vocab: int, toy: bool) -> dict[str, dict[str, Any]]:
    """The demo's two proxy rungs (the search's nano, the ladder's micro), or seconds-long ones for the test."""
    import yaml

    from mixopt.spec import ProxySpec

    if toy:
        small = dict(n_head=2, seq_len=32, batch_size=4, eval_windows=2)
        return {"nano": dict(small, name="toy-nano", n_layer=1, d_model=8, tokens=4 * 32 * 2),
                "micro": dict(small, name="toy-micro", n_layer=1, d_model=12, tokens=4 * 32 * 4)}
    return {n: ProxySpec.model_validate(yaml.safe_load((ROOT / "proxies" / f"{n}.yaml").read_text()))
            .for_vocab(vocab).model_dump(mode="json") for n in ("nano", "micro")}


def trend_rows(values: dict[str, dict[str, list[float]]], flops: dict[str, float]) -> list[dict[str, Any]]:
    """Per mixture: its paired gap to uniform at nano, micro and the target, and the straight line in log
    compute through the nano and micro gaps extended to the target's compute (the trend a ladder could read)."""
    k = (math.log(flops["target"]) - math.log(flops["micro"])) / (math.log(flops["micro"]) - math.log(flops["nano"]))
    rows = []
    for n in values["target"]:
        if n == "uniform":
            continue
        g = {r: _gap(values[r][n], values[r]["uniform"]) for r in ("nano", "micro", "target")}
        line = g["micro"][0] + k * (g["micro"][0] - g["nano"][0])
        rows.append({"mixture": n, **{f"gap_{r}": g[r][0] for r in g}, **{f"se_{r}": g[r][1] for r in g},
                     "extrapolated": line, "sign_right": bool(np.sign(line) == np.sign(g["target"][0]))})
    return rows


def _train(args: tuple[dict, dict[str, float], int, str, float]) -> dict[str, float] | None:
    """One run: a mixture and a seed, one thread; its per-domain validation losses (None if it failed).

    `fraction` < 1 trains on the first that fraction of every domain's training tokens (validation unchanged)."""
    spec_dict, mixture, seed, data_dir, fraction = args
    from mixopt.data import PreparedData
    from mixopt.proxies import train_proxies
    from mixopt.spec import ProxySpec

    data = PreparedData.open(data_dir)
    train = data.load("train", mmap=False)
    if fraction < 1:
        train = {d: a[: max(1, int(len(a) * fraction))] for d, a in train.items()}
    res = train_proxies(ProxySpec.model_validate(spec_dict), [mixture], [seed], train,
                        data.load("val", mmap=False), data.vocab_size, threads=1)[0]
    return dict(res.losses) if res.status == "ok" else None


def fit_elasticities(mixtures: dict[str, dict[str, float]], losses: dict[str, list[dict[str, float] | None]],
                     domains: list[str]) -> dict[str, dict[str, float]]:
    """Per domain: s_d (−∂L_d/∂log w_d) and its standard error, from L_d = c_seed − s_d·log w_d over every run:
    the `elasticity` optimizer's own fit (one offset per seed), on the runs that finished."""
    from mixopt.optimizers.elasticity import fit_slopes

    runs = [(mixtures[n], j, run) for n in mixtures for j, run in enumerate(losses[n]) if run is not None]
    W = np.array([[w[d] for d in domains] for w, _, _ in runs])
    L = np.array([[run[d] for d in domains] for _, _, run in runs])
    s, se = fit_slopes(W, L, list(range(len(domains))), [str(j) for _, j, _ in runs])
    return {d: {"s": float(a), "se": float(b)} for d, a, b in zip(domains, s, se, strict=True)}


def optimum(elasticity: dict[str, dict[str, float]], floor: float) -> dict[str, float]:
    """argmin over the simplex of mean_d −s_d·log w_d: w_d ∝ s_d, each share floored at `floor` before the
    shares are renormalised (a domain whose loss did not fall with its weight still gets some data); uniform
    when no domain's loss fell."""
    s = {d: max(v["s"], 0.0) for d, v in elasticity.items()}
    total = sum(s.values())
    if total <= 0:
        return {d: 1 / len(s) for d in s}
    w = {d: max(v / total, floor) for d, v in s.items()}
    total = sum(w.values())
    return {d: v / total for d, v in w.items()}


def predicted_gain(elasticity: dict[str, dict[str, float]], w: dict[str, float]) -> float:
    """The model's objective at w minus at uniform (negative: better than uniform)."""
    k = len(w)
    return float(-np.mean([v["s"] * math.log(w[d] * k) for d, v in elasticity.items()]))


def _objective(run: dict[str, float] | None) -> float:
    return float(np.mean(list(run.values()))) if run else float("nan")


def _gap(vals: list[float], ref: list[float]) -> tuple[float, float]:
    d = np.asarray(vals) - np.asarray(ref)
    d = d[np.isfinite(d)]
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")


def rung_fit(rung: str, res: dict[str, Any], rung_spec: dict[str, Any], domains: list[str], run_all: Any,
             fraction: float = 1.0) -> dict[str, Any]:
    """The design trained at a cheap rung with FILE's design seeds, its elasticities and optimum w ∝ s, set
    against the target's fit: Spearman of the elasticities, L1 between the optima, and what the target's own law
    predicts for the rung's optimum (its gain over uniform; the target-fitted optimum's is the most there is)."""
    from scipy.stats import spearmanr

    design = {r["mixture"]: r["weights"] for r in res["design"]}
    got = run_all(design, res["design_seeds"], f"design at {rung}", sd=rung_spec, fraction=fraction)
    el = fit_elasticities(design, got, domains)
    w = optimum(el, floor=0.02)
    tgt = res["optimum"]
    s_t = np.array([res["elasticity"][d]["s"] for d in domains])
    s_r = np.array([el[d]["s"] for d in domains])
    return {"rung": rung, "spec": rung_spec, "data_fraction": fraction, "elasticity": el, "optimum": w,
            "l1_to_target_optimum": float(sum(abs(w[d] - tgt[d]) for d in domains)),
            "elasticity_spearman": float(spearmanr(s_t, s_r)[0]),
            "predicted_gain_under_target_law": predicted_gain(res["elasticity"], w),
            "target_law_best": predicted_gain(res["elasticity"], tgt), "design_losses": got}


def _rung_table(con: Any, res: dict[str, Any], fits: list[dict[str, Any]], domains: list[str]) -> None:
    from rich.table import Table

    t = Table(title="Elasticities fitted at each rung and at the target; each rung's optimum w ∝ s, and the gain "
                    "over uniform the target's own law predicts for it")
    for col in ("", *domains, "pred. gain"):
        t.add_column(col[:10], justify="left" if not col else "right")
    t.add_row("s at target", *[f"{res['elasticity'][d]['s']:.3f}" for d in domains], "")
    t.add_row("w target", *[f"{res['optimum'][d]:.3f}" for d in domains],
              f"{predicted_gain(res['elasticity'], res['optimum']):+.4f}")
    for f in fits:
        t.add_row(f"s at {f['rung']}", *[f"{f['elasticity'][d]['s']:.3f}" for d in domains], "")
        t.add_row(f"w {f['rung']}", *[f"{f['optimum'][d]:.3f}" for d in domains],
                  f"{f['predicted_gain_under_target_law']:+.4f}")
    con.print(t)


def fit_at_rung(rung: str, res: dict[str, Any], rung_spec: dict[str, Any], domains: list[str], run_all: Any,
                con: Any, fraction: float = 1.0) -> dict[str, Any]:
    """Step 5: the design at a cheap rung, its elasticities and optimum, that optimum checked at the target."""
    out = rung_fit(rung, res, rung_spec, domains, run_all, fraction)
    w = out["optimum"]
    vals = [_objective(r) for r in run_all({"rung optimum": w}, res["eval_seeds"], "check")["rung optimum"]]
    ref = next(r for r in res["check"] if r["mixture"] == "uniform")["values"]
    g, se = _gap(vals, ref)
    out.update(values=vals, gap_to_uniform=g, gap_se=se, beyond_noise=bool(abs(g) > 2 * se))
    _rung_table(con, res, [out], domains)
    con.print(f"{rung}-fitted optimum at the target ({len(vals)} fresh seeds): gap to uniform {g:+.4f} ± {se:.4f} "
              f"({'beyond' if out['beyond_noise'] else 'within'} 2 SE); L1 to the target-fitted optimum "
              f"{out['l1_to_target_optimum']:.3f}; Spearman of the elasticities {out['elasticity_spearman']:.2f}")
    res.setdefault("fitted_at", {})[rung] = out
    return res


def screen(rungs: dict[str, tuple[dict[str, Any], float]], res: dict[str, Any], domains: list[str], run_all: Any,
           con: Any) -> dict[str, Any]:
    """Step 6 (`--screen PROXY ...`): step 5 without the check, for several proxies: which proxy's elasticities
    look like the target's? Cheap (the design at each proxy only); the check at the target is `--fit-at`."""
    fits = [rung_fit(r, res, spec, domains, run_all, frac) for r, (spec, frac) in rungs.items()]
    _rung_table(con, res, fits, domains)
    for f in fits:
        con.print(f"{f['rung']}: Spearman of the elasticities {f['elasticity_spearman']:.2f}, L1 to the target "
                  f"optimum {f['l1_to_target_optimum']:.3f}, predicted gain {f['predicted_gain_under_target_law']:+.4f}"
                  f" (the target's own optimum: {f['target_law_best']:+.4f})")
    res.setdefault("screen", {}).update({f["rung"]: f for f in fits})
    return res


def load_rung(arg: str, vocab: int, toy: bool) -> tuple[str, dict[str, Any], float]:
    """A zoo proxy by name (nano, micro, …) or a proxy YAML file, optionally `@F`: trained on the first fraction
    F of every domain's training tokens. Its label, spec dict at the dataset's vocabulary, and F."""
    import yaml

    from mixopt.spec import ProxySpec

    name, _, frac = arg.partition("@")
    fraction = float(frac) if frac else 1.0
    label = Path(name).stem + (f"@{frac}" if frac else "")
    if toy:
        return label, dict(rung_specs(vocab, True)["micro"], name=Path(name).stem), fraction
    path = Path(name)
    if not path.suffix:
        path = ROOT / "proxies" / f"{name}.yaml"
    spec = ProxySpec.model_validate(yaml.safe_load(path.read_text())).for_vocab(vocab).model_dump(mode="json")
    return label, spec, fraction


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="dataset manifest (default: the demo)")
    ap.add_argument("--draws", type=int, default=3, help="Dirichlet draws around uniform in the design")
    ap.add_argument("--concentration", type=float, default=3.0, help="Dirichlet α per domain of those draws "
                    "(lower: further from uniform)")
    ap.add_argument("--design-seeds", type=int, default=3, help="seeds of the design runs (≥ 1)")
    ap.add_argument("--eval-seeds", type=int, default=6, help="fresh seeds of the check (≥ 2)")
    ap.add_argument("--trend", action="store_true", help="also train the design at the two proxy rungs (nano, "
                    "micro) and test the straight-line extrapolation of each gap to the target")
    ap.add_argument("--trend-from", type=Path, default=None, help="only add the trend to an earlier --out file "
                    "(its design mixtures and seeds; written back to --out)")
    ap.add_argument("--fit-at", default=None, help="with --from: fit the elasticities on the design trained at "
                    "this proxy (a zoo name such as nano or micro, or a proxy YAML) and check that optimum at the "
                    "target")
    ap.add_argument("--screen", nargs="+", default=None, metavar="PROXY", help="with --from: fit the elasticities "
                    "at each proxy (zoo names or YAMLs) and compare them with the target's, without the check")
    ap.add_argument("--from", dest="from_file", type=Path, default=None, help="an earlier --out file (its design, "
                    "seeds and the check's uniform runs)")
    training_args(ap)
    args = ap.parse_args(argv)
    if ((args.fit_at is None) and (args.screen is None)) != (args.from_file is None):
        ap.error("--fit-at or --screen and --from go together")
    if args.eval_seeds < 2 or args.design_seeds < 1:
        ap.error("--eval-seeds must be at least 2 and --design-seeds at least 1")
    from rich.console import Console
    from rich.table import Table

    from mixopt.proxies import model_size
    from mixopt.spec import ProxySpec

    con = Console(stderr=args.json, width=130)
    t_start = time.perf_counter()
    dataset, data = prepared(args, "mixopt-headroom-")
    domains = list(data.domains)
    k = len(domains)
    spec = ProxySpec.model_validate(target_spec(data.vocab_size, args.toy)).for_vocab(data.vocab_size)
    size = model_size(spec, data.vocab_size)
    counts = np.array([data.token_counts[d] for d in domains], dtype=float)
    uniform = {d: 1 / k for d in domains}
    natural = dict(zip(domains, (counts / counts.sum()).tolist(), strict=True))
    floor = 0.3 / k  # the reflection stops where a domain would fall below 30 % of its uniform share
    step = min([(1 / k - floor) / (natural[d] - 1 / k) for d in domains if natural[d] > 1 / k] + [1.0])
    reflected = {d: 1 / k + step * (1 / k - natural[d]) for d in domains}
    design = {"uniform": uniform, "natural": natural, "natural reflected": reflected}
    rng = np.random.default_rng(0)
    for i in range(args.draws):
        w = rng.dirichlet(np.full(k, args.concentration))
        w = np.maximum(w, 0.01)
        design[f"draw {i}"] = dict(zip(domains, (w / w.sum()).tolist(), strict=True))
    d_seeds = [1000 + j for j in range(args.design_seeds)]
    e_seeds = [2000 + j for j in range(args.eval_seeds)]
    con.print(f"{dataset.name}: target {size.total:,} params × {spec.tokens:,} tokens; design {len(design)} "
              f"mixtures × {len(d_seeds)} seeds, then the check: 3 mixtures × {len(e_seeds)} fresh seeds")
    sd = spec.model_dump(mode="json")

    def run_all(mixes: dict[str, dict[str, float]], seeds: list[int], stage: str, sd: dict = sd,
                fraction: float = 1.0) -> dict[str, list]:
        jobs = [(n, s) for s in seeds for n in mixes]
        t0 = time.perf_counter()
        out: dict[str, list] = {n: [None] * len(seeds) for n in mixes}
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futs = [pool.submit(_train, (sd, mixes[n], s, str(data.path), fraction)) for n, s in jobs]
            for i, ((n, s), f) in enumerate(zip(jobs, futs, strict=True)):
                out[n][seeds.index(s)] = f.result()
                con.print(f"  {stage}: {i + 1}/{len(jobs)} runs ({time.perf_counter() - t0:.0f} s)")
        return out

    rungs = rung_specs(data.vocab_size, args.toy)
    flops = {"target": size.flops_per_token * spec.tokens}
    for r, rs in rungs.items():
        flops[r] = model_size(ProxySpec.model_validate(rs), data.vocab_size).flops_per_token * rs["tokens"]

    def trend(design: dict[str, dict[str, float]], seeds: list[int], target_values: dict[str, list[float]]
              ) -> dict[str, Any]:
        values = {"target": target_values}
        for r, rs in rungs.items():
            got = run_all(design, seeds, r, sd=rs)
            values[r] = {n: [_objective(x) for x in got[n]] for n in design}
        rows = trend_rows(values, flops)
        t = Table(title="The trend across rungs: gap to uniform (paired over the design seeds), and the straight "
                        "line in log compute through nano and micro extended to the target")
        for c in ("mixture", "nano", "micro", "extrapolated", "target (measured)", "sign right"):
            t.add_column(c, justify="left" if c == "mixture" else "right")
        for row in rows:
            t.add_row(row["mixture"], *[f"{row[f'gap_{r}']:+.4f} ± {row[f'se_{r}']:.4f}" for r in ("nano", "micro")],
                      f"{row['extrapolated']:+.4f}", f"{row['gap_target']:+.4f} ± {row['se_target']:.4f}",
                      "yes" if row["sign_right"] else "no")
        con.print(t)
        return {"flops": flops, "values": values, "rows": rows,
                "sign_right": f"{sum(r['sign_right'] for r in rows)} of {len(rows)}"}

    if args.trend_from is not None:
        res = json.loads(args.trend_from.read_text())
        design = {r["mixture"]: r["weights"] for r in res["design"]}
        res["trend"] = trend(design, res["design_seeds"], {r["mixture"]: r["values"] for r in res["design"]})
        return emit(res, args.out, args.json)
    if args.screen is not None:
        specs = {lab: (sp, f) for lab, sp, f in (load_rung(p, data.vocab_size, args.toy) for p in args.screen)}
        return emit(screen(specs, json.loads(args.from_file.read_text()), domains, run_all, con), args.out, args.json)
    if args.fit_at is not None:
        label, rung_spec, frac = load_rung(args.fit_at, data.vocab_size, args.toy)
        rung_spec = rungs.get(args.fit_at, rung_spec)
        return emit(fit_at_rung(label, json.loads(args.from_file.read_text()), rung_spec, domains, run_all, con,
                                frac), args.out, args.json)
    design_losses = run_all(design, d_seeds, "design")
    elast = fit_elasticities(design, design_losses, domains)
    best = optimum(elast, floor=0.02)
    half = {d: (uniform[d] + best[d]) / 2 for d in domains}
    check = {"uniform": uniform, "target-fitted optimum": best, "halfway to it": half}
    check_losses = run_all(check, e_seeds, "check")

    t = Table(title=f"{dataset.name}, design at the target: per-domain loss (mean over {len(d_seeds)} seeds)")
    for c in ("mixture", *domains, "objective"):
        t.add_column(c[:10], justify="left" if c == "mixture" else "right")
    design_rows = []
    for n, w in design.items():
        per = {d: float(np.nanmean([r[d] if r else np.nan for r in design_losses[n]])) for d in domains}
        vals = [_objective(r) for r in design_losses[n]]
        design_rows.append({"mixture": n, "weights": w, "per_domain": per, "values": vals,
                            "mean": float(np.nanmean(vals)), "losses": design_losses[n]})
        t.add_row(n, *[f"{per[d]:.3f}" for d in domains], f"{np.nanmean(vals):.4f}")
    t.add_row("elasticity s", *[f"{elast[d]['s']:.3f}" for d in domains], "")
    t.add_row("  its SE", *[f"{elast[d]['se']:.3f}" for d in domains], "")
    t.add_row("optimum w ∝ s", *[f"{best[d]:.3f}" for d in domains], f"{predicted_gain(elast, best):+.4f}")
    con.print(t)
    ref = [_objective(r) for r in check_losses["uniform"]]
    c = Table(title=f"The check: {len(e_seeds)} fresh seeds at the target, paired gaps to uniform")
    for col in ("mixture", "objective (mean ± sd)", "predicted gap", "measured gap ± SE", "beyond 2 SE"):
        c.add_column(col, justify="left" if col == "mixture" else "right")
    check_rows = []
    for n, w in check.items():
        vals = [_objective(r) for r in check_losses[n]]
        row = {"mixture": n, "weights": w, "values": vals, "mean": float(np.nanmean(vals)),
               "sd": float(np.nanstd(vals, ddof=1)), "predicted_gap": predicted_gain(elast, w)}
        if n != "uniform":
            g, se = _gap(vals, ref)
            row.update(gap_to_uniform=g, gap_se=se, beyond_noise=bool(abs(g) > 2 * se))
        check_rows.append(row)
        c.add_row(n, f"{row['mean']:.4f} ± {row['sd']:.4f}", f"{row['predicted_gap']:+.4f}",
                  "—" if n == "uniform" else f"{row['gap_to_uniform']:+.4f} ± {row['gap_se']:.4f}",
                  "—" if n == "uniform" else ("yes" if row["beyond_noise"] else "no"))
    con.print(c)
    result = {"dataset": dataset.name, "mode": "toy" if args.toy else "full", "target_params": size.total,
              "target_tokens": spec.tokens, "design_seeds": d_seeds, "eval_seeds": e_seeds,
              "design": design_rows, "elasticity": elast, "optimum": best,
              "predicted_gain": predicted_gain(elast, best), "check": check_rows,
              "wall_seconds": time.perf_counter() - t_start}
    if args.trend:
        result["trend"] = trend(design, d_seeds, {r["mixture"]: r["values"] for r in design_rows})
    return emit(result, args.out, args.json)


if __name__ == "__main__":
    main()
