"""Pool mode: run an optimizer against runs that already exist instead of training proxies.

Released run tables (RegMix's, OLMix's swarms, ...) measured the objective on a fixed set of mixtures. To
compare search strategies on them, an optimizer proposes as it would in a search, each proposal is snapped to
the nearest pool mixture not chosen yet, and only then is that run's measured result revealed to it (appended
to its history). The optimizer never sees a result it did not choose. Benchmarks of any optimizer use this.

Distance is Hellinger (Euclidean on √weights, as the GP's embedding): under plain Euclidean distance a
proposal's large weights decide everything, and a domain at 0.001 vs 0.05 would look the same.

With costs and fidelities (`simulate`): each pool row costs its level's cost and a run can stop as soon as a
condition holds (e.g. the pool's best target-level run was picked), so methods are compared at equal cumulative
cost, as ADMIRE-BayesOpt evaluates. An optimizer with `propose_pool(history, pool, n) -> list[int]` (mfbo)
chooses pool rows itself; any other has its proposals snapped to the nearest unused row at the proposal's
fidelity. Rows are matched to the history by value (weights and fid_ columns), so a live run table works too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mixopt.optimizers.base import ChoosesPoolRows, OptimizerBase
from mixopt.runs import RunTable


@dataclass
class PoolReplay:
    """What an optimizer chose from a pool, in order."""

    chosen: list[int] = field(default_factory=list)  # pool row positions
    calls: list[int] = field(default_factory=list)  # the propose call that chose each (0, 1, ...)
    distances: list[float] = field(default_factory=list)  # Hellinger distance from proposal to pool mixture
    history: RunTable | None = None  # the chosen pool rows, results included, as the optimizer saw them


def hellinger(W: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Hellinger distance (up to the constant 1/√2) from each row of W to the mixture w."""
    return np.sqrt(((np.sqrt(np.clip(W, 0, None)) - np.sqrt(np.clip(w, 0, None))[None, :]) ** 2).sum(axis=1))


def nearest(pool: RunTable, w: np.ndarray, exclude: np.ndarray | None = None) -> tuple[int, float]:
    """Position and distance of the pool mixture nearest to `w`, among rows not in `exclude` (a bool mask)."""
    d = hellinger(pool.weights, np.asarray(w, dtype=float))
    if exclude is not None:
        d = np.where(exclude, np.inf, d)
    i = int(np.argmin(d))
    if not np.isfinite(d[i]):
        raise ValueError("every pool mixture has been chosen already")
    return i, float(d[i])


def replay(optimizer: OptimizerBase | str, pool: RunTable, budget: int, seed: int = 0, objective: Any = None,
           batch: int | None = None, **settings: Any) -> PoolReplay:
    """Let `optimizer` choose `budget` runs of `pool`, revealing each result only once chosen.

    `optimizer` is an optimizer, or a name built with `seed`, `objective` and `settings`. Each call asks for
    all the runs left (or `batch`) and takes however many the optimizer returns (CLIMB: the rest of a round).
    """
    from mixopt.optimizers import get_optimizer

    opt = optimizer if isinstance(optimizer, OptimizerBase) else get_optimizer(optimizer, seed=seed,
                                                                              objective=objective, **settings)
    if not 1 <= budget <= len(pool):
        raise ValueError(f"budget must be between 1 and the pool's {len(pool)} runs, not {budget}")
    out = PoolReplay()
    used = np.zeros(len(pool), dtype=bool)
    history = pool.head(0)
    call = 0
    while len(out.chosen) < budget:
        left = budget - len(out.chosen)
        props = opt.propose(history, min(left, batch) if batch else left)[:left]
        if not props:
            raise ValueError(f"{opt.name} proposed no mixture after {len(out.chosen)} runs")
        for p in props:
            i, dist = nearest(pool, np.array([p.weights.get(d, 0.0) for d in pool.domains]), used)
            used[i] = True
            out.chosen.append(i)
            out.calls.append(call)
            out.distances.append(dist)
        history = RunTable(pool.df.iloc[out.chosen], token_counts=pool.token_counts, source=pool.source)
        call += 1
    out.history = history
    return out


def fidelity_columns(table: RunTable) -> list[str]:
    return [c for c in table.df.columns if c.startswith("fid_")]


