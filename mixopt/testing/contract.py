"""The optimizer contract as executable checks, for mixopt's own optimizers and for third-party ones.

Every optimizer promises the same things (mixopt/optimizers/base.py): it is a pure function of the run table
and its seed, it never writes to the table it reads, its mixtures lie on the simplex over the table's domains,
and `propose(history, n)` returns the n runs that were asked for. The search relies on each of these: a killed
search resumes from its run table alone only if the same table gives the same proposals; the job store's table
is shared between the driver and the optimizer, so a write to it corrupts the record of the search; and the
target step (`mixopt.target.apply_target`) must be able to bring any recommendation within the repetition
caps of the target run.

Each `check_*` function raises AssertionError with a message naming the optimizer, the check and what differed.
`check_optimizer` runs them all. A third party calls it from its own tests::

    from mixopt.testing import check_optimizer

    def test_my_optimizer_honours_the_contract():
        check_optimizer("my_optimizer")          # the name it is registered under (entry point)

The history the checks run on comes from, in this order: the optimizer class's `contract_example()` (see
`OptimizerBase.contract_example`), the examples below for mixopt's own optimizers, or a generic table of
static three-domain runs, which suits any optimizer that reads weights and `loss_<domain>` columns only.
Histories are synthetic (a known loss function of the weights, seeded numpy), small, and built without Ray,
MLflow or proxy training, so the whole contract runs in seconds per optimizer.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mixopt.optimizers import optimizer_class
from mixopt.optimizers.base import OptimizerBase, Proposal, Recommendation
from mixopt.runs import RunTable
from mixopt.schedules import make_schedule
from mixopt.spec import TargetSpec
from mixopt.target import apply_target, domain_caps
from mixopt.testing.examples import BUILTIN_EXAMPLES, ContractExample, _deep_frame, clone_history, static_history

#: Slack of the simplex check: mixtures must be non-negative and sum to 1 within this.
SIMPLEX_TOL = 1e-6
#: Slack of the caps check, on a weight (apply_target's own slack is 1e-9).
CAP_TOL = 1e-9

OptimizerRef = str | type[OptimizerBase]


def _class(optimizer: OptimizerRef) -> type[OptimizerBase]:
    return optimizer_class(optimizer) if isinstance(optimizer, str) else optimizer


def contract_example(optimizer: OptimizerRef) -> ContractExample:
    """The history and settings the checks run `optimizer` (a registered name or a class) on."""
    cls = _class(optimizer)
    own = cls.contract_example() if hasattr(cls, "contract_example") else None
    if own is not None:
        if isinstance(own, ContractExample):
            return own
        if isinstance(own, tuple) and len(own) == 2 and isinstance(own[0], RunTable):
            return ContractExample(own[0], settings=dict(own[1] or {}))
        raise AssertionError(f"{cls.__name__}.contract_example() must return a ContractExample or "
                             f"(RunTable, settings), not {type(own).__name__}")
    builder = BUILTIN_EXAMPLES.get(f"{cls.__module__}:{cls.__qualname__}")
    return builder() if builder is not None else ContractExample(static_history())


# ------------------------------------------------------------------------------------------ helpers


def _difference(a: Any, b: Any, path: str = "") -> str | None:
    """Where two nested results differ (None: equal); arrays compared exactly, NaN equal to NaN."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        a = dataclasses.asdict(a)
    if dataclasses.is_dataclass(b) and not isinstance(b, type):
        b = dataclasses.asdict(b)
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return f"{path or 'value'}: keys {list(a)} != {list(b)}"
        for k in a:
            d = _difference(a[k], b[k], f"{path}.{k}" if path else str(k))
            if d:
                return d
        return None
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a_, b_ = np.asarray(a), np.asarray(b)
        try:
            same = a_.shape == b_.shape and bool(np.array_equal(a_, b_, equal_nan=True))
        except TypeError:  # object arrays: compare element by element
            same = a_.shape == b_.shape and all(_difference(x, y) is None for x, y in zip(a_.ravel(), b_.ravel(),
                                                                                         strict=True))
        return None if same else f"{path or 'value'}: {a_!r} != {b_!r}"
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return f"{path or 'value'}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = _difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return None
    try:
        same = bool(a == b)
    except (TypeError, ValueError):
        same = False
    return None if same else f"{path or 'value'}: {a!r} != {b!r}"


