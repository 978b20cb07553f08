"""Aioli's mixing schedule: the proxy trainer's side of the `aioli` optimizer (mixopt/optimizers/aioli.py has the
method and its references).

Each round estimates the interaction matrix A of the linear dynamic mixing law from short probes (LearnParams),
then steers the proportions by exponentiated gradient on it. It runs inside a Ray worker, beside the training
loop, so it imports no optimizer code."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mixopt.schedules import Feedback
from mixopt.settings import validate_settings

log = logging.getLogger(__name__)

class AioliParams(BaseModel):
    """The algorithm's knobs. Defaults: the official full-SlimPajama setting (7 groups, METHODS §4c), except
    `update_steps`, which has to fit the proxy's length (a round must exceed lp_rounds·lp_steps·domains)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    lp_rounds: int = Field(default=2, ge=1, description="sweeps over the domains in each LearnParams")
    lp_steps: int = Field(default=10, ge=1, description="training steps on each one-hot-biased mixture")
    eta: float = Field(default=1.0, gt=0, description="step size of the exponentiated-gradient update")
    update_steps: int = Field(default=200, ge=2, description="steps per round, LearnParams included")
    one_hot_factor: float = Field(default=0.75, gt=0, le=1, description="weight of the probed domain")
    ema: float | None = Field(default=0.1, ge=0, lt=1, description="weight of the past in the smoothed A; "
                              "null: no smoothing, cumulative updates")
    normalize_A: bool = Field(default=True, description="shift A to be non-negative, divide by its sum")
    diagonal: bool = Field(default=False, description="keep only A_ii = Â_ii / one_hot_factor")
    prior_steps: int = Field(default=0, ge=0, description="steps on the initial mixture before the first round "
                             "(0: lp_steps, the least that gives a loss to measure drops from)")
    targets: list[str] | None = Field(default=None, description="validation domains whose summed loss is "
                                      "minimised (default: the training domains taking part)")


class AioliScheduleSettings(AioliParams):
    seed: int = Field(default=0, description="seed of the probe order")


# ---------------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Segment:
    start: int
    end: int
    kind: Literal["initial", "learn", "mix"]


def lp_duration(params: AioliParams, m: int) -> int:
    return params.lp_rounds * params.lp_steps * m


def plan(total_steps: int, m: int, params: AioliParams) -> list[Segment]:
    """The run's timeline: initial steps, then rounds of LearnParams followed by mixing on p.

    The schedule follows it, and `recommend` uses it to tell probes from the method's own proportions.
    """
    D = lp_duration(params, m)
    if params.update_steps <= D:
        raise ValueError(f"aioli: update_steps ({params.update_steps}) must exceed the LearnParams steps of a "
                         f"round, lp_rounds·lp_steps·domains = {D}; raise update_steps or lower lp_rounds/lp_steps")
    first = params.prior_steps or params.lp_steps
    segments = [Segment(0, min(first, total_steps), "initial")]
    t = first
    while t < total_steps:
        if t + D >= total_steps:  # the probes could not finish: keep p to the end
            segments.append(Segment(t, total_steps, "mix"))
            break
        end = min(t + params.update_steps, total_steps)
        segments.append(Segment(t, t + D, "learn"))
        if t + D < end:
            segments.append(Segment(t + D, end, "mix"))
        t = end
    if not any(s.kind == "learn" for s in segments):
        raise ValueError(f"aioli: a run of {total_steps} steps has no room for one round ({first} initial steps + "
                         f"{D} LearnParams steps + 1); give the proxy more tokens or lower lp_rounds/lp_steps")
    return segments


def probe_matrix(m: int, f: float) -> np.ndarray:
    """Row j: the mixture LearnParams trains on to probe domain j."""
    W = np.full((m, m), (1 - f) / (m - 1))
    np.fill_diagonal(W, f)
    return W


# ---------------------------------------------------------------------------------------------------- schedule


