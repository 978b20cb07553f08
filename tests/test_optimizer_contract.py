"""The optimizer contract (mixopt.testing) over every registered optimizer, and a third party's way in.

Parametrized over `list_optimizers()`, so an optimizer added to the registry is covered without touching this
file. What each built-in needs to be checked on (fidelity levels, several scales, a general/domain pair, online
runs with their trajectories) lives with the examples in mixopt/testing/contract.py, where the cases in which
an optimizer cannot do what the generic check assumes are handled and explained:
- climb never proposes across a round boundary, so its example stands inside a round and asks for what is left;
- doremi proposes only the missing reference runs until they exist, so its example is past its reference phase;
- aioli and doremi propose schedules: `Proposal.weights` is the run's initial mixture (checked on the simplex)
  and the schedule must be one the trainer can build; they recommend from online runs, so their histories are
  online runs simulated through their own schedules;
- random, uniform, natural, aioli and doremi ignore the target, cmr bounds only the domain share by it (not the
  general share) and mfbo's candidates include observed runs over the caps; the caps check still holds for
  them because the target step (`apply_target`) re-balances whatever they recommend, which is the contract.
No check is skipped for any optimizer.
"""

from __future__ import annotations

import functools
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from mixopt.errors import InputError
from mixopt.optimizers import list_optimizers, optimizer_class
from mixopt.optimizers.base import OptimizerBase, Proposal, Recommendation, mixture_dict
from mixopt.runs import RunTable
from mixopt.spec import TargetSpec
from mixopt.testing import CHECKS, ContractExample, check_optimizer, contract_example, static_history

#: (optimizer, check) pairs the contract finds broken, each with the reason; xfail(strict=True), so a fix shows.
KNOWN_BREAKS: dict[tuple[str, str], str] = {}


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Many tiny law fits: on a busy 2-core machine threaded BLAS makes them several times slower, not faster."""
    with threadpool_limits(1):
        yield


@functools.cache
def _example(name: str) -> ContractExample:
    return contract_example(name)  # built once per optimizer; every check works on its own copy (fresh())


#: Optimizers whose law fits take seconds per call here: the fast tier (`-m "not slow"`) leaves their cases out.
SLOW_LAWS = {"dcpt", "cmr"}


def _cases() -> list:
    out = []
    for name in list_optimizers():
        for check in CHECKS:
            reason = KNOWN_BREAKS.get((name, check))
            marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)] if reason else []
            if name in SLOW_LAWS:
                marks.append(pytest.mark.slow)
            out.append(pytest.param(name, check, marks=marks, id=f"{name}-{check}"))
    return out


@pytest.mark.parametrize("name, check", _cases())
def test_optimizer_honours_the_contract(name: str, check: str) -> None:
    CHECKS[check](name, _example(name))


def test_every_builtin_has_its_own_example():
    """A built-in that fell back to the generic history would be checked on a table it may not suit."""
    from importlib.metadata import entry_points

    from mixopt.testing.examples import BUILTIN_EXAMPLES

    builtins = {ep.value for ep in entry_points(group="mixopt.optimizers") if ep.value.startswith("mixopt.")}
    assert set(BUILTIN_EXAMPLES) == builtins


def test_examples_are_reproducible():
    """A failure must replay: the examples built by running the optimizer itself come out the same each time."""
    for name in ("climb", "aioli", "doremi"):
        a, b = contract_example(name), contract_example(name)
        assert a.history.df.to_json() == b.history.df.to_json()


# ------------------------------------------------------------------------------------------ the checks catch


class _Wellbehaved(OptimizerBase):
    """Random mixtures from the seed and the history's length; recommends the mean of the three best runs."""

    name = "contract_wellbehaved"

    def propose(self, history: RunTable, n: int) -> list[Proposal]:
        W = self.rng(history).dirichlet(np.ones(len(history.domains)), n)
        return [Proposal(mixture_dict(history.domains, w)) for w in W]

    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        ok, y = history.usable(self.objective)
        if len(ok) == 0:
            raise InputError(history.source, "no successful runs", "train some")
        return self._recommendation(ok.weights[np.argsort(y)[:3]].mean(axis=0), history)