def _fail(cls: type[OptimizerBase], check: str, message: str) -> AssertionError:
    return AssertionError(f"optimizer {cls.name!r} ({cls.__module__}.{cls.__qualname__}) breaks the contract "
                          f"[{check}]: {message}")


def _make(cls: type[OptimizerBase], ex: ContractExample, seed: int | None = None) -> OptimizerBase:
    return cls(seed=ex.seed if seed is None else seed, objective=ex.objective, **copy.deepcopy(ex.settings))


def _resolve(optimizer: OptimizerRef, example: ContractExample | None) -> tuple[type[OptimizerBase],
                                                                               ContractExample]:
    cls = _class(optimizer)
    return cls, (example or contract_example(cls)).fresh()


def _simplex_problem(weights: Any, domains: list[str]) -> str | None:
    if not isinstance(weights, dict):
        return f"weights are a {type(weights).__name__}, not a dict {{domain: weight}}"
    if list(weights) != list(domains):
        return f"keys {list(weights)} are not the history's domains {list(domains)} (in their order)"
    w = np.array([float(v) for v in weights.values()])
    if not np.isfinite(w).all():
        return f"non-finite weights {weights}"
    if (w < 0).any():
        return f"negative weights {weights}"
    if abs(w.sum() - 1.0) > SIMPLEX_TOL:
        return f"weights sum to {w.sum():.9g}, not 1 (±{SIMPLEX_TOL:g}): {weights}"
    return None


def _perturbed(history: RunTable) -> RunTable:
    """The same runs with other losses: a second history, to see whether one call leaks into the next."""
    out = clone_history(history)
    shift = 0.01 * (1 + np.arange(len(out.df)) % 3)
    for c in out.loss_columns:
        out.df[c] = pd.to_numeric(out.df[c], errors="coerce") + shift
    return out


# ------------------------------------------------------------------------------------------ the checks


def check_simplex(optimizer: OptimizerRef, example: ContractExample | None = None) -> None:
    """Every proposal and the recommendation are mixtures over exactly the history's domains.

    Why: the driver trains `Proposal.weights` as given and the job store writes them to `w_<domain>` columns; a
    mixture off the simplex or over other domains either fails the next RunTable load or trains the wrong
    data. A proposal's fidelity must be numbers and its schedule (online methods: the mixture is the run's
    initial one) a dict the trainer can turn into a mixing schedule.
    """
    cls, ex = _resolve(optimizer, example)
    h = ex.history
    opt = _make(cls, ex)
    for i, p in enumerate(opt.propose(h, ex.n)):
        if not isinstance(p, Proposal):
            raise _fail(cls, "simplex", f"proposal {i} is a {type(p).__name__}, not a Proposal")
        problem = _simplex_problem(p.weights, h.domains)
        if problem:
            raise _fail(cls, "simplex", f"proposal {i}: {problem}")
        if p.fidelity is not None and not all(isinstance(v, int | float) and math.isfinite(v)
                                              for v in p.fidelity.values()):
            raise _fail(cls, "simplex", f"proposal {i}: fidelity {p.fidelity} holds non-numeric values")
        if p.schedule is not None:
            try:
                make_schedule(p.schedule, p.weights)
            except (ValueError, TypeError) as e:
                raise _fail(cls, "simplex", f"proposal {i}: schedule {p.schedule} is not a valid mixing "
                            f"schedule ({e})") from None
    rec = opt.recommend(h, ex.target)
    if not isinstance(rec, Recommendation):
        raise _fail(cls, "simplex", f"recommend returned a {type(rec).__name__}, not a Recommendation")
    problem = _simplex_problem(rec.weights, h.domains)
    if problem:
        raise _fail(cls, "simplex", f"recommendation: {problem}")


