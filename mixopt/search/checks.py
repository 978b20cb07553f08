"""The checks of a search spec that need the optimizer: its name, its settings and what it needs to recommend.

They live in the search layer, not in `mixopt.spec`, so the specs import no optimizer: reading a job folder
(`mixopt status`, `runs`, `report`) parses its spec without loading optimizer code, and an optimizer renamed or
uninstalled later leaves old jobs readable. Everything that runs a search (`mixopt submit`, `Search`, resume)
passes through `check_search` before anything is trained or written.
"""

from __future__ import annotations

from pathlib import Path

from mixopt.errors import InputError
from mixopt.optimizers import optimizer_class
from mixopt.settings import validate_settings
from mixopt.spec import WEIGHT_TOLERANCE, SearchSpec

LIST_THEM = "use `mixopt optimizers` to list them"


def load_search_spec(path: str | Path) -> SearchSpec:
    """A search spec from YAML, checked in full (its structure and its optimizer), ready to run."""
    spec = SearchSpec.from_yaml(path)
    check_search(spec, str(path))
    return spec


def check_search(spec: SearchSpec, where: str = "search spec") -> None:
    """Refuse a spec whose optimizer is unknown, whose settings that optimizer does not take, or that cannot
    recommend within its budget; one `InputError` naming `where`, the field and the fix."""
    opt = spec.optimizer
    try:
        cls = optimizer_class(opt.name)
    except ValueError as e:
        raise InputError(f"{where}: optimizer", str(e), LIST_THEM) from None
    try:
        settings = validate_settings(opt.name, cls.Settings, opt.settings)
    except ValueError as e:
        fix = "remove it or correct its spelling" if "has no setting" in str(e) else "correct the value"
        raise InputError(f"{where}: optimizer", str(e), fix) from None
    problem = _whole_spec_problem(spec)
    if problem is None:
        need = cls.runs_needed(settings)
        if need is not None and spec.budget.runs < need:
            problem = (f"budget.runs is {spec.budget.runs}, but {opt.name} needs at least {need} successful runs "
                       f"to recommend (optimizer.min_runs): raise budget.runs to {need} or more, or lower "
                       "optimizer.min_runs")
    if problem is not None:
        raise InputError(f"{where}: (top level)", problem, "correct the value")


def _whole_spec_problem(spec: SearchSpec) -> str | None:
    """Settings that only make sense against the rest of the spec (its scales, target and domains)."""
    st = spec.optimizer.settings
    if spec.optimizer.name == "scaling":  # checked before any run, not after the budget is spent
        if len(st.get("fidelities") or []) < 2 or len(spec.proxies) < 2:
            return ("the scaling optimizer needs proxies at two or more scales: list them under `fidelities:` "
                    "and in optimizer.fidelities, e.g. [{level: 0}, {level: 1}]")
        if not ((spec.target and spec.target.params) or st.get("target_params")) or not (
                (spec.target and spec.target.tokens) or st.get("target_tokens")):
            return ("the scaling optimizer solves at the target's N and D: give `target: {params: ..., tokens: "
                    "...}` (or optimizer.target_params / target_tokens)")
    prior = st.get("prior")
    if isinstance(prior, dict):
        domains = list(spec.dataset.domains)
        unknown = sorted(set(prior) - set(domains))
        if unknown:
            return f"optimizer.prior names unknown domain(s) {unknown}; the dataset has {domains}"
        total = sum(float(v) for v in prior.values())
        if any(float(v) < 0 for v in prior.values()) or abs(total - 1.0) > WEIGHT_TOLERANCE:
            return f"optimizer.prior must be non-negative shares summing to 1 (sums to {total:.6g}); rescale it"
    return None
