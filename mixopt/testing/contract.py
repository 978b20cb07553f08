"""The optimizer contract as executable checks, for mixopt's own optimizers and for third-party ones.

Every optimizer promises the same things (mixopt/optimizers/base.py): it is a pure function of the run table
and its seed, it never writes to the table it reads, its mixtures lie on the simplex over the table's domains,
and `propose(history, n)` returns the n runs that were asked for. The search relies on each of these: a killed
search resumes from its run table alone only if the same table gives the same proposals; the job store's table
is shared between the driver and the optimizer, so a write to it corrupts the record of the search; and the
target step (`mixopt.target.apply_target`) must be able to bring any recommendation within the repetition
caps of the target run.

Each `check_*` function raises AssertionError with a message naming the optimizer, the check and what differed.
`check_optimizer` runs them all. A third party calls it from its own tests::

    from mixopt.testing import check_optimizer

    def test_my_optimizer_honours_the_contract():
        check_optimizer("my_optimizer")          # the name it is registered under (entry point)

The history the checks run on comes from, in this order: the optimizer class's `contract_example()` (see
`OptimizerBase.contract_example`), the examples below for mixopt's own optimizers, or a generic table of
static three-domain runs, which suits any optimizer that reads weights and `loss_<domain>` columns only.
Histories are synthetic (a known loss function of the weights, seeded numpy), small, and built without Ray,
MLflow or proxy training, so the whole contract runs in seconds per optimizer.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mixopt.optimizers import optimizer_class
from mixopt.optimizers.base import OptimizerBase, Proposal, Recommendation
from mixopt.proxies.schedules import Feedback, make_schedule
from mixopt.runs import RunTable
from mixopt.spec import ObjectiveSpec, TargetSpec
from mixopt.target import apply_target, domain_caps

#: Slack of the simplex check: mixtures must be non-negative and sum to 1 within this.
SIMPLEX_TOL = 1e-6
#: Slack of the caps check, on a weight (apply_target's own slack is 1e-9).
CAP_TOL = 1e-9

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
}


OptimizerRef = str | type[OptimizerBase]


def _class(optimizer: OptimizerRef) -> type[OptimizerBase]:
    return optimizer_class(optimizer) if isinstance(optimizer, str) else optimizer


def contract_example(optimizer: OptimizerRef) -> ContractExample:
    """The history and settings the checks run `optimizer` (a registered name or a class) on."""
    cls = _class(optimizer)
    own = cls.contract_example() if hasattr(cls, "contract_example") else None
    if own is not None:
        if isinstance(own, ContractExample):
            return own
        if isinstance(own, tuple) and len(own) == 2 and isinstance(own[0], RunTable):
            return ContractExample(own[0], settings=dict(own[1] or {}))
        raise AssertionError(f"{cls.__name__}.contract_example() must return a ContractExample or "
                             f"(RunTable, settings), not {type(own).__name__}")
    builder = BUILTIN_EXAMPLES.get(f"{cls.__module__}:{cls.__qualname__}")
    return builder() if builder is not None else ContractExample(static_history())


# ------------------------------------------------------------------------------------------ helpers


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


def _difference(a: Any, b: Any, path: str = "") -> str | None:
    """Where two nested results differ (None: equal); arrays compared exactly, NaN equal to NaN."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        a = dataclasses.asdict(a)
    if dataclasses.is_dataclass(b) and not isinstance(b, type):
        b = dataclasses.asdict(b)
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return f"{path or 'value'}: keys {list(a)} != {list(b)}"
        for k in a:
            d = _difference(a[k], b[k], f"{path}.{k}" if path else str(k))
            if d:
                return d
        return None
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a_, b_ = np.asarray(a), np.asarray(b)
        try:
            same = a_.shape == b_.shape and bool(np.array_equal(a_, b_, equal_nan=True))
        except TypeError:  # object arrays: compare element by element
            same = a_.shape == b_.shape and all(_difference(x, y) is None for x, y in zip(a_.ravel(), b_.ravel(),
                                                                                         strict=True))
        return None if same else f"{path or 'value'}: {a_!r} != {b_!r}"
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return f"{path or 'value'}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = _difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return None
    try:
        same = bool(a == b)
    except (TypeError, ValueError):
        same = False
    return None if same else f"{path or 'value'}: {a!r} != {b!r}"


