"""The verification ladder: a recommendation is checked at a larger fidelity, against the baselines, before it ships.

Proxies rank mixtures imperfectly at the top (the part a recommendation uses), and a surrogate's optimum is
where it extrapolates most. So when the search's runs are spent, the optimizer's top candidates (kept apart
from each other), the natural and uniform mixtures and the user's `include_mixtures` are trained at the next
fidelity up with several seeds, each seed shared by every mixture (common random numbers: the paired
differences then carry no initialisation or data-order noise). The best candidate is recommended only when it
beats the better baseline by more than chance allows — a one-sided Student t test on the paired difference, its
noise pooled over every mixture on the ladder, its level split over the candidates (picking the best of m and
then testing it at the level meant for one accepts a no-better candidate m times as often); otherwise the better
baseline is recommended, with the numbers that say why.

The ladder's runs are ordinary rows of the run table whose `source` starts with `ladder:` (stage "ladder"),
so the store's write-ahead log, resume, fault handling and the MLflow mirror cover them unchanged; the
optimizers never see them as search evidence. Everything here is a pure function of the spec, the
recommendation and the run table.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import t as student_t

from mixopt.runs import RunTable
from mixopt.search.store import LADDER
from mixopt.spec import SearchSpec

__all__ = ["LADDER", "Rung", "decide", "ladder_fidelity", "ladder_seeds", "plan", "pooled_paired_se"]


@dataclass(frozen=True)
class Rung:
    """One mixture on the ladder: a candidate of the optimizer or a baseline."""

    label: str
    kind: str  # "candidate" or "baseline"
    weights: dict[str, float]


def ladder_fidelity(spec: SearchSpec) -> dict[str, float]:
    """The fidelity the ladder trains at, as a proposal's fidelity: the next level up when the search lists
    `fidelities`, else the proxy itself for `tokens_scale` (4) times its tokens: about 4–10× a proxy's compute."""
    lad = spec.ladder
    level = lad.level if lad.level is not None else (1 if spec.fidelities else 0)
    scale = lad.tokens_scale if lad.tokens_scale is not None else (4.0 if level == 0 else 1.0)
    fid: dict[str, float] = {"level": level}
    if scale != 1.0:
        fid["tokens"] = int(round(spec.proxies[level].tokens * scale))
    return fid


def ladder_seeds(spec: SearchSpec) -> list[int]:
    """Seeds of the ladder, shared by every mixture (common random numbers)."""
    return [int.from_bytes(hashlib.sha256(f"ladder|{spec.seed}|{j}".encode()).digest()[:4], "little")
            for j in range(spec.ladder.seeds)]


def _l1(a: dict[str, float], b: dict[str, float], domains: list[str]) -> float:
    return float(sum(abs(a.get(d, 0.0) - b.get(d, 0.0)) for d in domains))


def plan(spec: SearchSpec, rec_weights: dict[str, float], rec_method: str, details: dict[str, Any],
         table: RunTable) -> list[Rung]:
    """The ladder's mixtures: baselines first, then up to `candidates` of the optimizer's, kept apart.

    Candidates come from the recommendation itself, then the alternatives it lists in `details["candidates"]`
    (e.g. the optimum at other regularisation strengths), then the best measured runs, skipping any within
    `min_distance` (L1) of a mixture already on the ladder.
    """
    lad, domains = spec.ladder, table.domains
    rungs: list[Rung] = []
    prior = table.prior
    for name in lad.baselines:
        if name == "uniform":
            w = {d: 1 / len(domains) for d in domains}
        else:
            if prior is None:
                continue
            w = dict(zip(domains, prior.tolist(), strict=True))
        rungs.append(Rung(name, "baseline", w))
    for i, mix in enumerate(spec.include_mixtures):
        total = sum(mix.values())
        w = {d: float(mix.get(d, 0.0)) / total for d in domains}
        if all(_l1(w, r.weights, domains) > 1e-6 for r in rungs):  # e.g. uniform listed again: trained once
            rungs.append(Rung(f"include_mixtures[{i}]", "baseline", w))
    lam = details.get("kl_lambda")
    first = f"{rec_method} (recommended" + (f", kl_lambda {lam:g})" if isinstance(lam, int | float) else ")")
    pool: list[tuple[str, dict[str, float]]] = [(first, rec_weights)]
    for c in details.get("candidates") or []:
        pool.append((str(c.get("label", rec_method)), {d: float(v) for d, v in c["weights"].items()}))
    ok, y = table.usable(spec.objective)
    for i in np.argsort(y, kind="stable")[:3 * lad.candidates]:
        pool.append((f"best run {ok.run_ids()[int(i)]}", dict(zip(domains, ok.weights[int(i)].tolist(),
                                                                   strict=True))))
    n = 0
    for label, w in pool:
        if n >= lad.candidates:
            break
        if any(_l1(w, r.weights, domains) < max(lad.min_distance, 1e-6) for r in rungs):
            continue
        rungs.append(Rung(label, "candidate", w))
        n += 1
    return rungs