def _keys(table: RunTable, fid_cols: list[str]) -> list[tuple]:
    W = np.round(table.weights, 6)
    F = np.full((len(table), len(fid_cols)), np.nan)
    for j, c in enumerate(fid_cols):
        if c in table.df.columns:
            F[:, j] = pd.to_numeric(table.df[c], errors="coerce").to_numpy(dtype=float)
    F = np.where(np.isfinite(F), F, np.nan)
    return [(tuple(w), tuple(float(f"{x:.6g}") if np.isfinite(x) else None for x in f))
            for w, f in zip(W, F, strict=True)]


def unused_rows(pool: RunTable, history: RunTable) -> np.ndarray:
    """Mask of pool rows the history does not already hold (any status), matched on weights and fidelity.

    Matching is by value, not run id, so a live run table (whose ids the driver assigns) works too; a mixture
    that sits twice in the pool at the same fidelity is used up only after it appears twice in the history.
    """
    if list(history.domains) != list(pool.domains):
        raise ValueError(f"the history's domains {history.domains} differ from the pool's {pool.domains}")
    fid_cols = fidelity_columns(pool)
    seen = Counter(_keys(history, fid_cols)) if len(history) else Counter()
    free = np.ones(len(pool), dtype=bool)
    for i, key in enumerate(_keys(pool, fid_cols)):
        if seen[key] > 0:
            seen[key] -= 1
            free[i] = False
    return free


def snap_to_pool(proposals: list[Any], pool: RunTable, free: np.ndarray) -> list[int]:
    """Nearest free pool row (Hellinger distance) for each proposal, each row used at most once."""
    fid_cols = fidelity_columns(pool)
    free = free.copy()
    out = []
    for p in proposals:
        ok = free.copy()
        if p.fidelity and fid_cols:
            for k, v in p.fidelity.items():
                col = f"fid_{k}"
                if col in pool.df.columns:
                    ok &= np.isclose(pd.to_numeric(pool.df[col], errors="coerce").to_numpy(float), v, rtol=1e-6)
        if not ok.any():
            ok = free.copy()
        if not ok.any():
            break
        dist = np.where(ok, hellinger(pool.weights, np.array([p.weights.get(d, 0.0) for d in pool.domains])), np.inf)
        i = int(np.argmin(dist))
        out.append(i)
        free[i] = False
    return out


def simulate(optimizer: Any, pool: RunTable, cost: np.ndarray, budget: float, batch: int = 1,
             stop: Callable[[list[int]], bool] | None = None, start: list[int] | None = None) -> pd.DataFrame:
    """Run `optimizer` on `pool` until `budget` is spent, `stop(revealed rows)` holds, or the pool is used up.

    `cost` is each pool row's cost (any unit; the trace sums it). Each round asks for `batch` rows, reveals
    them all (parallel workers: the whole batch is paid for), then asks again with the grown history, in the
    order the rows were revealed — so the optimizer sees exactly what a live search would have recorded.
    Returns one row per revealed pool row: round, pool_row, run_id, cost and cumulative_cost.
    """
    cost = np.asarray(cost, dtype=float)
    if cost.shape != (len(pool),) or not np.isfinite(cost).all() or (cost < 0).any():
        raise ValueError("cost must give one finite, non-negative number per pool row")
    revealed: list[int] = list(start or [])
    spent = float(cost[revealed].sum()) if revealed else 0.0
    ids = pool.run_ids()
    rows = [{"round": 0, "pool_row": i, "run_id": ids[i], "cost": cost[i]} for i in revealed]
    rnd = 0
    while spent < budget and not (stop and stop(revealed)):
        history = _history(pool, revealed)
        free = unused_rows(pool, history)
        if not free.any():
            break
        n = min(batch, int(free.sum()))
        if isinstance(optimizer, ChoosesPoolRows):
            picked = [int(i) for i in optimizer.propose_pool(history, pool, n)]
        else:
            picked = snap_to_pool(optimizer.propose(history, n), pool, free)
        if not picked:
            break
        bad = [i for i in picked if not free[i]]
        if bad or len(set(picked)) != len(picked):
            raise RuntimeError(f"{getattr(optimizer, 'name', optimizer)} picked pool rows already used: {bad}")
        rnd += 1
        for i in picked:
            revealed.append(i)
            spent += cost[i]
            rows.append({"round": rnd, "pool_row": i, "run_id": ids[i], "cost": cost[i]})
    trace = pd.DataFrame(rows, columns=["round", "pool_row", "run_id", "cost"])
    trace["cumulative_cost"] = trace["cost"].cumsum()
    return trace


def _history(pool: RunTable, rows: list[int]) -> RunTable:
    df = pool.df.iloc[rows] if rows else pool.df.iloc[:0]
    return RunTable(df, token_counts=pool.token_counts, source=f"{pool.source} (revealed)")
