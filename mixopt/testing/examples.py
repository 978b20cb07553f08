"""The histories the contract checks run on: a synthetic loss of the weights, and one small example per built-in.

Each built-in optimizer needs a history it can both propose and recommend from — fidelity columns for mfbo and
the scaling optimizer, continual-pretraining runs for dcpt and cmr, online runs simulated through their own
schedules for aioli and doremi, a run count inside a round for climb. They are built here, seeded and without
Ray, MLflow or proxy training; `mixopt.testing.contract` runs the checks on them.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mixopt.optimizers import optimizer_class
from mixopt.optimizers.base import OptimizerBase, Proposal
from mixopt.runs import RunTable
from mixopt.schedules import Feedback, make_schedule
from mixopt.spec import ObjectiveSpec, TargetSpec

DOMAINS = ["a", "b", "c"]
COUNTS = {"a": 2e8, "b": 3e8, "c": 5e8}  # tokens per domain: the token prior is (0.2, 0.3, 0.5)


@dataclass(frozen=True)
class ContractExample:
    """What the checks run an optimizer on: a history it can propose from and recommend from, and how to call it.

    `settings` and `objective` are passed to the optimizer's constructor (keep settings small: the checks call
    propose and recommend about a dozen times); `target` is passed to `recommend` (None when the optimizer
    needs none); `n` is the number of proposals asked for, one the optimizer can honour on this history.
    """

    history: RunTable
    settings: dict[str, Any] = field(default_factory=dict)
    target: TargetSpec | None = None
    objective: ObjectiveSpec | str | None = None
    n: int = 3
    seed: int = 0

    def fresh(self) -> ContractExample:
        """A copy whose history shares nothing with this one, so a check that catches a write cannot leak it."""
        return dataclasses.replace(self, history=clone_history(self.history),
                                   settings=copy.deepcopy(self.settings))


# ------------------------------------------------------------------------------------------ synthetic losses


def synthetic_losses(domains: Sequence[str], W: np.ndarray, params: np.ndarray | None = None,
                     tokens: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Validation loss per domain of mixtures W (rows) at model size `params` and tokens `tokens`, noise-free.

    loss_i = E_i + A_i·(N/N0)^−0.34 + B_i·(D/D0)^−0.28 + k_i·(N·D/(N0·D0))^−γ_i·exp(Σ_j t_ij·w_j): each loss falls
    with its own domain's share (t_ii < 0 < t_ij), with scale as Chinchilla, and the mixture term fades or grows
    with compute (γ_i of both signs), so the optimum moves with scale. It is the form the data mixing law and
    the scale-aware laws fit, so every law-based optimizer can fit it.
    """
    W = np.atleast_2d(np.asarray(W, dtype=float))
    k = len(domains)
    n0, d0 = 1e6, 2e7
    N = np.full(len(W), n0) if params is None else np.asarray(params, dtype=float)
    D = np.full(len(W), d0) if tokens is None else np.asarray(tokens, dtype=float)
    idx = np.arange(k)
    t = np.full((k, k), 1.0)
    t[idx, idx] = -2.0 - 0.5 * (idx % 3)
    e, a, b = 2.0 + 0.2 * (idx % 3), 1.0 + 0.1 * (idx % 2), 0.5 + 0.05 * (idx % 3)
    amp, gamma = 0.3 + 0.1 * (idx % 3), np.array([0.35, -0.1, 0.0])[idx % 3]
    compute = (N * D / (n0 * d0))[:, None]
    L = (e + a * (N[:, None] / n0) ** -0.34 + b * (D[:, None] / d0) ** -0.28
         + amp * compute ** -gamma * np.exp(W @ t.T))
    return {d: L[:, j] for j, d in enumerate(domains)}


