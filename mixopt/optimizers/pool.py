"""Pool-based (retrospective) optimisation: choose only among runs that already exist in a run table.

This is how ADMIRE-BayesOpt and similar papers evaluate a search method on released runs: the "pool" is a table
of finished proxy runs (mixture, fidelity, metrics); a method may only pick rows of it, and picking a row reveals
its metrics and costs its training cost. Nothing is trained, so a whole search takes seconds to minutes, and the
cost at which a method first picks the pool's best run can be compared across methods and seeds.

Any optimizer works here. One with a `propose_pool(history, pool, n) -> list[int]` method (mfbo) chooses pool
rows itself; any other has its proposals snapped to the nearest unused pool row (Hellinger distance between
mixtures, at the proposal's fidelity when it names one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from mixopt.runs import RunTable


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
    root = np.sqrt(np.clip(pool.weights, 0, None))
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
        w = np.sqrt(np.clip(np.array([p.weights[d] for d in pool.domains]), 0, None))
        dist = np.where(ok, ((root - w) ** 2).sum(axis=1), np.inf)
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
        if hasattr(optimizer, "propose_pool"):
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
