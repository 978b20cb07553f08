"""Mixing schedules: proportions that may change while a proxy trains, from the losses it sees.

The online methods (Aioli, DoReMi, Skill-It …) are not black-box searches: they steer one training run. The
trainer therefore accepts a schedule object, calls it every `every` steps with what it measured, and switches
the sampler to whatever proportions it returns. A static mixture is the trivial schedule, so every proxy run
goes through the same mechanism and records its trajectory.

A schedule travels inside a `Proposal` as a plain dict (`{"name": ..., **settings}`) so it can cross Ray and
be stored in the run table; `make_schedule` turns it back into an object. Each schedule lives in this package
(`mixopt.schedules.aioli`, `.doremi`) and is registered under the `mixopt.schedules` entry points; the online
optimizers import their schedule from here, never the reverse, so a Ray worker that trains a proxy loads
schedules and no optimizer code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable


@dataclass
class Feedback:
    """What a schedule sees at an update."""

    step: int  # optimizer steps done so far
    total_steps: int
    weights: dict[str, float]  # proportions in force until now
    train_losses: dict[str, float]  # mean sequence loss per domain over the steps since the last update
    evaluate: Callable[[], dict[str, float]]  # per-domain validation loss of the model now (computed on demand)
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class MixingSchedule(Protocol):
    every: int  # steps between updates

    def start(self, domains: list[str], total_steps: int) -> dict[str, float]: ...

    def update(self, feedback: Feedback) -> dict[str, float] | None: ...


class StaticSchedule:
    """The fixed mixture of a black-box search."""

    def __init__(self, weights: dict[str, float]) -> None:
        self.weights = dict(weights)
        self.every = 1 << 62

    def start(self, domains: list[str], total_steps: int) -> dict[str, float]:
        return self.weights

    def update(self, feedback: Feedback) -> dict[str, float] | None:
        return None


class PiecewiseSchedule:
    """Stages of fixed proportions: `stages: [{until: 0.5, weights: {...}}, {until: 1.0, weights: {...}}]`.

    `until` is the fraction of training at which a stage ends. This is also how a recorded trajectory (an
    online method's output) is replayed in a later run — e.g. a larger proxy trained on Aioli's schedule.
    """

    def __init__(self, weights: dict[str, float], stages: list[dict[str, Any]]) -> None:
        if not stages:
            raise ValueError("a piecewise schedule needs at least one stage")
        ends = [float(s["until"]) for s in stages]
        if any(b <= a for a, b in zip(ends, ends[1:], strict=False)) or not 0 < ends[0] or ends[-1] < 1:
            raise ValueError("piecewise stages need increasing `until` fractions ending at 1.0")
        self.stages = [(float(s["until"]), dict(s["weights"])) for s in stages]
        self.every = 1
        self.total = 1
        self._current: dict[str, float] | None = None

    def _at(self, step: int) -> dict[str, float]:
        frac = step / max(1, self.total)
        for until, w in self.stages:
            if frac < until:
                return w
        return self.stages[-1][1]

    def start(self, domains: list[str], total_steps: int) -> dict[str, float]:
        self.total = total_steps
        self._current = self._at(0)
        return self._current

    def update(self, feedback: Feedback) -> dict[str, float] | None:
        # Compare stages with stages: the trainer's copy is renormalised, so it may differ in the last bit.
        w = self._at(feedback.step)
        changed = w is not self._current
        self._current = w
        return w if changed else None


#: name -> "module:Class", from the `mixopt.schedules` entry-point group in pyproject.toml (one line per schedule,
#: as for optimizers; a third party registers its own the same way).
SCHEDULES: dict[str, str] = {ep.name: ep.value for ep in entry_points(group="mixopt.schedules")}


def make_schedule(config: dict[str, Any] | None, weights: dict[str, float]) -> MixingSchedule:
    """A schedule from its dict form; `None` is the static mixture `weights`."""
    if not config:
        return StaticSchedule(weights)
    cfg = dict(config)
    name = cfg.pop("name", None)
    if name not in SCHEDULES:
        raise ValueError(f"unknown mixing schedule {name!r}; known: {', '.join(sorted(SCHEDULES))}")
    module, _, attr = SCHEDULES[name].partition(":")
    return getattr(importlib.import_module(module), attr)(weights, **cfg)