class AioliSchedule:
    """Aioli as a mixing schedule for the proxy trainer (`{"name": "aioli", ...AioliScheduleSettings}`).

    After a run, `rounds` holds what each round measured (Â), solved (A) and used (normalised A, p).
    """

    def __init__(self, weights: dict[str, float], **settings: Any) -> None:
        self.settings: AioliScheduleSettings = validate_settings("aioli schedule", AioliScheduleSettings, settings)
        self.initial = dict(weights)
        self.every = 1
        self.rounds: list[dict[str, Any]] = []
        self._queue: list[int] = []
        self._learning = False

    # -------------------------------------------------------------------------------------------- contract

    def start(self, domains: list[str], total_steps: int) -> dict[str, float]:
        s = self.settings
        self.domains = [d for d in domains if self.initial.get(d, 0.0) > 0]
        m = len(self.domains)
        if m < 2:
            raise ValueError(f"aioli needs at least two domains with a positive initial weight, got {self.domains}")
        if s.one_hot_factor < 1 and abs(s.one_hot_factor - 1 / m) < 1e-9:
            raise ValueError(f"aioli: one_hot_factor {s.one_hot_factor} equals 1/{m}, so every probe is the "
                             "uniform mixture and A cannot be solved; use a larger one_hot_factor")
        self.targets = list(s.targets) if s.targets else list(self.domains)
        if s.diagonal and self.targets != self.domains:
            raise ValueError("aioli: diagonal needs the targets to be the training domains")
        self.segments = plan(total_steps, m, s)
        self.every = math.gcd(self.segments[0].end, s.lp_steps, s.update_steps)
        self._learn_starts = {seg.start for seg in self.segments if seg.kind == "learn"}
        self._probes = probe_matrix(m, s.one_hot_factor)
        self._rng = np.random.default_rng(s.seed)
        base = np.array([self.initial[d] for d in self.domains], dtype=float)
        self._log_base = np.log(base / base.sum())
        self._log_p = self._log_base.copy()
        self._ema: np.ndarray | None = None
        return self._mixture(self.p)

    def update(self, feedback: Feedback) -> dict[str, float] | None:
        step = feedback.step
        if self._learning and step == self._probe_end:
            losses = self._losses(feedback)
            self._Ahat[:, self._j] += self._prev - losses
            self._prev = losses
            if self._queue:
                return self._next_probe(step)
            self._learning = False
            self._finish_round(step)
            return self._mixture(self.p)
        if not self._learning and step in self._learn_starts:
            self._prev = self._losses(feedback)
            self._Ahat = np.zeros((len(self.targets), len(self.domains)))
            self._queue = [int(j) for _ in range(self.settings.lp_rounds)
                           for j in self._rng.permutation(len(self.domains))]
            self._learning = True
            return self._next_probe(step)
        return None

    # -------------------------------------------------------------------------------------------- internals

    @property
    def p(self) -> np.ndarray:
        w = np.exp(self._log_p - self._log_p.max())
        return w / w.sum()

    def _mixture(self, w: np.ndarray) -> dict[str, float]:
        return {d: float(x) for d, x in zip(self.domains, w, strict=True)}

    def _next_probe(self, step: int) -> dict[str, float]:
        self._j = self._queue.pop(0)
        self._probe_end = step + self.settings.lp_steps
        return self._mixture(self._probes[self._j])

    def _losses(self, feedback: Feedback) -> np.ndarray:
        ev = feedback.evaluate()
        missing = [t for t in self.targets if t not in ev]
        if missing:
            raise ValueError(f"aioli: no validation loss for target(s) {missing}; the validation split has "
                             f"{sorted(ev)}")
        return np.array([ev[t] for t in self.targets], dtype=float)

    def _finish_round(self, step: int) -> None:
        s = self.settings
        Ahat = self._Ahat / s.lp_rounds
        A = solve_interactions(Ahat, s.one_hot_factor, s.diagonal)
        A_used = normalize_interactions(A) if s.normalize_A else A
        if s.ema is not None:
            self._ema = A_used if self._ema is None else (1 - s.ema) * A_used + s.ema * self._ema
            self._log_p = self._log_base + s.eta * self._ema.sum(axis=0)
        else:
            self._log_p = self._log_p + s.eta * A_used.sum(axis=0)
        self.rounds.append({"step": step, "Ahat": Ahat, "A": A, "A_used": A_used, "p": self.p})
        log.debug("aioli round at step %d: p = %s", step, np.round(self.p, 4))


def solve_interactions(Ahat: np.ndarray, one_hot_factor: float, diagonal: bool = False) -> np.ndarray:
    """A from the measured loss drops Â, where probe j trained on mixture W_j: Â[i] = W·A[i]."""
    m = Ahat.shape[1]
    if diagonal:
        return np.diag(np.diag(Ahat) / one_hot_factor)
    if one_hot_factor == 1:
        return Ahat.copy()
    return np.linalg.solve(probe_matrix(m, one_hot_factor), Ahat.T).T


def normalize_interactions(A: np.ndarray) -> np.ndarray:
    """Shift to non-negative when any entry is negative, then divide by the sum (the official code's order)."""
    A = A - min(0.0, float(A.min()))
    total = float(A.sum())
    return A / total if total > 0 else A
