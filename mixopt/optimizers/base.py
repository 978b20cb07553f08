"""The contract every mixture optimizer honours (DESIGN.md, "Interfaces").

An optimizer is a pure function of the run table plus a seed: `propose` and `recommend` read the history and
return mixtures, keeping no state between calls. That is what makes a killed search resumable from its run
table alone, and what lets the same optimizer run offline on released benchmark CSVs.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from mixopt.runs import RunTable
from mixopt.spec import ObjectiveSpec, TargetSpec

if TYPE_CHECKING:
    from mixopt.testing.contract import ContractExample


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


class NoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@runtime_checkable
class MixtureOptimizer(Protocol):
    name: str

    def propose(self, history: RunTable, n: int) -> list[Proposal]: ...

    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation: ...


class OptimizerBase:
    """Shared plumbing: settings validation, objective, and a seed derived from the history.

    The random stream of each call is seeded by (seed, number of runs already in the history), so the same
    history always yields the same proposals — across processes, after a crash, on another machine.
    """

    name: ClassVar[str] = ""
    Settings: ClassVar[type[BaseModel]] = NoSettings
    #: Whether the search's verification ladder checks this optimizer's recommendation against the baselines
    #: (False for baselines themselves, online schedules and continual-pretraining laws with their own objective).
    verifies: ClassVar[bool] = True

    @classmethod
    def runs_needed(cls, settings: BaseModel) -> int | None:
        """Search runs this optimizer needs before it can recommend (checked against budget.runs when a spec
        loads, so a too-small budget is refused before it trains); None when it does not count runs."""
        return None

    @classmethod
    def contract_example(cls) -> ContractExample | tuple[RunTable, dict[str, Any]] | None:
        """A small history (and settings) this optimizer can both propose and recommend from, for the contract
        checks of `mixopt.testing` (`check_optimizer`), so a third party can check an optimizer that needs more
        than the generic history of static runs with `loss_<domain>` columns (fidelity columns, online runs, a
        target: return a `mixopt.testing.ContractExample`). None: the generic history suits it."""
        return None

    def __init__(self, seed: int = 0, objective: ObjectiveSpec | str | None = None, **settings: Any) -> None:
        self.seed = seed
        self.objective = (objective if isinstance(objective, ObjectiveSpec)
                          else ObjectiveSpec.model_validate(objective) if objective is not None
                          else ObjectiveSpec())
        self.settings = validate_settings(self.name, self.Settings, settings)

    def rng(self, history: RunTable, salt: str = "") -> np.random.Generator:
        key = f"{self.name}|{self.seed}|{len(history)}|{salt}".encode()
        return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))

    def describe_settings(self) -> dict[str, Any]:
        return {"seed": self.seed, **self.settings.model_dump()}

    def _recommendation(self, weights: np.ndarray, history: RunTable, **kw: Any) -> Recommendation:
        w = np.clip(np.asarray(weights, dtype=float), 0, None)
        w = w / w.sum()
        return Recommendation(weights={d: float(x) for d, x in zip(history.domains, w, strict=True)},
                              method=self.name, objective=self.objective.describe(),
                              settings=self.describe_settings(), **kw)


def validate_settings(name: str, model: type[BaseModel], settings: dict[str, Any]) -> Any:
    """Validate an optimizer's settings; the error is one sentence naming the setting and the allowed ones."""
    try:
        return model.model_validate(settings)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        allowed = ", ".join(sorted(model.model_fields)) or "none"
        if err["type"] == "extra_forbidden":
            raise ValueError(f"{name} has no setting {key!r}; its settings are: {allowed}") from None
        raise ValueError(f"setting {key!r} of {name}: {err['msg']}") from None


def mixture_dict(domains: list[str], w: np.ndarray) -> dict[str, float]:
    return {d: float(x) for d, x in zip(domains, w, strict=True)}