def runs_frame(domains: Sequence[str], W: np.ndarray, fidelities: Sequence[dict[str, float] | None] | None = None,
               seed: int = 0, noise: float = 0.002, prefix: str = "r") -> pd.DataFrame:
    """Rows of successful static runs of mixtures W: weights, `fid_<key>` columns, losses with seeded noise."""
    W = np.atleast_2d(np.asarray(W, dtype=float))
    fids = list(fidelities) if fidelities is not None else [None] * len(W)
    params = np.array([(f or {}).get("params", 1e6) for f in fids], dtype=float)
    tokens = np.array([(f or {}).get("tokens", 2e7) for f in fids], dtype=float)
    losses = synthetic_losses(domains, W, params, tokens)
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(W, columns=[f"w_{d}" for d in domains])
    for key in sorted({k for f in fids if f for k in f}):
        df[f"fid_{key}"] = [float((f or {})[key]) if f and key in f else np.nan for f in fids]
    for d in domains:
        df[f"loss_{d}"] = losses[d] + rng.normal(0.0, noise, len(W))
    df["run_id"] = [f"{prefix}{i}" for i in range(len(W))]
    df["status"] = "ok"
    return df


def static_history(n: int = 12, domains: Sequence[str] = DOMAINS, counts: dict[str, float] | None = None,
                   seed: int = 0, unfinished: bool = True) -> RunTable:
    """n successful static runs on Dirichlet(1) mixtures with known token counts: the generic contract history.

    With `unfinished`, a failed run and a pending one (no losses) follow, as in the table of a live search:
    an optimizer must leave them out of its fits without tripping over their missing losses.
    """
    W = np.random.default_rng(seed).dirichlet(np.ones(len(domains)), n + (2 if unfinished else 0))
    df = runs_frame(domains, W, seed=seed)
    if unfinished:
        df.loc[n:, [f"loss_{d}" for d in domains]] = np.nan
        df.loc[n:, "status"] = ["failed", "pending"]
    return RunTable(df, token_counts=dict(counts or COUNTS), source="contract history")


def history_from_proposals(opt: OptimizerBase, n_runs: int, chunk: int, domains: Sequence[str] = DOMAINS,
                           counts: dict[str, float] | None = None) -> RunTable:
    """The search's loop without proxies: propose `chunk` at a time, score with `synthetic_losses`, append.

    For optimizers whose later proposals depend on earlier results (CLIMB's rounds), so the history is one
    the optimizer itself would have produced.
    """
    table = RunTable.empty(list(domains), token_counts=dict(counts or COUNTS))
    while len(table) < n_runs:
        props = opt.propose(table, min(chunk, n_runs - len(table)))
        if not props:
            raise AssertionError(f"{opt.name}: propose returned nothing after {len(table)} runs")
        W = np.array([[p.weights[d] for d in domains] for p in props])
        new = runs_frame(domains, W, [p.fidelity for p in props], seed=len(table), prefix=f"r{len(table)}-")
        table = RunTable(pd.concat([table.df, new], ignore_index=True), token_counts=table.token_counts,
                         source="contract history")
    return table