def _measured(table: RunTable | None, w: dict[str, float], spec: SearchSpec) -> float | None:
    """Mean objective of the search runs that trained exactly this mixture (e.g. an `include_mixtures` entry)."""
    if table is None or not len(table):
        return None
    ok, y = table.usable(spec.objective)
    if not len(ok):
        return None
    target = np.array([w.get(d, 0.0) for d in ok.domains])
    same = np.abs(ok.weights - target[None, :]).sum(axis=1) < 1e-6
    return float(y[same].mean()) if same.any() else None


def decide(rungs: list[Rung], ladder_table: RunTable, spec: SearchSpec, search: RunTable | None = None
           ) -> dict[str, Any]:
    """The ladder's verdict from its runs: per mixture the objective per seed, the best candidate, the better
    baseline, their paired gap and its standard error, and which of the two is recommended and why.

    The better baseline is the one with the lower mean on the ladder when the ladder tells them apart (the same
    test as the candidates'); when it cannot, it is the baseline nearest the objective's own weights on the
    domains (uniform for the mean over domains), `baseline_tie: ladder-mean` keeping the lower mean instead.
    Measured at the target, uniform beat natural on every corpus and seed set here, while the ladder's means of
    the two flipped with the seeds; the search's one-seed proxy runs flipped too and are only reported
    (docs/DECISIONS.md)."""
    df = ladder_table.df
    seeds = ladder_seeds(spec)
    obj = ladder_table.objective(spec.objective) if len(df) and ladder_table.loss_columns else np.full(len(df), np.nan)
    rows = []
    for r in rungs:
        vals = []
        for s in seeds:
            m = ((df["source"] == LADDER + r.label) & (df["seed"] == s) & (df["status"] == "ok")).to_numpy()
            vals.append(float(obj[m][0]) if m.any() and math.isfinite(obj[m][0]) else float("nan"))
        v = np.array(vals)
        rows.append({"label": r.label, "kind": r.kind, "weights": r.weights, "values": vals,
                     "mean": float(np.nanmean(v)) if np.isfinite(v).any() else float("nan"),
                     "complete": bool(np.isfinite(v).all())})
    by_rung = {r.label: r for r in rungs}
    cands = [r for r in rows if r["kind"] == "candidate" and r["complete"]]
    bases = [r for r in rows if r["kind"] == "baseline" and r["complete"]]
    out: dict[str, Any] = {"seeds": seeds, "rows": rows}
    if not bases:
        out.update(winner=None, reason="no baseline finished on every ladder seed: the ladder cannot judge; the "
                   "optimizer's recommendation stands unverified")
        return out
    lad = spec.ladder
    pooled_se, df = pooled_paired_se([r["values"] for r in cands + bases])
    base = min(bases, key=lambda r: r["mean"])
    out["baseline_choice"] = "ladder"
    if len(bases) > 1:  # could the ladder tell the baselines apart at all?
        other = min((b for b in bases if b is not base), key=lambda r: r["mean"])
        d = np.asarray(other["values"]) - np.asarray(base["values"])
        se = float(d.std(ddof=1) / math.sqrt(len(d)))
        if lad.test == "pooled-t":
            apart = abs(d.mean()) > float(student_t.ppf(1 - lad.alpha, df)) * max(se, pooled_se)
        else:
            apart = abs(d.mean()) > 2 * se
        out["baselines_apart"] = bool(apart)
        m_base, m_other = (_measured(search, by_rung[b["label"]].weights, spec) for b in (base, other))
        if m_base is not None and m_other is not None:
            out["baselines_in_search"] = {base["label"]: m_base, other["label"]: m_other}
        goal = objective_weights(spec, ladder_table)
        if not apart and lad.baseline_tie == "objective" and goal is not None:
            base = min(bases, key=lambda r: _l1(by_rung[r["label"]].weights, goal, list(goal)))
            out["baseline_choice"] = "objective"
    out["baseline"] = base["label"]
    if not cands:
        out.update(winner=base["label"], reason=f"no candidate finished on every ladder seed; recommending the "
                   f"better baseline, {base['label']}")
        return out
    cand = min(cands, key=lambda r: r["mean"])
    d = np.asarray(cand["values"]) - np.asarray(base["values"])
    gap = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(len(d)))
    if lad.test == "pooled-t":
        se_used = max(se, pooled_se)  # a candidate noisier than the rest is judged by its own spread
        critical = float(student_t.ppf(1 - lad.alpha / len(cands), df))
        test = (f"one-sided Student t over {len(cands)} candidate(s), alpha {lad.alpha:g}, noise pooled over "
                f"{len(cands) + len(bases)} mixtures × {len(d)} seeds ({df} df)")
        out.update(pooled_se=pooled_se, df=df)
    else:
        se_used, critical, test = se, 2.0, "2 of the candidate's own standard errors"
    margin = critical * se_used
    beats = gap < -margin if margin > 0 else gap < 0
    out.update(candidate=cand["label"], gap=gap, se=se, test=lad.test, critical=critical, margin=margin,
               beats=bool(beats))
    tie = (f"{' and '.join(b['label'] for b in bases)} were within noise of each other on the ladder, so the "
           f"baseline is {base['label']}, the one nearest the objective's own weights on the domains; "
           if out["baseline_choice"] == "objective" else "")
    if beats:
        out.update(winner=cand["label"], reason=tie + f"{cand['label']} beat {base['label']} at the ladder's fidelity "
                   f"by {-gap:.4f}, more than the {margin:.4f} chance allows ({critical:.2f} × SE {se_used:.4f}; "
                   f"{test})")
    else:
        out.update(winner=base["label"], reason=tie + f"no candidate beat {base['label']} by more than chance "
                   f"allows at the ladder's fidelity (best candidate {cand['label']}: gap {gap:+.4f}, needed < "
                   f"{-margin:.4f} = {critical:.2f} × SE {se_used:.4f}; {test}); recommending {base['label']}")
    return out


