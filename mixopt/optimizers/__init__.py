"""Registry of mixture optimizers.

Built-ins are registered under the `mixopt.optimizers` entry-point group in pyproject.toml, the same way a third
party adds its own, so there is one lookup path. The built-in table below is the fallback when mixopt is
imported from a source tree that was never installed (entry points then do not exist).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from mixopt.optimizers.base import MixtureOptimizer, OptimizerBase, Proposal, Recommendation

_BUILTIN = {
    "random": "mixopt.optimizers.random_search:RandomSearch",
    "uniform": "mixopt.optimizers.uniform:Uniform",
    "natural": "mixopt.optimizers.natural:Natural",
    "regmix": "mixopt.optimizers.regmix:RegMix",
    "climb": "mixopt.optimizers.climb:Climb",
    "mixing_law": "mixopt.optimizers.mixing_law:MixingLawOptimizer",
    "dcpt": "mixopt.optimizers.dcpt:DCPT",
    "cmr": "mixopt.optimizers.cmr:CMR",
    "mfbo": "mixopt.optimizers.mfbo:MFBO",
    "aioli": "mixopt.optimizers.aioli:Aioli",
    "doremi": "mixopt.optimizers.doremi:DoReMi",
    "scaling": "mixopt.optimizers.scaling:Scaling",
}


def _targets() -> dict[str, str]:
    found = dict(_BUILTIN)
    for ep in entry_points(group="mixopt.optimizers"):
        found[ep.name] = ep.value
    return found


def list_optimizers() -> list[str]:
    return sorted(_targets())


def optimizer_class(name: str) -> type[OptimizerBase]:
    targets = _targets()
    if name not in targets:
        raise ValueError(f"unknown optimizer {name!r}; known optimizers: {', '.join(sorted(targets))}")
    module, _, attr = targets[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def get_optimizer(name: str, seed: int = 0, objective: Any = None, **settings: Any) -> OptimizerBase:
    """Build an optimizer by name; unknown settings are errors."""
    return optimizer_class(name)(seed=seed, objective=objective, **settings)


__all__ = ["MixtureOptimizer", "OptimizerBase", "Proposal", "Recommendation", "get_optimizer",
           "list_optimizers", "optimizer_class"]
