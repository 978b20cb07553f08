"""mixopt: data mixture optimization for language-model pretraining.

    >>> import mixopt
    >>> runs = mixopt.RunTable.from_csv("runs.csv")            # w_<domain> and loss_<domain> columns
    >>> rec = mixopt.recommend(runs, optimizer="regmix", objective="loss_pile_cc")
    >>> rec.weights
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixopt.errors import InputError, MixoptError

if TYPE_CHECKING:
    from mixopt.optimizers import get_optimizer, list_optimizers
    from mixopt.optimizers.base import Proposal, Recommendation
    from mixopt.predictors import fit_predictor
    from mixopt.runs import RunTable
    from mixopt.spec import DatasetSpec, ObjectiveSpec, ProxySpec, SearchSpec, TargetSpec

__version__ = "0.1.0"

# The public names load on first use: `import mixopt` (and with it every `mixopt` command, which imports the
# package first) must not pay for pandas, torch and the optimizers when it only reads a job folder.
_LAZY = {"get_optimizer": "mixopt.optimizers", "list_optimizers": "mixopt.optimizers",
         "Proposal": "mixopt.optimizers.base", "Recommendation": "mixopt.optimizers.base",
         "fit_predictor": "mixopt.predictors", "RunTable": "mixopt.runs", "DatasetSpec": "mixopt.spec",
         "ObjectiveSpec": "mixopt.spec", "ProxySpec": "mixopt.spec", "SearchSpec": "mixopt.spec",
         "TargetSpec": "mixopt.spec"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mixopt' has no attribute {name!r}")


def recommend(runs: RunTable | str | Path, optimizer: str = "regmix", objective: Any = None,
              target: TargetSpec | None = None, seed: int = 0, **settings: Any) -> Recommendation:
    """Recommend a mixture from a run table (or a CSV/Parquet path) with any registered optimizer.

    With a target (and token counts in the table) the mixture is checked against the target's repetition caps
    and re-balanced where it exceeds them, whichever optimizer produced it (see `mixopt.target.apply_target`).
    """
    from mixopt.optimizers import get_optimizer
    from mixopt.runs import RunTable
    from mixopt.target import apply_target

    table = runs if isinstance(runs, RunTable) else RunTable.from_file(runs)
    rec = get_optimizer(optimizer, seed=seed, objective=objective, **settings).recommend(table, target)
    return apply_target(rec, table.token_counts, target)


def submit(spec: SearchSpec | str | Path, **kw: Any) -> Recommendation:
    """Run a search job to the end (see `mixopt.search.Search` for resuming and events)."""
    from mixopt.search import submit as _submit

    return _submit(spec, **kw)


def load_job(path: str | Path) -> RunTable:
    """The run table of a job folder."""
    from mixopt.search.store import JobStore

    p = Path(path)
    return JobStore.open(p.parent.parent if p.parent.name == "jobs" else Path("."), str(p)).run_table()


__all__ = ["DatasetSpec", "InputError", "MixoptError", "ObjectiveSpec", "Proposal", "ProxySpec",
           "Recommendation", "RunTable", "SearchSpec", "TargetSpec", "fit_predictor", "get_optimizer",
           "list_optimizers", "load_job", "recommend", "submit"]
