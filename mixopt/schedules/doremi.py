"""DoReMi's mixing schedule: Group DRO proportions updated from the proxy's excess loss over a reference (the
trainer's side of the `doremi` optimizer; mixopt/optimizers/doremi.py has the method and its references).

It runs inside a Ray worker, beside the training loop, so it imports no optimizer code."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mixopt.schedules import Feedback
from mixopt.settings import validate_settings


class DoReMiParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    eta: float = Field(default=1.0, gt=0, description="step size of the multiplicative update (DoReMi's scripts)")
    smoothing: float = Field(default=1e-3, ge=0, lt=1, description="c: α ← (1−c)·α + c/k (DoReMi's scripts)")
    every: int = Field(default=1, ge=1, description="steps between updates (DoReMi: every step)")
    signal: Literal["train", "val"] = Field(default="train", description="losses compared with the reference: "
                                            "the training batches since the last update, or validation")


class DoReMiScheduleSettings(DoReMiParams):
    reference: dict[str, float] = Field(description="reference loss per training domain")


class DoReMiSchedule:
    """Group DRO proportions (`{"name": "doremi", "reference": {...}, ...}`); `alphas` records every α."""

    def __init__(self, weights: dict[str, float], **settings: Any) -> None:
        self.settings: DoReMiScheduleSettings = validate_settings("doremi schedule", DoReMiScheduleSettings,
                                                                  settings)
        self.initial = dict(weights)
        self.every = self.settings.every

    def start(self, domains: list[str], total_steps: int) -> dict[str, float]:
        self.domains = [d for d in domains if self.initial.get(d, 0.0) > 0]
        missing = [d for d in self.domains if d not in self.settings.reference]
        if missing:
            raise ValueError(f"doremi: no reference loss for domain(s) {missing}")
        bad = [d for d in self.domains if not math.isfinite(self.settings.reference[d])]
        if bad:
            raise ValueError(f"doremi: the reference loss of {bad} is not a finite number")
        self.ref = np.array([self.settings.reference[d] for d in self.domains])
        a = np.array([self.initial[d] for d in self.domains], dtype=float)
        self.alpha = a / a.sum()
        self.excess = np.zeros(len(self.domains))
        self.alphas = [self.alpha.copy()]
        return self._mixture()

    def update(self, feedback: Feedback) -> dict[str, float] | None:
        losses = feedback.train_losses if self.settings.signal == "train" else feedback.evaluate()
        for j, d in enumerate(self.domains):
            if d in losses and math.isfinite(losses[d]):
                self.excess[j] = max(losses[d] - self.ref[j], 0.0)
        logits = np.log(self.alpha) + self.settings.eta * self.excess
        a = np.exp(logits - logits.max())
        c = self.settings.smoothing
        self.alpha = (1 - c) * a / a.sum() + c / len(a)
        self.alphas.append(self.alpha.copy())
        return self._mixture()

    def _mixture(self) -> dict[str, float]:
        return {d: float(x) for d, x in zip(self.domains, self.alpha, strict=True)}