def simulate_online(proposals: Sequence[Proposal], domains: Sequence[str], steps: int, seed: int = 0,
                    prefix: str = "o") -> pd.DataFrame:
    """Rows of online runs: each proposal's schedule driven by a linear dynamic loss law instead of a proxy.

    The loop mirrors the proxy trainer's (mixopt/proxies/train.py): the schedule starts, is updated every
    `schedule.every` steps with the training losses and a validation evaluation, and each change of mixture
    is recorded in the trajectory. The loss of domain i falls by Σ_j A_ij·q_j per step (q the mixture in
    force), so a schedule reacting to it has something to learn.
    """
    k = len(domains)
    A = 0.01 * (np.eye(k) * 2.0 + 0.5)
    rng = np.random.default_rng(seed)
    rows = []
    for i, p in enumerate(proposals):
        sched = make_schedule(p.schedule, p.weights)
        weights = dict(sched.start(list(domains), steps))
        trajectory = [{"step": 0, "weights": dict(weights)}]
        L = 5.0 + 0.1 * np.arange(k)
        for step in range(1, steps + 1):
            q = np.array([weights.get(d, 0.0) for d in domains])
            L = L - A @ (q / q.sum()) + rng.normal(0.0, 1e-4, k)
            if step % sched.every == 0 and step < steps:
                now = {d: float(x) for d, x in zip(domains, L, strict=True)}
                fb = Feedback(step=step, total_steps=steps, weights=dict(weights),
                              train_losses={d: now[d] for d in weights}, evaluate=lambda now=now: dict(now))
                new = sched.update(fb)
                if new is not None and new != weights:
                    total = sum(new.values())
                    weights = {d: float(v) / total for d, v in new.items()}
                    trajectory.append({"step": step, "weights": dict(weights)})
        rows.append({**{f"w_{d}": float(p.weights.get(d, 0.0)) for d in domains},
                     **{f"loss_{d}": float(x) for d, x in zip(domains, L, strict=True)},
                     "run_id": f"{prefix}{i}", "seed": 100 + i, "status": "ok", "steps": steps,
                     "schedule": copy.deepcopy(p.schedule), "trajectory": trajectory,
                     "mean_weights": _time_average(trajectory, steps)})
    return pd.DataFrame(rows)


def _time_average(trajectory: list[dict[str, Any]], steps: int) -> dict[str, float]:
    acc: dict[str, float] = {}
    for i, point in enumerate(trajectory):
        end = trajectory[i + 1]["step"] if i + 1 < len(trajectory) else steps
        for d, v in point["weights"].items():
            acc[d] = acc.get(d, 0.0) + v * max(0, end - point["step"])
    total = sum(acc.values())
    return {d: v / total for d, v in acc.items()}


# ------------------------------------------------------------------------------------------ built-in examples
# One small history per built-in optimizer, each the kind of table a search with that optimizer produces.


def _uses_static(n: int = 12) -> Callable[[], ContractExample]:
    return lambda: ContractExample(static_history(n))


def _regmix() -> ContractExample:
    # The linear predictor keeps it fast (the default LightGBM + GP ensemble, refitted per fold of every
    # modelling mode, takes minutes on a busy CPU); the per-domain mode and kl_lambda are still chosen out of
    # fold (`auto`), and the uncertainty comes from bootstrap refits.
    return ContractExample(static_history(16), settings={"predictor": "linear", "n_candidates": 2000,
                                                          "chunk_size": 1000, "top_k": 16, "n_bootstrap": 2})


def _climb() -> ContractExample:
    # 10 runs of rounds [8, 4]: the history stands two runs into round 2, whose mixtures come from the predictor
    # fitted on round 1; n = 2 is what is left of that round (CLIMB never proposes across a round boundary).
    settings: dict[str, Any] = {"rounds": [8, 4], "n_candidates": 2000, "predictor": "linear", "keep": 16,
                                "n_bootstrap": 2}
    opt = optimizer_class("climb")(seed=0, **settings)
    return ContractExample(history_from_proposals(opt, 10, chunk=4), settings=settings, n=2)


def _mixing_law() -> ContractExample:
    return ContractExample(static_history(12), settings={"bootstrap": 2, "kl_grid": [0.0, 0.05]})


def _elasticity() -> ContractExample:
    # A dozen static runs: four per fitted slope and more; few bootstrap refits keep the check fast.
    return ContractExample(static_history(12), settings={"n_bootstrap": 8})


SCALES = [{"params": 1e6, "tokens": 2e7}, {"params": 4e6, "tokens": 8e7}, {"params": 1.6e7, "tokens": 3.2e8}]