def _fail(cls: type[OptimizerBase], check: str, message: str) -> AssertionError:
    return AssertionError(f"optimizer {cls.name!r} ({cls.__module__}.{cls.__qualname__}) breaks the contract "
                          f"[{check}]: {message}")


def _make(cls: type[OptimizerBase], ex: ContractExample, seed: int | None = None) -> OptimizerBase:
    return cls(seed=ex.seed if seed is None else seed, objective=ex.objective, **copy.deepcopy(ex.settings))


def _resolve(optimizer: OptimizerRef, example: ContractExample | None) -> tuple[type[OptimizerBase],
                                                                               ContractExample]:
    cls = _class(optimizer)
    return cls, (example or contract_example(cls)).fresh()


def _simplex_problem(weights: Any, domains: list[str]) -> str | None:
    if not isinstance(weights, dict):
        return f"weights are a {type(weights).__name__}, not a dict {{domain: weight}}"
    if list(weights) != list(domains):
        return f"keys {list(weights)} are not the history's domains {list(domains)} (in their order)"
    w = np.array([float(v) for v in weights.values()])
    if not np.isfinite(w).all():
        return f"non-finite weights {weights}"
    if (w < 0).any():
        return f"negative weights {weights}"
    if abs(w.sum() - 1.0) > SIMPLEX_TOL:
        return f"weights sum to {w.sum():.9g}, not 1 (±{SIMPLEX_TOL:g}): {weights}"
    return None


def _perturbed(history: RunTable) -> RunTable:
    """The same runs with other losses: a second history, to see whether one call leaks into the next."""
    out = clone_history(history)
    shift = 0.01 * (1 + np.arange(len(out.df)) % 3)
    for c in out.loss_columns:
        out.df[c] = pd.to_numeric(out.df[c], errors="coerce") + shift
    return out


# ------------------------------------------------------------------------------------------ the checks


def check_simplex(optimizer: OptimizerRef, example: ContractExample | None = None) -> None:
    """Every proposal and the recommendation are mixtures over exactly the history's domains.

    Why: the driver trains `Proposal.weights` as given and the job store writes them to `w_<domain>` columns; a
    mixture off the simplex or over other domains either fails the next RunTable load or trains the wrong
    data. A proposal's fidelity must be numbers and its schedule (online methods: the mixture is the run's
    initial one) a dict the trainer can turn into a mixing schedule.
    """
    cls, ex = _resolve(optimizer, example)
    h = ex.history
    opt = _make(cls, ex)
    for i, p in enumerate(opt.propose(h, ex.n)):
        if not isinstance(p, Proposal):
            raise _fail(cls, "simplex", f"proposal {i} is a {type(p).__name__}, not a Proposal")
        problem = _simplex_problem(p.weights, h.domains)
        if problem:
            raise _fail(cls, "simplex", f"proposal {i}: {problem}")
        if p.fidelity is not None and not all(isinstance(v, int | float) and math.isfinite(v)
                                              for v in p.fidelity.values()):
            raise _fail(cls, "simplex", f"proposal {i}: fidelity {p.fidelity} holds non-numeric values")
        if p.schedule is not None:
            try:
                make_schedule(p.schedule, p.weights)
            except (ValueError, TypeError) as e:
                raise _fail(cls, "simplex", f"proposal {i}: schedule {p.schedule} is not a valid mixing "
                            f"schedule ({e})") from None
    rec = opt.recommend(h, ex.target)
    if not isinstance(rec, Recommendation):
        raise _fail(cls, "simplex", f"recommend returned a {type(rec).__name__}, not a Recommendation")
    problem = _simplex_problem(rec.weights, h.domains)
    if problem:
        raise _fail(cls, "simplex", f"recommendation: {problem}")


