"""Pool mode: run an optimizer against runs that already exist instead of training proxies.

Released run tables (RegMix's, OLMix's swarms, ...) measured the objective on a fixed set of mixtures. To
compare search strategies on them, an optimizer proposes as it would in a search, each proposal is snapped to
the nearest pool mixture not chosen yet, and only then is that run's measured result revealed to it (appended
to its history). The optimizer never sees a result it did not choose. Benchmarks of any optimizer use this.

Distance is Hellinger (Euclidean on √weights, as the GP's embedding): under plain Euclidean distance a
proposal's large weights decide everything, and a domain at 0.001 vs 0.05 would look the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mixopt.optimizers.base import OptimizerBase
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