def _scaling() -> ContractExample:
    # The same 6 mixtures at 3 scales (N, D): what the scale-aware law needs; the target is beyond the proxies.
    W = np.random.default_rng(0).dirichlet(np.ones(3), 6)
    W3 = np.vstack([W] * len(SCALES))
    fids = [dict(s) for s in SCALES for _ in range(len(W))]
    table = RunTable(runs_frame(DOMAINS, W3, fids), token_counts=dict(COUNTS), source="contract history")
    return ContractExample(table, settings={"fidelities": [dict(s) for s in SCALES]},
                           target=TargetSpec(params=1e8, tokens=2e9))


def _mfbo() -> ContractExample:
    # 10 runs at the cheap level, 3 at the target level, small GP budgets.
    W = np.random.default_rng(0).dirichlet(np.ones(3), 13)
    fids = [{"params": 1e6}] * 10 + [{"params": 1e7}] * 3
    table = RunTable(runs_frame(DOMAINS, W, fids), token_counts=dict(COUNTS), source="contract history")
    return ContractExample(table, settings={"fidelities": [{"params": 1e6}, {"params": 1e7}], "n_candidates": 128,
                                            "n_local": 32, "max_fit": 16, "max_train": 32, "fit_maxiter": 25,
                                            "num_mv_samples": 4}, n=2)


# Continual pretraining on a general/domain pair (dcpt, cmr): the paper's laws planted, a design grid as runs.
_DCPT_TRUE = {"general": {"E": 1.9, "A": 0.45, "B": 0.35, "C": 0.20, "alpha": 0.34, "beta": 0.28, "gamma": 0.40,
                          "eta": 0.6, "eps": 0.05},
              "domain": {"E": 1.2, "A": 0.55, "B": 0.25, "C": 0.30, "alpha": 0.30, "beta": 0.32, "gamma": 0.45,
                         "eta": 0.4, "eps": 0.02}}
PAIR = {"general": 6e9, "domain": 2e9}  # tokens of the general corpus and of the domain corpus


def _dcpt() -> ContractExample:
    from mixopt.laws.dcpt import dcpt_form

    form = dcpt_form(1.4e8, 2.8e9)
    ratios = [0.1, 1 / 3, 0.5, 0.8]
    N, D, r = (x.ravel() for x in np.meshgrid([5e7, 1e8, 2e8], [1e9, 2e9, 4e9], ratios, indexing="ij"))
    # Noise-free: the fit (1600 starts, L-BFGS polish, refits) converges in a third of the time it takes on noisy
    # losses, and the contract checks behaviour, not the fit's accuracy.
    g = form.predict(_DCPT_TRUE["general"], np.column_stack([N, D, 1 - r]))
    d = form.predict(_DCPT_TRUE["domain"], np.column_stack([N, D, r]))
    df = pd.DataFrame({"w_general": 1 - r, "w_domain": r, "fid_params": N, "fid_tokens": D, "loss_general": g,
                       "loss_domain": d, "run_id": [f"r{i}" for i in range(len(r))]})
    # The design holds one more share than the runs, so propose continues the design rather than replicating.
    settings = {"ratios": [*ratios, 0.9], "params_levels": [5e7, 1e8, 2e8], "tokens_levels": [1e9, 2e9, 4e9],
                "bootstrap": 2}
    return ContractExample(RunTable(df, token_counts=dict(PAIR), source="contract history"), settings=settings,
                           target=TargetSpec(params=1e9, tokens=1.6e10))


def _cmr() -> ContractExample:
    # ΔL_gen = (0.4R − 0.1)·(T/2e8)^0.3: the general loss rises with the domain share R, so a critical share exists.
    ratios, budgets = [0.1, 0.3, 0.5], [1e9, 2e9, 3e9, 4e9, 5e9, 6e9]
    R, T = (x.ravel() for x in np.meshgrid(ratios, budgets, indexing="ij"))
    rng = np.random.default_rng(0)
    t = T / 2e8
    g = 2.5 + (0.4 * R - 0.1) * t ** 0.3 + rng.normal(0, 0.002, len(R))
    d = 3.0 - 0.5 * np.sqrt(R) * t ** 0.25 + 0.05 + rng.normal(0, 0.002, len(R))
    df = pd.DataFrame({"w_general": 1 - R, "w_domain": R, "fid_tokens": T, "loss_general": g, "loss_domain": d,
                       "run_id": [f"r{i}" for i in range(len(R))]})
    settings = {"ratios": [*ratios, 0.7], "tokens_levels": budgets, "bootstrap": 2,
                "base_losses": {"general": 2.5, "domain": 3.0}}
    return ContractExample(RunTable(df, token_counts=dict(PAIR), source="contract history"), settings=settings,
                           target=TargetSpec(tokens=1e10))