def check_proposal_count(optimizer: OptimizerRef, example: ContractExample | None = None) -> None:
    """`propose(history, n)` returns exactly n proposals, and propose(history, 1) at least one.

    Why: the driver fills `parallelism` workers from one call; fewer proposals than asked leave workers idle
    (or, on a history where the optimizer has nothing left to propose, stall the search), more are dropped.
    The example's `n` is a count the optimizer can honour on its history (see ContractExample).
    """
    cls, ex = _resolve(optimizer, example)
    for n in sorted({1, ex.n}):
        got = _make(cls, ex).propose(ex.history, n)
        if len(got) != n:
            raise _fail(cls, "proposal count", f"asked for {n} proposals on a history of {len(ex.history)} "
                        f"runs, got {len(got)}")


def check_no_mutation(optimizer: OptimizerRef, example: ContractExample | None = None) -> None:
    """propose and recommend leave the run table exactly as they found it (frame, domains, token counts, notes).

    Why: the history is the search's record (the job store's table, a released benchmark CSV); an optimizer
    that sorts it, adds a column or rewrites a loss in place corrupts every later call and the exported runs.
    """
    cls, ex = _resolve(optimizer, example)
    h = ex.history
    before = _deep_frame(h.df)
    meta = (list(h.domains), copy.deepcopy(h.token_counts), list(h.notes), h.source)
    opt = _make(cls, ex)
    for call, run in (("propose", lambda: opt.propose(h, ex.n)), ("recommend", lambda: opt.recommend(h, ex.target))):
        run()
        try:
            pd.testing.assert_frame_equal(h.df, before, check_exact=True)
        except AssertionError as e:
            raise _fail(cls, "no mutation", f"{call} changed the history's frame: {e}") from None
        now = (list(h.domains), h.token_counts, list(h.notes), h.source)
        if now != meta:
            raise _fail(cls, "no mutation", f"{call} changed the run table's domains, token counts, notes or "
                        f"source: {meta} -> {now}")


def check_determinism(optimizer: OptimizerRef, example: ContractExample | None = None) -> None:
    """Two fresh instances with the same seed give identical proposals and recommendations on the same history.

    Why: a killed search resumes by calling a new optimizer on the stored table; it must propose what the lost
    driver would have proposed, or the search's design (CLIMB's rounds, a factorial law design) is broken.
    """
    cls, ex = _resolve(optimizer, example)
    a, b = _make(cls, ex), _make(cls, ex)
    d = _difference(a.propose(ex.history, ex.n), b.propose(clone_history(ex.history), ex.n), "proposals")
    if d:
        raise _fail(cls, "determinism", f"two instances with seed {ex.seed} proposed differently: {d}")
    d = _difference(a.recommend(ex.history, ex.target).to_dict(),
                    b.recommend(clone_history(ex.history), ex.target).to_dict(), "recommendation")
    if d:
        raise _fail(cls, "determinism", f"two instances with seed {ex.seed} recommended differently: {d}")


def check_purity(optimizer: OptimizerRef, example: ContractExample | None = None) -> None:
    """An instance that has already worked (on this history and on another) answers as it did when fresh.

    Why: the driver keeps one optimizer for a whole search and calls it on a growing table; a memo or a
    counter carried between calls would make its answer depend on the calls before (and a resumed search,
    which starts with a fresh instance, diverge from the original). The other history has the same runs with
    other losses, so a memo keyed on the wrong thing shows up.
    """
    cls, ex = _resolve(optimizer, example)
    h, other = ex.history, _perturbed(ex.history)
    opt = _make(cls, ex)
    first_props, first_rec = opt.propose(h, ex.n), opt.recommend(h, ex.target).to_dict()  # a fresh one's answers
    opt.propose(other, ex.n)
    opt.recommend(other, ex.target)
    d = _difference(opt.propose(h, ex.n), first_props, "proposals")
    if d:
        raise _fail(cls, "purity", f"after earlier calls, propose differs from a fresh instance's: {d}")
    d = _difference(opt.recommend(h, ex.target).to_dict(), first_rec, "recommendation")
    if d:
        raise _fail(cls, "purity", f"after earlier calls, recommend differs from a fresh instance's: {d}")