class _Mutates(_Wellbehaved):
    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        history.df.loc[0, "loss_a"] = 0.0  # e.g. "clean up" a loss in place
        return super().recommend(history, target)


class _Stateful(_Wellbehaved):
    def propose(self, history: RunTable, n: int) -> list[Proposal]:
        self.calls = getattr(self, "calls", 0) + 1
        W = np.random.default_rng(self.seed + self.calls).dirichlet(np.ones(len(history.domains)), n)
        return [Proposal(mixture_dict(history.domains, w)) for w in W]


class _Unseeded(_Wellbehaved):
    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        return self._recommendation(np.random.default_rng().dirichlet(np.ones(len(history.domains))), history)


class _OffSimplex(_Wellbehaved):
    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        rec = super().recommend(history, target)
        return Recommendation(weights={d: 2 * w for d, w in rec.weights.items()}, method=self.name, objective="")


class _ShortChanges(_Wellbehaved):
    def propose(self, history: RunTable, n: int) -> list[Proposal]:
        return super().propose(history, max(1, n - 1))


class _IgnoresTheCap(_Wellbehaved):
    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        return self._recommendation(np.eye(len(history.domains))[0], history)


@pytest.mark.parametrize("cls, check, message", [
    (_Mutates, "no_mutation", "recommend changed the history's frame"),
    (_Stateful, "purity", "propose differs"),
    (_Unseeded, "determinism", "recommended differently"),
    (_OffSimplex, "simplex", "sum to"),
    (_ShortChanges, "proposal_count", "asked for 3 proposals"),
])
def test_each_check_catches_the_break_it_is_for(cls, check, message):
    with pytest.raises(AssertionError, match=message):
        CHECKS[check](cls)


def test_the_optimizer_without_those_breaks_passes():
    check_optimizer(_Wellbehaved)


def test_the_caps_check_holds_for_an_optimizer_that_ignores_the_target():
    """The target step, not the optimizer, owes the caps: a mixture on one domain is brought within them."""
    CHECKS["caps"](_IgnoresTheCap)


def test_an_optimizer_supplies_its_own_example():
    class TwoDomains(_Wellbehaved):
        name = "contract_two_domains"

        @classmethod
        def contract_example(cls):
            return static_history(8, domains=["x", "y"], counts={"x": 1e6, "y": 4e6}), {}

    assert contract_example(TwoDomains).history.domains == ["x", "y"]
    check_optimizer(TwoDomains)


# ------------------------------------------------------------------------------------------ a third party


THIRD_PARTY = '''
"""A third-party mixture optimizer: the mean of the best runs, proposals around it."""

import numpy as np

from mixopt.optimizers.base import OptimizerBase, Proposal, mixture_dict


class BestMean(OptimizerBase):
    name = "contract_best_mean"

    def propose(self, history, n):
        k = len(history.domains)
        W = self.rng(history).dirichlet(np.ones(k), n)
        return [Proposal(mixture_dict(history.domains, w)) for w in W]

    def recommend(self, history, target=None):
        ok, y = history.usable(self.objective)
        return self._recommendation(ok.weights[np.argsort(y)[:4]].mean(axis=0), history,
                                    runs_used=ok.run_ids())
'''


def test_a_third_party_optimizer_registers_with_one_entry_point(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch):
    """A package on sys.path with one `mixopt.optimizers` entry point: listed, loadable, and it passes the
    contract on the generic example, with nothing registered anywhere else."""
    pkg = "mixopt_contract_thirdparty"
    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text(textwrap.dedent(THIRD_PARTY))
    dist = tmp_path / f"{pkg}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {pkg}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[mixopt.optimizers]\ncontract_best_mean = {pkg}:BestMean\n")
    assert "contract_best_mean" not in list_optimizers()
    monkeypatch.syspath_prepend(str(tmp_path))  # also invalidates importlib's finder caches
    try:
        assert "contract_best_mean" in list_optimizers()
        cls = optimizer_class("contract_best_mean")
        assert cls.__module__ == pkg and cls.name == "contract_best_mean"
        check_optimizer("contract_best_mean")
    finally:
        sys.modules.pop(pkg, None)