def _aioli() -> ContractExample:
    # Two online runs of Aioli's own proposals (40 steps: LearnParams then mixing, three rounds).
    settings = {"lp_rounds": 1, "lp_steps": 2, "update_steps": 12}
    opt = optimizer_class("aioli")(seed=0, **settings)
    empty = RunTable.empty(DOMAINS, token_counts=dict(COUNTS))
    df = simulate_online(opt.propose(empty, 2), DOMAINS, steps=40)
    return ContractExample(RunTable(df, token_counts=dict(COUNTS), source="contract history"), settings=settings,
                           n=2)


def _doremi() -> ContractExample:
    # DoReMi's two phases: one static reference run on the token shares, then two DRO runs against its losses.
    # n = 2 asks for DRO runs; in the reference phase DoReMi proposes only the reference runs still missing.
    opt = optimizer_class("doremi")(seed=0)
    table = RunTable.empty(DOMAINS, token_counts=dict(COUNTS))
    ref = simulate_online(opt.propose(table, 1), DOMAINS, steps=30, prefix="ref")
    table = RunTable(ref, token_counts=dict(COUNTS))
    dro = simulate_online(opt.propose(table, 2), DOMAINS, steps=30, seed=1)
    full = pd.concat([ref, dro], ignore_index=True)
    return ContractExample(RunTable(full, token_counts=dict(COUNTS), source="contract history"), n=2)


#: Examples of the built-in optimizers, by the class's import path (an entry point may reuse a built-in's name
#: for another class; that class then gets its own example or the generic one).
BUILTIN_EXAMPLES: dict[str, Callable[[], ContractExample]] = {
    "mixopt.optimizers.random_search:RandomSearch": _uses_static(),
    "mixopt.optimizers.uniform:Uniform": _uses_static(),
    "mixopt.optimizers.natural:Natural": _uses_static(),
    "mixopt.optimizers.regmix:RegMix": _regmix,
    "mixopt.optimizers.climb:Climb": _climb,
    "mixopt.optimizers.mixing_law:MixingLawOptimizer": _mixing_law,
    "mixopt.optimizers.dcpt:DCPT": _dcpt,
    "mixopt.optimizers.cmr:CMR": _cmr,
    "mixopt.optimizers.mfbo:MFBO": _mfbo,
    "mixopt.optimizers.aioli:Aioli": _aioli,
    "mixopt.optimizers.doremi:DoReMi": _doremi,
    "mixopt.optimizers.scaling:Scaling": _scaling,
    "mixopt.optimizers.elasticity:Elasticity": _elasticity,
}


def clone_history(history: RunTable) -> RunTable:
    """A copy of a run table that shares no object with it (pandas' deep copy keeps dicts and lists shared)."""
    out = copy.copy(history)
    out.df = _deep_frame(history.df)
    out.domains = list(history.domains)
    out.notes = list(history.notes)
    out.token_counts = dict(history.token_counts) if history.token_counts is not None else None
    return out


def _deep_frame(df: pd.DataFrame) -> pd.DataFrame:
    snap = df.copy(deep=True)
    for c in snap.columns:
        if snap[c].dtype == object:
            snap[c] = pd.Series([copy.deepcopy(v) for v in df[c]], index=df.index, dtype=object)
    return snap
