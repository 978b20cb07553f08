"""What optimizers hand back: a `Proposal` (a mixture to train) and a `Recommendation` (the mixture to use).

Plain records at the bottom of the layers: the optimizers build them, and the target's caps (`mixopt.target`),
the exporters (`mixopt.export`) and the search read them, so none of those imports optimizer code for them.
`mixopt.optimizers.base` re-exports both names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Proposal:
    """One mixture to train, optionally at a given fidelity and with a schedule (online methods)."""

    weights: dict[str, float]
    fidelity: dict[str, float] | None = None
    schedule: dict[str, Any] | None = None


@dataclass
class Recommendation:
    weights: dict[str, float]
    method: str
    objective: str
    predicted: float | None = None
    uncertainty: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    runs_used: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # method-specific, machine-readable extras

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