def check_proposal_count(optimizer: OptimizerRef, example: ContractExample | None = None) -> None:
    """`propose(history, n)` returns exactly n proposals, and propose(history, 1) at least one.

    Why: the driver fills `parallelism` workers from one call; fewer proposals than asked leave workers idle
    (or, on a history where the optimizer has nothing left to propose, stall the search), more are dropped.
    The example's `n` is a count the optimizer can honour on its history (see ContractExample).
    """
    cls, ex = _resolve(optimizer, example)
    for n in sorted({1, ex.n}):
        got = _make(cls, ex).propose(ex.history, n)
        if len(got) != n:
            raise _fail(cls, "proposal count", f"asked for {n} proposals on a history of {len(ex.history)} "
                        f"runs, got {len(got)}")


def check_no_mutation(optimizer: OptimizerRef, example: ContractExample | None = None) -> None:
    """propose and recommend leave the run table exactly as they found it (frame, domains, token counts, notes).

    Why: the history is the search's record (the job store's table, a released benchmark CSV); an optimizer
    that sorts it, adds a column or rewrites a loss in place corrupts every later call and the exported runs.
    """
    cls, ex = _resolve(optimizer, example)
    h = ex.history
    before = _deep_frame(h.df)
    meta = (list(h.domains), copy.deepcopy(h.token_counts), list(h.notes), h.source)
    opt = _make(cls, ex)
    for call, run in (("propose", lambda: opt.propose(h, ex.n)), ("recommend", lambda: opt.recommend(h, ex.target))):
        run()
        try:
            pd.testing.assert_frame_equal(h.df, before, check_exact=True)
        except AssertionError as e:
            raise _fail(cls, "no mutation", f"{call} changed the history's frame: {e}") from None
        now = (list(h.domains), h.token_counts, list(h.notes), h.source)
        if now != meta:
            raise _fail(cls, "no mutation", f"{call} changed the run table's domains, token counts, notes or "
                        f"source: {meta} -> {now}")


def check_determinism(optimizer: OptimizerRef, example: ContractExample | None = None) -> None:
    """Two fresh instances with the same seed give identical proposals and recommendations on the same history.

    Why: a killed search resumes by calling a new optimizer on the stored table; it must propose what the lost
    driver would have proposed, or the search's design (CLIMB's rounds, a factorial law design) is broken.
    """
    cls, ex = _resolve(optimizer, example)
    a, b = _make(cls, ex), _make(cls, ex)
    d = _difference(a.propose(ex.history, ex.n), b.propose(clone_history(ex.history), ex.n), "proposals")
    if d:
        raise _fail(cls, "determinism", f"two instances with seed {ex.seed} proposed differently: {d}")
    d = _difference(a.recommend(ex.history, ex.target).to_dict(),
                    b.recommend(clone_history(ex.history), ex.target).to_dict(), "recommendation")
    if d:
        raise _fail(cls, "determinism", f"two instances with seed {ex.seed} recommended differently: {d}")


def check_purity(optimizer: OptimizerRef, example: ContractExample | None = None) -> None:
    """An instance that has already worked (on this history and on another) answers as it did when fresh.

    Why: the driver keeps one optimizer for a whole search and calls it on a growing table; a memo or a
    counter carried between calls would make its answer depend on the calls before (and a resumed search,
    which starts with a fresh instance, diverge from the original). The other history has the same runs with
    other losses, so a memo keyed on the wrong thing shows up.
    """
    cls, ex = _resolve(optimizer, example)
    h, other = ex.history, _perturbed(ex.history)
    opt = _make(cls, ex)
    first_props, first_rec = opt.propose(h, ex.n), opt.recommend(h, ex.target).to_dict()  # a fresh one's answers
    opt.propose(other, ex.n)
    opt.recommend(other, ex.target)
    d = _difference(opt.propose(h, ex.n), first_props, "proposals")
    if d:
        raise _fail(cls, "purity", f"after earlier calls, propose differs from a fresh instance's: {d}")
    d = _difference(opt.recommend(h, ex.target).to_dict(), first_rec, "recommendation")
    if d:
        raise _fail(cls, "purity", f"after earlier calls, recommend differs from a fresh instance's: {d}")