def objective_weights(spec: SearchSpec, table: RunTable) -> dict[str, float] | None:
    """How much the objective weighs each training domain (the mean over domains: equally); None when it
    weighs none of them (its metrics name other validation sets)."""
    cols, a = table.objective_columns(spec.objective)
    w = {d: 0.0 for d in table.domains}
    for c, x in zip(cols, a, strict=True):
        if c.removeprefix("loss_") in w:
            w[c.removeprefix("loss_")] += float(x)
    total = sum(w.values())
    return {d: v / total for d, v in w.items()} if total > 0 else None


def pooled_paired_se(values: list[list[float]]) -> tuple[float, int]:
    """Standard error of one paired difference (two mixtures over the same seeds), from every mixture's runs.

    With common random numbers the ladder is a mixtures × seeds table; what is left after the mixture and seed
    effects (the two-way residual) is the noise a paired difference carries, estimated from (M−1)(n−1) degrees
    of freedom instead of the n−1 of one difference: with 3 seeds that is 8 df for 5 mixtures, not 2, which is
    what makes a t test at a small false-acceptance rate usable at all. numpy: a two-way table needs no
    library."""
    y = np.asarray(values, dtype=float)
    m, n = y.shape
    resid = y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + y.mean()
    df = (m - 1) * (n - 1)
    var = float((resid ** 2).sum() / df) if df > 0 else float("nan")
    return math.sqrt(2 * var / n), df
