"""The contract every mixture optimizer honours (docs/optimizers.md; `mixopt.testing` checks it).

An optimizer is a pure function of the run table plus a seed: `propose` and `recommend` read the history and
return mixtures, keeping no state between calls. That is what makes a killed search resumable from its run
table alone, and what lets the same optimizer run offline on released benchmark CSVs.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

from mixopt.recommendation import Proposal, Recommendation
from mixopt.runs import RunTable
from mixopt.settings import validate_settings
from mixopt.spec import ObjectiveSpec, TargetSpec

if TYPE_CHECKING:
    from mixopt.testing.contract import ContractExample


class NoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@runtime_checkable
class MixtureOptimizer(Protocol):
    name: str

    def propose(self, history: RunTable, n: int) -> list[Proposal]: ...

    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation: ...


# Optional capabilities. An optimizer has one by defining the method; the search, the pool replay and the report
# test for it with isinstance against these protocols (never by probing private names).


@runtime_checkable
class WaitsForPending(Protocol):
    """Asks the asynchronous driver to let the runs in flight finish before it proposes again (CLIMB's rounds)."""

    def wait_for_pending(self, history: RunTable) -> bool: ...


@runtime_checkable
class ChoosesPoolRows(Protocol):
    """Picks rows of an existing pool itself in pool mode (mfbo), instead of having proposals snapped to them."""

    def propose_pool(self, history: RunTable, pool: RunTable, n: int) -> list[int]: ...


@runtime_checkable
class BuildsPredictor(Protocol):
    """Builds its surrogate with its own settings; the report's out-of-fold chart refits exactly that model."""

    def predictor(self, seed: int) -> Any: ...


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


def mixture_dict(domains: list[str], w: np.ndarray) -> dict[str, float]:
    return {d: float(x) for d, x in zip(domains, w, strict=True)}
