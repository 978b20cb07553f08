"""Registry of mixture optimizers.

There is one list: the `mixopt.optimizers` entry-point group. The built-ins are registered there in
pyproject.toml exactly as a third party registers its own (one entry point naming `module:Class`), so adding an
optimizer is one module plus one entry-point line (see docs/optimizers.md). `register_optimizer` adds one for the
life of this process only (a notebook, a benchmark's own baseline, a test); it never edits the installed list.
Looking a name up imports that one optimizer's module, so listing names loads no optimizer code.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from mixopt.optimizers.base import MixtureOptimizer, OptimizerBase, Proposal, Recommendation

GROUP = "mixopt.optimizers"
_IN_PROCESS: dict[str, str | type[OptimizerBase]] = {}


def _targets() -> dict[str, str | type[OptimizerBase]]:
    found: dict[str, str | type[OptimizerBase]] = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    if not found:
        raise RuntimeError("no optimizer is registered: mixopt's entry points are missing, which means it was "
                           "imported from a source tree that was never installed; run `pip install -e .`")
    return {**found, **_IN_PROCESS}


def register_optimizer(name: str, target: str | type[OptimizerBase]) -> None:
    """Make `name` resolve to an optimizer class (or a "module:Class" string) in this process."""
    if not name or not isinstance(name, str):
        raise ValueError("an optimizer name is a non-empty string")
    _IN_PROCESS[name] = target


def unregister_optimizer(name: str) -> None:
    """Forget an optimizer added by `register_optimizer` (installed entry points stay)."""
    _IN_PROCESS.pop(name, None)


def list_optimizers() -> list[str]:
    return sorted(_targets())


def optimizer_class(name: str) -> type[OptimizerBase]:
    targets = _targets()
    if name not in targets:
        raise ValueError(f"unknown optimizer {name!r}; known optimizers: {', '.join(sorted(targets))}")
    target = targets[name]
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_optimizer(name: str, seed: int = 0, objective: Any = None, **settings: Any) -> OptimizerBase:
    """Build an optimizer by name; unknown settings are errors."""
    return optimizer_class(name)(seed=seed, objective=objective, **settings)


__all__ = ["GROUP", "MixtureOptimizer", "OptimizerBase", "Proposal", "Recommendation", "get_optimizer",
           "list_optimizers", "optimizer_class", "register_optimizer", "unregister_optimizer"]