def cap_target(rec: Recommendation, history: RunTable, base: TargetSpec | None) -> tuple[TargetSpec, str]:
    """A target under which the recommendation's heaviest domain would repeat twice as often as allowed.

    The target keeps `base`'s size and tokens (or trains on as many tokens as the corpus holds) and sets that
    domain's max_epochs to half the epochs the recommendation would give it; every other domain may repeat
    freely, so a mixture within the caps exists.
    """
    if not history.token_counts:
        raise AssertionError("the caps check needs a history with token counts (RunTable(..., token_counts=...))")
    counts = history.token_counts
    tokens = base.tokens if base is not None and base.tokens else float(sum(counts.values()))
    heavy = max(rec.weights, key=lambda d: rec.weights[d])
    epochs = rec.weights[heavy] * tokens / counts[heavy]
    fields = base.model_dump() if base is not None else {}
    fields.update(tokens=tokens, max_epochs=1e6, max_epochs_per_domain={heavy: epochs / 2})
    return TargetSpec.model_validate(fields), heavy


def check_caps(optimizer: OptimizerRef, example: ContractExample | None = None) -> None:
    """With a target that caps a domain below the recommended weight, the target step brings it within the cap.

    Why: `mixopt.recommend` and the search pass every recommendation through `apply_target` with the target's
    repetition caps; whatever the optimizer did with the target, the mixture that comes out must respect them
    and stay on the simplex. The cap is set at half the heaviest domain's weight in the optimizer's own
    recommendation, so it binds unless the optimizer already honours the target's caps itself.
    """
    cls, ex = _resolve(optimizer, example)
    h = ex.history
    first = _make(cls, ex).recommend(h, ex.target)
    target, heavy = cap_target(first, h, ex.target)
    assert h.token_counts is not None
    caps = domain_caps(h.domains, h.token_counts, target)
    rec = _make(cls, ex).recommend(h, target)
    out = apply_target(rec, h.token_counts, target)
    problem = _simplex_problem(out.weights, h.domains)
    if problem:
        raise _fail(cls, "caps", f"after apply_target: {problem}")
    over = {d: (w, float(c)) for (d, w), c in zip(out.weights.items(), caps, strict=True) if w > c + CAP_TOL}
    if over:
        raise _fail(cls, "caps", f"after apply_target, domain(s) over their cap (weight, cap): {over}; target "
                    f"caps {heavy!r} at {target.max_epochs_per_domain[heavy]:.3g} epochs of {target.tokens:.3g} "
                    "tokens")


#: The checks `check_optimizer` runs, by name.
CHECKS: dict[str, Callable[[OptimizerRef, ContractExample | None], None]] = {
    "simplex": check_simplex,
    "proposal_count": check_proposal_count,
    "no_mutation": check_no_mutation,
    "determinism": check_determinism,
    "purity": check_purity,
    "caps": check_caps,
}


def check_optimizer(optimizer: OptimizerRef, example: ContractExample | None = None,
                    checks: Sequence[str] | None = None) -> None:
    """Run the contract's checks (all, or those named) on a registered optimizer or an optimizer class.

    Raises AssertionError at the first broken promise. The example history is built once and each check gets
    its own copy of it.
    """
    cls = _class(optimizer)
    ex = example or contract_example(cls)
    unknown = sorted(set(checks or ()) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown contract check(s) {unknown}; the checks are: {', '.join(CHECKS)}")
    for name in checks or list(CHECKS):
        CHECKS[name](cls, ex)
