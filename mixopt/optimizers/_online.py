"""What the online methods (Aioli, DoReMi) share: reading their runs back from the run table and turning the
proportions they followed into a recommendation.

An online run's row carries its `schedule` (the dict it was proposed with), its `trajectory` (the mixture in
force from each step on, as the trainer recorded it) and `steps`. From those, this module rebuilds each run's
*proportion path* — the mixtures the method itself chose, as a step function of the fraction of training — and
averages the paths of all successful runs into
- a static mixture for a full-scale run: the time-average of the path or its final value (`static` setting);
- a piecewise schedule (`{"name": "piecewise", "stages": [...]}`) that the trainer can replay at any length.

A method whose trajectory holds mixtures it did not choose (Aioli's LearnParams probes) passes a `path`
function that keeps only its own. Pure functions of the run table: no state, no randomness.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pandas as pd

from mixopt.errors import InputError
from mixopt.optimizers.base import OptimizerBase, Recommendation, mixture_dict
from mixopt.runs import RunTable

#: A proportion path: [(first step, weights vector)], sorted, starting at step 0.
Path = list[tuple[int, np.ndarray]]
PathFn = Callable[[dict[str, Any], list[dict[str, Any]], int, list[str]], Path]
StaticChoice = Literal["average", "final", "sampled"]


def _json(value: Any) -> Any:
    """Run tables loaded from CSV hold the schedule and trajectory as text: JSON, or the Python literal pandas
    writes for a list or dict (`mixopt runs --format csv`)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return ast.literal_eval(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def schedule_name(value: Any) -> str | None:
    sched = _json(value)
    return sched.get("name") if isinstance(sched, dict) else None


def vector(weights: dict[str, float], domains: list[str]) -> np.ndarray:
    return np.array([float(weights.get(d, 0.0)) for d in domains])


def trajectory_path(schedule: dict[str, Any], trajectory: list[dict[str, Any]], steps: int,
                    domains: list[str]) -> Path:
    """The trajectory as it was trained: every recorded change is the method's own choice (DoReMi)."""
    return [(int(p["step"]), vector(p["weights"], domains)) for p in trajectory]


def path_average(path: Path, steps: int, lo: float = 0.0, hi: float | None = None) -> np.ndarray:
    """Mean of a step-function path over steps [lo, hi) (default: the whole run)."""
    hi = steps if hi is None else hi
    acc = np.zeros_like(path[0][1])
    for i, (start, w) in enumerate(path):
        end = path[i + 1][0] if i + 1 < len(path) else steps
        acc += w * max(0.0, min(end, hi) - max(start, lo))
    return acc / acc.sum() if acc.sum() > 0 else path_at(path, lo) / path_at(path, lo).sum()


def path_at(path: Path, step: float) -> np.ndarray:
    current = path[0][1]
    for start, w in path:
        if start > step + 1e-6:
            break
        current = w
    return current


def online_runs(history: RunTable, name: str) -> pd.DataFrame:
    """Successful rows that trained with schedule `name`; each must carry its trajectory and step count."""
    df = history.df
    if "schedule" not in df.columns:
        return df.iloc[0:0]
    mine = df[(df["status"] == "ok") & df["schedule"].map(lambda s: schedule_name(s) == name)]
    for col in ("trajectory", "steps"):
        if len(mine) and (col not in mine.columns or mine[col].isna().any()):
            raise InputError(f"{history.source}: {col}", f"{name} runs without their {col}",
                             "load the run table from the job store (it records trajectory and steps)")
    return mine


def piecewise_export(paths: list[tuple[Path, int]], domains: list[str], max_stages: int = 100) -> dict[str, Any]:
    """The mean of several runs' paths as a piecewise schedule over fractions of training.

    A path that changes more often than `max_stages` times (DoReMi updates every step) is time-averaged over
    `max_stages` equal slices of training instead, so a replay at any length stays a short list of stages.
    """
    fracs = sorted({start / steps for path, steps in paths for start, _ in path if start < steps} | {0.0})
    exact = len(fracs) <= max_stages
    if not exact:
        fracs = [i / max_stages for i in range(max_stages)]
    stages: list[dict[str, Any]] = []
    for i, f in enumerate(fracs):
        until = fracs[i + 1] if i + 1 < len(fracs) else 1.0
        if exact:
            w = np.mean([path_at(path, f * steps) for path, steps in paths], axis=0)
        else:
            w = np.mean([path_average(path, steps, f * steps, until * steps) for path, steps in paths], axis=0)
        weights = exact_simplex(mixture_dict(domains, w / w.sum()))
        if stages and stages[-1]["weights"] == weights:
            stages[-1]["until"] = until
        else:
            stages.append({"until": until, "weights": weights})
    return {"name": "piecewise", "stages": stages}


def exact_simplex(weights: dict[str, float]) -> dict[str, float]:
    """Weights whose float sum is exactly 1, so the trainer's renormalisation leaves them unchanged (a replayed
    stage then compares equal to the mixture in force and is not re-recorded at every step)."""
    out = dict(weights)
    big = max(out, key=out.get)
    for _ in range(4):
        out[big] += 1.0 - sum(out.values())
        if sum(out.values()) == 1.0:
            break
    return out


def online_recommendation(opt: OptimizerBase, history: RunTable, name: str, static: StaticChoice,
                          path_fn: PathFn = trajectory_path, notes: list[str] | None = None,
                          max_stages: int = 100) -> Recommendation:
    """Average the proportion paths of the successful `name` runs into a static mixture and a schedule."""
    runs = online_runs(history, name)
    if runs.empty:
        raise InputError(history.source, f"{opt.name} needs at least one successful run with the {name} schedule",
                         "train its proposals first (mixopt submit / resume)")
    domains = history.domains
    paths: list[tuple[Path, int]] = []
    per_run = []
    ids = history.run_ids()
    for i, row in runs.iterrows():
        steps = int(row["steps"])
        path = path_fn(_json(row["schedule"]), _json(row["trajectory"]), steps, domains)
        paths.append((path, steps))
        sampled = _json(row.get("mean_weights")) or {}
        seed = row.get("seed")
        per_run.append({"run_id": ids[i], "seed": None if seed is None or pd.isna(seed) else int(seed),
                        "average": path_average(path, steps), "final": path[-1][1] / path[-1][1].sum(),
                        "sampled": vector(sampled, domains) if sampled else path_average(
                            trajectory_path({}, _json(row["trajectory"]), steps, domains), steps)})
    summary = {k: np.mean([r[k] for r in per_run], axis=0) for k in ("average", "final", "sampled")}
    summary = {k: v / v.sum() for k, v in summary.items()}
    y = history.objective(opt.objective)[runs.index.to_numpy()]
    details: dict[str, Any] = {
        "static": static,
        "average": mixture_dict(domains, summary["average"]),
        "final": mixture_dict(domains, summary["final"]),
        "sampled_average": mixture_dict(domains, summary["sampled"]),
        "schedule": piecewise_export(paths, domains, max_stages),
        "online_objective": {"mean": float(np.nanmean(y)), "std": float(np.nanstd(y, ddof=1)) if len(y) > 1
                             else None, "runs": len(y)},
        "per_run": [{"run_id": r["run_id"], "seed": r["seed"],
                     "average": mixture_dict(domains, r["average"]), "final": mixture_dict(domains, r["final"])}
                    for r in per_run],
    }
    out_notes = list(notes or [])
    out_notes.append(f"{static} proportions of {len(runs)} {name} run(s); the schedule export replays the mean "
                     "path (details.schedule)")
    out_notes.append("online_objective is what the online runs themselves reached; a static run on the "
                     "recommended mixture has not been measured")
    return opt._recommendation(summary[static], history, runs_used=[r["run_id"] for r in per_run],
                               notes=out_notes, details=details)