def cap_target(rec: Recommendation, history: RunTable, base: TargetSpec | None) -> tuple[TargetSpec, str]:
    """A target under which the recommendation's heaviest domain would repeat twice as often as allowed.

    The target keeps `base`'s size and tokens (or trains on as many tokens as the corpus holds) and sets that
    domain's max_epochs to half the epochs the recommendation would give it; every other domain may repeat
    freely, so a mixture within the caps exists.
    """
    if not history.token_counts:
        raise AssertionError("the caps check needs a history with token counts (RunTable(..., token_counts=...))")
    counts = history.token_counts
    tokens = base.tokens if base is not None and base.tokens else float(sum(counts.values()))
    heavy = max(rec.weights, key=lambda d: rec.weights[d])
    epochs = rec.weights[heavy] * tokens / counts[heavy]
    fields = base.model_dump() if base is not None else {}
    fields.update(tokens=tokens, max_epochs=1e6, max_epochs_per_domain={heavy: epochs / 2})
    return TargetSpec.model_validate(fields), heavy


def check_caps(optimizer: OptimizerRef, example: ContractExample | None = None) -> None:
    """With a target that caps a domain below the recommended weight, the target step brings it within the cap.

    Why: `mixopt.recommend` and the search pass every recommendation through `apply_target` with the target's
    repetition caps; whatever the optimizer did with the target, the mixture that comes out must respect them
    and stay on the simplex. The cap is set at half the heaviest domain's weight in the optimizer's own
    recommendation, so it binds unless the optimizer already honours the target's caps itself.
    """
    cls, ex = _resolve(optimizer, example)
    h = ex.history
    first = _make(cls, ex).recommend(h, ex.target)
    target, heavy = cap_target(first, h, ex.target)
    assert h.token_counts is not None
    caps = domain_caps(h.domains, h.token_counts, target)
    rec = _make(cls, ex).recommend(h, target)
    out = apply_target(rec, h.token_counts, target)
    problem = _simplex_problem(out.weights, h.domains)
    if problem:
        raise _fail(cls, "caps", f"after apply_target: {problem}")
    over = {d: (w, float(c)) for (d, w), c in zip(out.weights.items(), caps, strict=True) if w > c + CAP_TOL}
    if over:
        raise _fail(cls, "caps", f"after apply_target, domain(s) over their cap (weight, cap): {over}; target "
                    f"caps {heavy!r} at {target.max_epochs_per_domain[heavy]:.3g} epochs of {target.tokens:.3g} "
                    "tokens")


#: The checks `check_optimizer` runs, by name.
CHECKS: dict[str, Callable[[OptimizerRef, ContractExample | None], None]] = {
    "simplex": check_simplex,
    "proposal_count": check_proposal_count,
    "no_mutation": check_no_mutation,
    "determinism": check_determinism,
    "purity": check_purity,
    "caps": check_caps,
}


def check_optimizer(optimizer: OptimizerRef, example: ContractExample | None = None,
                    checks: Sequence[str] | None = None) -> None:
    """Run the contract's checks (all, or those named) on a registered optimizer or an optimizer class.

    Raises AssertionError at the first broken promise. The example history is built once and each check gets
    its own copy of it.
    """
    cls = _class(optimizer)
    ex = example or contract_example(cls)
    unknown = sorted(set(checks or ()) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown contract check(s) {unknown}; the checks are: {', '.join(CHECKS)}")
    for name in checks or list(CHECKS):
        CHECKS[name](cls, ex)
