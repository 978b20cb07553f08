"""`mfbo`: ADMIRE-BayesOpt (arXiv 2508.11551) — multi-fidelity Bayesian optimisation over the simplex.

Proxies are expensive and small ones are imperfect, so each proposal is a mixture *and* a fidelity (a proxy size
and/or token budget from the proxy zoo), chosen for the information it gives about the best mixture at the target
fidelity per unit of cost (docs/methods.md §2).

Surrogate. `surrogate: multitask` (default) is an intrinsic-coregionalisation GP over (mixture, fidelity level):
k = k_w(w, w')·B[l, l'] with a learned, positive level covariance B, one constant mean per level and one noise
per level (BoTorch's MultiTaskGP). Loss scales differ across proxy sizes (RegMix's 1M losses sit ~1 nat above the
60M ones), so a per-level mean matters. `surrogate: downsampling` is BoTorch's SingleTaskMultiFidelityGP with the
cost fraction s as a continuous input (ADMIRE's model; `linear_truncated=False`, which fits reliably here).
Outcomes are standardised once over all training runs (the GP is built on standardised values, so pending runs can
be added as "believer" observations without re-standardising).

Simplex. The GP sees sqrt(w) by default: the square root maps the simplex onto a sphere where Euclidean distance is
the Hellinger distance, so small domains (0.001 vs 0.01) count. `ilr` (isometric log-ratio with a 1e-3 pseudo
count) and `none` (raw weights) are the alternatives; benchmarks/mfbo_pool.py measures them.

Acquisition. `mes`: BoTorch's multi-fidelity max-value entropy, divided by the level's cost (ADMIRE's choice).
`kg`: discrete knowledge gradient — the expected rise of the best posterior mean over the target-level candidates
after one more observation, per unit cost. `mode: single`: single-fidelity BO with qLogNEI at the target level.
Candidates are discrete: RegMix's sampler under the repetition caps plus Dirichlet perturbations of the best
mixtures so far (live), or the rows of a run table (pool mode, ADMIRE's protocol). Batches are chosen greedily;
each chosen point and each pending run of the history is added as a believer observation (its posterior mean), which
shrinks the variance around it so the next pick goes elsewhere (qLogNEI integrates over pending points itself).

Cost. Per level: given (`costs`); measured (`cost_model: measured`: mean `seconds` of the history's finished runs
at that level, once every level has one); else FLOPs: the mean `fid_flops` the driver recorded for the runs at
each level (once every level has a run, pending ones included), before that 6·params·tokens from the level's
mapping (a level that names only one of them is costed by that one; `flops` is taken as given).

Purity and speed. Everything is a function of the run table and the seed. Kernel hyper-parameters are refitted only
when the usable history has grown by `refit_growth` since the last refit point, on that prefix of the history, and
the fit is memoised in-process; the result equals a fresh refit, so resuming gives the same proposals. The GP's
training set is bounded (`max_train`): every target-level run, then the best and an even spread of the others.
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, model_validator

from mixopt.errors import InputError
from mixopt.optimizers._surrogate import CapSettings, resolve_caps, resolve_prior
from mixopt.optimizers.base import OptimizerBase, Proposal, Recommendation, mixture_dict
from mixopt.optimizers.pool import unused_rows
from mixopt.predictors.gp import embed
from mixopt.runs import RunTable
from mixopt.simplex import dirichlet, distance_to_prior, kl_to_prior, sample_mixtures
from mixopt.spec import TargetSpec

log = logging.getLogger(__name__)

ILR_PSEUDO = 1e-3
_FIT_CACHE: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
_FIT_CACHE_SIZE = 64


class MFBOSettings(CapSettings):
    kl_lambda: float = Field(default=0.05, ge=0, description="the recommendation minimises the posterior mean + "
                             "kl_lambda·KL(w ‖ prior) over the candidates; 0: the posterior-mean best (ADMIRE)")
    kl_grid: list[float] = Field(default=[0.0, 0.01, 0.05, 0.2], description="other kl_lambda values whose "
                                 "choices are listed as candidates for the verification ladder")
    mode: Literal["multi", "single"] = Field(default="multi", description="multi: choose mixture and fidelity "
                                             "(MES/KG per cost); single: qLogNEI at the target fidelity only")
    fidelities: list[dict[str, float]] | None = Field(
        default=None, description="the levels a proposal may use, e.g. [{level: 0}, {level: 1}] (the search's "
        "proxy, then its `fidelities:`) or [{params: 1e6}, {params: 6e7}] (nearest proxy) or with tokens; keys "
        "match the run table's fid_<name> columns; null: the distinct fidelities of the pool (pool mode)")
    costs: list[float] | None = Field(default=None, description="cost of one run at each level (any unit)")
    cost_model: Literal["flops", "measured"] = Field(
        default="flops", description="without costs: 6·params·tokens, or the mean `seconds` of finished runs")
    target: int = Field(default=-1, description="index of the target level in fidelities (the costliest)")
    acquisition: Literal["mes", "kg"] = "mes"
    surrogate: Literal["multitask", "downsampling"] = "multitask"
    transform: Literal["sqrt", "ilr", "none"] = Field(default="sqrt", description="what the GP sees of a mixture")
    n_init: int = Field(default=4, ge=1, description="random runs (at the cheapest level) before the first fit")
    n_candidates: int = Field(default=1024, ge=1, description="sampler mixtures scored per proposal (live)")
    n_local: int = Field(default=256, ge=0, description="extra candidates around the best mixtures (live)")
    max_train: int = Field(default=256, ge=8, description="most runs the GP conditions on")
    max_fit: int = Field(default=160, ge=8, description="most runs the hyper-parameters are fitted on")
    fit_maxiter: int = Field(default=100, ge=1, description="L-BFGS iterations of a hyper-parameter fit")
    refit_growth: float = Field(default=1.3, gt=1, description="refit hyper-parameters when the usable history "
                                "has grown by this factor")
    num_mv_samples: int = Field(default=16, ge=1, description="MES: max-value samples")
    kg_samples: int = Field(default=32, ge=2, description="KG: normal quantiles of the fantasy observation")
    pool: str | None = Field(default=None, description="run table (CSV/Parquet) whose rows are the only "
                             "allowed proposals (retrospective studies)")

    @model_validator(mode="after")
    def _levels_consistent(self) -> MFBOSettings:
        if self.fidelities is not None:
            if not self.fidelities or any(not f for f in self.fidelities):
                raise ValueError("fidelities must list at least one level, each a non-empty mapping")
            for f in self.fidelities:
                for k, v in f.items():
                    if k == "level" and not (v >= 0 and float(v).is_integer()):
                        raise ValueError(f"fidelity level {v} must be an index (0, 1, ...) into the search's proxies")
                    if k != "level" and not (math.isfinite(v) and v > 0):
                        raise ValueError(f"fidelity value {k}={v} must be a positive number")
            if not -len(self.fidelities) <= self.target < len(self.fidelities):
                raise ValueError(f"target {self.target} is not an index into the {len(self.fidelities)} fidelities")
        if self.costs is not None:
            if self.fidelities is not None and len(self.costs) != len(self.fidelities):
                raise ValueError("costs needs one number per entry of fidelities")
            if any(not (math.isfinite(c) and c > 0) for c in self.costs):
                raise ValueError("costs must be positive numbers")
        return self


# ---------------------------------------------------------------------------------------------- fidelity levels


@dataclass
class Levels:
    """The fidelity levels, their costs, and which is the target; `scale` = cost / target cost, in (0, 1]."""

    values: list[dict[str, float]]
    costs: np.ndarray
    target: int
    notes: list[str] = field(default_factory=list)

    @property
    def scale(self) -> np.ndarray:
        return self.costs / self.costs[self.target]

    def of(self, table: RunTable) -> np.ndarray:
        """Level of each row from its fid_ columns (-1: none). `level` must match exactly; numeric keys (params,
        tokens, ...) pick the nearest level on a log scale, within a factor of 3 — the driver trains the proxy
        nearest to the asked-for size and records what it actually trained (e.g. fid_params = 0.84e6 for a
        level asking for 1e6)."""
        dist = np.full((len(self.values), len(table)), np.inf)
        for j, lv in enumerate(self.values):
            d = np.zeros(len(table))
            for k, v in lv.items():
                col = f"fid_{k}"
                if col not in table.df.columns:
                    d[:] = np.inf
                    break
                x = pd.to_numeric(table.df[col], errors="coerce").to_numpy(dtype=float)
                with np.errstate(divide="ignore", invalid="ignore"):
                    dk = (np.where(np.isclose(x, v), 0.0, np.inf) if k == "level"
                          else np.abs(np.log(np.where(x > 0, x, np.nan) / v)))
                d = np.maximum(d, np.where(np.isfinite(dk), dk, np.inf))
            dist[j] = d
        if len(table) == 0:
            return np.zeros(0, dtype=int)
        best = np.argmin(dist, axis=0)
        return np.where(dist[best, np.arange(len(table))] <= np.log(3.0), best, -1)


def _flops(level: dict[str, float]) -> float | None:
    if "flops" in level:
        return level["flops"]
    if "params" in level and "tokens" in level:
        return 6.0 * level["params"] * level["tokens"]
    for k in ("params", "tokens"):
        if k in level:
            return level[k]
    return None


def resolve_levels(s: MFBOSettings, history: RunTable, pool: RunTable | None = None) -> Levels | None:
    """Levels from the settings, else from the pool's distinct fid_ values; None if neither names any."""
    values = [dict(v) for v in s.fidelities] if s.fidelities is not None else None
    if values is None:
        if pool is None:
            return None
        table = pool
        cols = [c for c in table.df.columns if c.startswith("fid_")]
        if not cols:
            return None
        F = table.df[cols].apply(pd.to_numeric, errors="coerce").dropna().drop_duplicates()
        values = [{c[4:]: float(x) for c, x in zip(cols, row, strict=True)} for row in F.to_numpy()]
        if not values:
            return None
        if s.costs is None:
            if any(_flops(v) is None for v in values):
                raise InputError("optimizer.costs", f"cannot cost the fidelity levels {values} from params/tokens",
                                 "give optimizer.costs, one per level")
            values.sort(key=_flops)
    notes: list[str] = []
    if s.costs is not None:
        if len(s.costs) != len(values):
            raise InputError("optimizer.costs", f"{len(s.costs)} costs for {len(values)} fidelity levels",
                             "give one cost per level")
        costs = np.array(s.costs, dtype=float)
    else:
        flops = [_flops(v) for v in values]
        costs = None
        if s.cost_model == "measured":
            costs = _measured_costs(history, values, "seconds", finished=True)
            if costs is None:
                notes.append("no finished run yet at some level: FLOPs-based costs used")
        if costs is None:  # the FLOPs the driver recorded for what it trained, once every level has a run
            costs = _measured_costs(history, values, "fid_flops", finished=False)
        if costs is None:
            if any(f is None for f in flops):
                raise InputError("optimizer.fidelities", "a level names neither params nor tokens, so its "
                                 "FLOPs cannot be computed", "give optimizer.costs, one per level")
            costs = np.array(flops, dtype=float)
    target = s.target % len(values)
    if costs[target] < costs.max() * (1 - 1e-9):
        raise InputError("optimizer.target", f"the target level {values[target]} is not the costliest level",
                         "make the target the largest proxy (the default, -1, is the last level listed)")
    return Levels(values, costs, target, notes)


def _measured_costs(history: RunTable, values: list[dict[str, float]], column: str, finished: bool
                    ) -> np.ndarray | None:
    """Mean of `column` per level over the history's runs (finished ones only if asked); None if a level has none."""
    if column not in history.df.columns or len(history) == 0:
        return None
    lv = Levels(values, np.ones(len(values)), 0).of(history)
    x = pd.to_numeric(history.df[column], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(x) & (x > 0)
    if finished:
        ok &= (history.df["status"] == "ok").to_numpy()
    out = []
    for j in range(len(values)):
        m = ok & (lv == j)
        if not m.any():
            return None
        out.append(float(x[m].mean()))
    return np.array(out)


# ---------------------------------------------------------------------------------------------- GP plumbing


def embed_mixtures(W: np.ndarray, transform: str) -> np.ndarray:
    """What the GP sees of a mixture: sqrt(w), raw w, or the isometric log-ratio of w (pseudo count 1e-3)."""
    if transform != "ilr":
        return embed(W, transform)  # type: ignore[arg-type]
    W = np.clip(np.asarray(W, dtype=float), 0, None) + ILR_PSEUDO
    clr = np.log(W / W.sum(axis=1, keepdims=True))
    clr -= clr.mean(axis=1, keepdims=True)
    k = W.shape[1]
    H = np.zeros((k, k - 1))  # orthonormal basis of the zero-sum hyperplane (Helmert contrasts)
    for j in range(1, k):
        H[:j, j - 1] = 1.0 / j
        H[j, j - 1] = -1.0
        H[:, j - 1] /= np.linalg.norm(H[:, j - 1])
    return clr @ H / (2 * np.log(1 / ILR_PSEUDO))  # about unit range, as the kernel's length-scale prior expects


def _build(kind: str, TX: torch.Tensor, TY: torch.Tensor, n_levels: int, target: int = 0):
    from botorch.exceptions.warnings import InputDataWarning
    from botorch.models import MultiTaskGP, SingleTaskGP, SingleTaskMultiFidelityGP

    with warnings.catch_warnings():
        # Outcomes are standardised on the fit prefix, so the whole set is only close to standard: expected.
        warnings.simplefilter("ignore", InputDataWarning)
        if kind == "multitask":  # one output (the target level) when X omits the level; X with it picks its level
            return MultiTaskGP(TX, TY, task_feature=-1, outcome_transform=None, all_tasks=list(range(n_levels)),
                               output_tasks=[target])
        if kind == "downsampling":
            return SingleTaskMultiFidelityGP(TX, TY, data_fidelities=[TX.shape[-1] - 1], linear_truncated=False,
                                             outcome_transform=None)
        return SingleTaskGP(TX, TY, outcome_transform=None)


def _fitted_state(kind: str, TX: torch.Tensor, TY: torch.Tensor, n_levels: int, target: int, seed: int,
                  maxiter: int) -> dict[str, torch.Tensor]:
    """Hyper-parameters fitted by marginal likelihood; memoised on the exact data, so a rerun gives the same."""
    from botorch.fit import fit_gpytorch_mll
    from gpytorch.mlls import ExactMarginalLogLikelihood

    h = hashlib.sha256(f"{kind}|{n_levels}|{target}|{seed}|{maxiter}|{tuple(TX.shape)}".encode())
    h.update(TX.numpy().tobytes())
    h.update(TY.numpy().tobytes())
    key = h.hexdigest()
    if key in _FIT_CACHE:
        _FIT_CACHE.move_to_end(key)
        return _FIT_CACHE[key]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = _build(kind, TX, TY, n_levels, target)
        try:
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model),
                             optimizer_kwargs={"options": {"maxiter": maxiter}})
        except Exception as e:  # keep the prior's hyper-parameters rather than stopping a search
            log.warning("GP hyper-parameter fit failed (%s); using the prior's values", e)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    _FIT_CACHE[key] = state
    while len(_FIT_CACHE) > _FIT_CACHE_SIZE:
        _FIT_CACHE.popitem(last=False)
    return state


@dataclass
class Surrogate:
    """A GP with fixed hyper-parameters on standardised, maximised outcomes (y = −objective)."""

    kind: str  # multitask | downsampling | single
    levels: Levels | None
    transform: str
    state: dict[str, torch.Tensor]
    TX: torch.Tensor
    TY: torch.Tensor
    mu: float
    sd: float
    model: Any = None

    def __post_init__(self) -> None:
        self.model = self._with(self.TX, self.TY)

    @property
    def n_levels(self) -> int:
        return len(self.levels.values) if self.levels else 1

    def _with(self, TX: torch.Tensor, TY: torch.Tensor):
        model = _build(self.kind, TX, TY, self.n_levels, self.levels.target if self.levels else 0)
        model.load_state_dict(self.state)
        model.eval()
        return model

    def inputs(self, W: np.ndarray, level: np.ndarray | int | None = None) -> torch.Tensor:
        Z = embed_mixtures(W, self.transform)
        if self.kind == "single":
            return torch.as_tensor(Z, dtype=torch.float64)
        lv = np.broadcast_to(np.asarray(self.levels.target if level is None else level), (len(Z),))
        col = lv.astype(float) if self.kind == "multitask" else self.levels.scale[lv]
        return torch.as_tensor(np.column_stack([Z, col]), dtype=torch.float64)

    def project(self, X: torch.Tensor) -> torch.Tensor:
        """The same mixtures at the target level."""
        if self.kind == "single":
            return X
        X = X.clone()
        X[..., -1] = float(self.levels.target) if self.kind == "multitask" else 1.0
        return X

    def cost(self, X: torch.Tensor) -> torch.Tensor:
        """Cost of each point relative to one target-level run (for the cost-aware utility)."""
        if self.kind == "single":
            return torch.ones(X.shape[:-1], dtype=X.dtype)
        if self.kind == "downsampling":
            return X[..., -1]
        scale = torch.as_tensor(self.levels.scale, dtype=X.dtype)
        return scale[X[..., -1].round().long()]

    def mean_sd(self, X: torch.Tensor, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd in standardised maximisation units."""
        means, sds = [], []
        with torch.no_grad():
            for i in range(0, len(X), chunk):
                post = self.model.posterior(X[i:i + chunk])
                means.append(post.mean.squeeze(-1).numpy())
                sds.append(post.variance.clamp_min(0).sqrt().squeeze(-1).numpy())
        return (np.concatenate(means), np.concatenate(sds)) if means else (np.zeros(0), np.zeros(0))

    def to_objective(self, m: np.ndarray) -> np.ndarray:
        return -(np.asarray(m) * self.sd + self.mu)

    def believe(self, X_pending: torch.Tensor) -> Surrogate:
        """The same GP with pending points observed at their posterior mean (kriging believer)."""
        if len(X_pending) == 0:
            return self
        with torch.no_grad():
            m = self.model.posterior(X_pending).mean.reshape(-1, 1)
        out = Surrogate.__new__(Surrogate)
        out.__dict__.update(self.__dict__)
        out.TX, out.TY = torch.cat([self.TX, X_pending]), torch.cat([self.TY, m])
        out.model = out._with(out.TX, out.TY)
        return out


# ---------------------------------------------------------------------------------------------- the optimizer


@dataclass
class _Data:
    """The usable runs, as the GP will see them."""

    W: np.ndarray
    level: np.ndarray
    y: np.ndarray  # maximisation: −objective
    pending_W: np.ndarray
    pending_level: np.ndarray
    notes: list[str]
    run_ids: list[str]


class MFBO(OptimizerBase):
    name = "mfbo"
    Settings = MFBOSettings
    settings: MFBOSettings

    # ------------------------------------------------------------------------------------------ contract

    def propose(self, history: RunTable, n: int) -> list[Proposal]:
        if self.settings.pool is not None:
            pool = RunTable.from_file(self.settings.pool)
            levels = self._levels(history, pool)
            rows = self.propose_pool(history, pool, n)
            lv = levels.of(pool) if levels else None
            return [Proposal(mixture_dict(pool.domains, pool.weights[i]),
                             fidelity=dict(levels.values[lv[i]]) if levels else None) for i in rows]
        levels = self._levels(history)
        W, L = self._live_candidates(history, levels)
        picked = self._choose(history, levels, W, L, n)
        return [Proposal(mixture_dict(history.domains, W[i]),
                         fidelity=dict(levels.values[L[i]]) if levels else None) for i in picked]

    def propose_pool(self, history: RunTable, pool: RunTable, n: int) -> list[int]:
        """Indices of `n` pool rows to run next; only rows the history does not already hold, never others."""
        levels = self._levels(history, pool)
        free = unused_rows(pool, history)
        lv = levels.of(pool) if levels else np.zeros(len(pool), dtype=int)
        free &= lv >= 0
        if self.settings.mode == "single" and levels:
            free &= lv == levels.target
        caps = self._caps(history)
        if caps is not None:
            free &= (pool.weights <= caps[None, :] + 1e-9).all(axis=1)
        idx = np.flatnonzero(free)
        if len(idx) == 0:
            return []
        picked = self._choose(history, levels, pool.weights[idx], lv[idx], min(n, len(idx)))
        return [int(idx[i]) for i in picked]

    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        return self.recommend_pool(history, self._pool_table(), target)

    def recommend_pool(self, history: RunTable, pool: RunTable | None, target: TargetSpec | None = None
                       ) -> Recommendation:
        """The recommendation at the target fidelity, among the pool's mixtures when a pool is given."""
        levels = self._levels(history, pool)
        data = self._data(history, levels)
        if len(data.y) < 2:
            raise InputError(history.source, f"mfbo needs at least 2 successful runs to recommend, has {len(data.y)}",
                             "train more proxies first")
        sur = self._surrogate(history, levels, data)
        if pool is not None:  # the pool's target-level mixtures (ADMIRE's choice), else all of its mixtures
            at_target = levels.of(pool) == levels.target if levels else np.ones(len(pool), dtype=bool)
            W = np.unique(pool.weights[at_target] if at_target.any() else pool.weights, axis=0)
        else:
            W = np.unique(np.vstack([self._live_candidates(history, levels, sur=sur, target=target)[0], data.W]),
                          axis=0)
        X = sur.inputs(W)
        m, sd = sur.mean_sd(X)
        prior, _ = resolve_prior(self.settings, history)
        kl = kl_to_prior(W, prior)
        pred = sur.to_objective(m)
        lam = self.settings.kl_lambda
        i_mean = int(np.argmin(pred + lam * kl))
        by_lam = {x: int(np.argmin(pred + x * kl)) for x in sorted({lam, *self.settings.kl_grid})}
        with torch.random.fork_rng():  # MES samples max values: seeded, so a rerun recommends the same
            torch.manual_seed(int(self.rng(history, "recommend").integers(2**31)))
            acq = self._acq_values(sur, X, X, data)
        i_acq = int(np.argmax(acq))
        details: dict[str, Any] = {
            "mode": self.settings.mode, "surrogate": sur.kind, "transform": self.settings.transform,
            "acquisition": "qlognei" if sur.kind == "single" else self.settings.acquisition,
            "n_candidates": len(W), "kl_lambda": lam, "prior": mixture_dict(history.domains, prior),
            "distance_to_prior": distance_to_prior(W[i_mean], prior),
            "candidates": [{"label": f"mfbo (kl_lambda {x:g})", "kl_lambda": x,
                            "weights": mixture_dict(history.domains, W[i]), "predicted": float(pred[i]),
                            **distance_to_prior(W[i], prior)} for x, i in by_lam.items()],
            "posterior_mean_best": {"weights": mixture_dict(history.domains, W[i_mean]),
                                    "predicted": float(sur.to_objective(m[i_mean])), "sd": float(sd[i_mean] * sur.sd)},
            "acquisition_best": {"weights": mixture_dict(history.domains, W[i_acq]),
                                 "predicted": float(sur.to_objective(m[i_acq])), "sd": float(sd[i_acq] * sur.sd),
                                 "acquisition": float(acq[i_acq])},
        }
        notes = list(data.notes)
        if levels is not None:
            details["levels"] = [{"fidelity": v, "cost": float(c)}
                                 for v, c in zip(levels.values, levels.costs, strict=True)]
            details["target_level"] = levels.values[levels.target]
            details["runs_per_level"] = [int((data.level == j).sum()) for j in range(len(levels.values))]
            at_target = data.level == levels.target
            if at_target.any():
                j = int(np.flatnonzero(at_target)[np.argmax(data.y[at_target])])
                details["best_observed_at_target"] = {"weights": mixture_dict(history.domains, data.W[j]),
                                                      "objective": float(-data.y[j]), "run_id": data.run_ids[j]}
            else:
                notes.append("no run at the target fidelity yet: the recommendation is extrapolated from lower ones")
            notes.extend(levels.notes)
            details["cost_spent"] = float(self._spent(history, levels))
        else:
            notes.append("no fidelity levels listed (optimizer.fidelities): single-fidelity BO (qLogNEI) on every run")
        notes.append(f"posterior-mean best of {len(W)} candidates at the target fidelity, regularised by "
                     f"kl_lambda {lam:g} (KL(w ‖ prior) {kl[i_mean]:.3f}); the acquisition-based choice is in details")
        return self._recommendation(W[i_mean], history, predicted=float(sur.to_objective(m[i_mean])),
                                    uncertainty=float(sd[i_mean] * sur.sd), runs_used=data.run_ids, notes=notes,
                                    details=details)

    # ------------------------------------------------------------------------------------------ pieces

    def _pool_table(self) -> RunTable | None:
        return RunTable.from_file(self.settings.pool) if self.settings.pool is not None else None

    def _levels(self, history: RunTable, pool: RunTable | None = None) -> Levels | None:
        """The fidelity levels; None (plain single-fidelity BO on every run, proposals without a fidelity) when
        none are listed and there is no pool to take them from."""
        return resolve_levels(self.settings, history, pool)

    def _single(self, levels: Levels | None) -> bool:
        return self.settings.mode == "single" or levels is None or len(levels.values) == 1

    def _caps(self, history: RunTable, target: TargetSpec | None = None) -> np.ndarray | None:
        prior, _ = resolve_prior(self.settings, history)
        return resolve_caps(self.settings, history, prior, target)[0]

    def _spent(self, history: RunTable, levels: Levels) -> float:
        lv = levels.of(history)
        done = (history.df["status"] != "pending").to_numpy() & (lv >= 0)
        return float(levels.costs[lv[done]].sum())

    def _data(self, history: RunTable, levels: Levels | None) -> _Data:
        s = self.settings
        lv_all = levels.of(history) if levels else np.zeros(len(history), dtype=int)
        pending = (history.df["status"] == "pending").to_numpy() & (lv_all >= 0)
        if s.mode == "single" and levels:
            pending &= lv_all == levels.target
        ok, y = history.usable(self.objective)
        notes = list(ok.notes)
        lv = levels.of(ok) if levels else np.zeros(len(ok), dtype=int)
        keep = lv >= 0
        if (~keep).any():
            notes.append(f"{int((~keep).sum())} run(s) at a fidelity outside the listed levels ignored")
        if s.mode == "single" and levels:
            keep &= lv == levels.target
        ids = ok.run_ids()
        return _Data(W=ok.weights[keep], level=lv[keep], y=-np.asarray(y)[keep],
                     pending_W=history.weights[pending], pending_level=lv_all[pending], notes=notes,
                     run_ids=[i for i, k in zip(ids, keep, strict=True) if k])

    def _train_rows(self, data: _Data, upto: int, cap: int, levels: Levels | None) -> np.ndarray:
        """A bounded training set from the first `upto` usable runs: every target-level run (best first), then
        per remaining slot alternately the best other run and an even spread over the rest."""
        idx = np.arange(upto)
        if upto <= cap:
            return idx
        target = levels.target if levels else 0
        top = idx[data.level[idx] == target]
        top = top[np.argsort(-data.y[top], kind="stable")][:cap // 2]
        rest = np.setdiff1d(idx, top)
        room = cap - len(top)
        z = data.y[rest].copy()
        for j in np.unique(data.level[rest]):  # rank within a level: levels differ in scale
            m = data.level[rest] == j
            z[m] = (z[m] - z[m].mean()) / (z[m].std() + 1e-12)
        best = rest[np.argsort(-z, kind="stable")[:room // 2]]
        others = np.setdiff1d(rest, best)
        spread = others[np.linspace(0, len(others) - 1, room - len(best)).round().astype(int)] if room > len(
            best) else np.zeros(0, dtype=int)
        return np.sort(np.unique(np.concatenate([top, best, spread])))

    def _surrogate(self, history: RunTable, levels: Levels | None, data: _Data) -> Surrogate:
        s = self.settings
        kind = "single" if self._single(levels) else s.surrogate
        n = len(data.y)
        # Refit points: n_init, then each time the usable history grows by refit_growth. Fitting on the prefix
        # makes the hyper-parameters a function of that prefix alone (memoisable, identical on resume).
        upto = max(2, min(s.n_init, n))
        while True:
            nxt = max(upto + 1, math.ceil(upto * s.refit_growth))
            if nxt > n:
                break
            upto = nxt
        fit_rows = self._train_rows(data, upto, s.max_fit, levels)
        rows = self._train_rows(data, n, s.max_train, levels)
        # Standardised on the fit set's statistics: the fitted level means are in those units, and the memo key
        # (the fit data) then depends on the history prefix alone.
        mu, sd = float(data.y[fit_rows].mean()), float(data.y[fit_rows].std()) or 1.0

        def tensors(r: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            X = embed_mixtures(data.W[r], s.transform)
            if kind != "single":
                col = data.level[r].astype(float) if kind == "multitask" else levels.scale[data.level[r]]
                X = np.column_stack([X, col])
            Y = ((data.y[r] - mu) / sd).reshape(-1, 1)
            return torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(Y, dtype=torch.float64)

        fX, fY = tensors(fit_rows)
        n_levels = len(levels.values) if levels else 1
        state = _fitted_state(kind, fX, fY, n_levels, levels.target if levels else 0, self.seed, s.fit_maxiter)
        TX, TY = tensors(rows)
        return Surrogate(kind, levels, s.transform, state, TX, TY, mu, sd)

    def _live_candidates(self, history: RunTable, levels: Levels | None, sur: Surrogate | None = None,
                         target: TargetSpec | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Sampler mixtures (plus perturbations of the best so far), each at every allowed level."""
        s = self.settings
        rng = self.rng(history, "candidates")
        prior, _ = resolve_prior(s, history)
        caps = self._caps(history, target)
        try:
            W = sample_mixtures(prior, s.n_candidates, rng, s, caps=caps)
        except ValueError:  # caps so tight that random draws never satisfy them: move draws onto the capped
            if caps is None:  # simplex (water-filling, as the target step does), as the surrogate search does
                raise
            from mixopt.target import rebalance

            W = np.stack([rebalance(c, caps) for c in dirichlet(prior, s.n_candidates, rng)])
        data = self._data(history, levels)
        if s.n_local and len(data.y) >= max(2, s.n_init):
            if sur is None:
                sur = self._surrogate(history, levels, data)
            m, _ = sur.mean_sd(sur.inputs(data.W))
            best = data.W[np.argsort(-m, kind="stable")[:8]]
            conc = np.array([30.0, 100.0, 300.0])[rng.integers(0, 3, s.n_local)]
            centres = best[rng.integers(0, len(best), s.n_local)]
            local = np.vstack([dirichlet(c * k + 0.02, 1, rng) for c, k in zip(centres, conc, strict=True)])
            if caps is not None:
                local = local[(local <= caps[None, :] + 1e-12).all(axis=1)]
            W = np.vstack([W, local])
        if s.mode == "single" or levels is None:
            return W, np.full(len(W), levels.target if levels else 0)
        L = len(levels.values)
        return np.repeat(W, L, axis=0), np.tile(np.arange(L), len(W))

    def _choose(self, history: RunTable, levels: Levels | None, W: np.ndarray, L: np.ndarray, n: int
                ) -> list[int]:
        """Greedy batch of `n` candidate indices; random at the cheapest level until n_init runs exist."""
        s = self.settings
        n = min(n, len(W))
        data = self._data(history, levels)
        rng = self.rng(history, "choose")
        if len(data.y) + len(data.pending_W) < s.n_init or len(data.y) < 2:
            low = 0 if levels is None else levels.target if s.mode == "single" else int(np.argmin(levels.costs))
            pick = np.flatnonzero(L == low)
            if len(pick) < n:
                pick = np.arange(len(W))
            return [int(i) for i in rng.permutation(pick)[:n]]
        sur = self._surrogate(history, levels, data)
        X = sur.inputs(W, L if sur.kind != "single" else None)
        Xp = sur.inputs(data.pending_W, data.pending_level if sur.kind != "single" else None)
        targets = torch.unique(sur.project(X), dim=0)
        chosen: list[int] = []
        with torch.random.fork_rng():
            torch.manual_seed(int(rng.integers(2**31)))
            for _ in range(n):
                if sur.kind == "single":
                    vals = self._acq_values(sur, X, targets, data, pending=torch.cat([Xp, X[chosen]]))
                else:
                    vals = self._acq_values(sur.believe(torch.cat([Xp, X[chosen]])), X, targets, data)
                vals[chosen] = -np.inf
                chosen.append(int(np.argmax(vals)))
        return chosen

    def _acq_values(self, sur: Surrogate, X: torch.Tensor, targets: torch.Tensor, data: _Data,
                    pending: torch.Tensor | None = None, chunk: int = 512) -> np.ndarray:
        """Acquisition value of each row of X (higher is better)."""
        s = self.settings
        if sur.kind == "single":
            from botorch.acquisition.logei import qLogNoisyExpectedImprovement

            acq = qLogNoisyExpectedImprovement(sur.model, X_baseline=sur.TX,
                                               X_pending=pending if pending is not None and len(pending) else None,
                                               prune_baseline=True, cache_root=False)
        elif s.acquisition == "kg":
            return self._kg(sur, X, targets)
        else:
            from botorch.acquisition.cost_aware import InverseCostWeightedUtility
            from botorch.acquisition.max_value_entropy_search import qMultiFidelityMaxValueEntropy
            from botorch.models.deterministic import GenericDeterministicModel

            utility = InverseCostWeightedUtility(GenericDeterministicModel(lambda Z: sur.cost(Z).unsqueeze(-1)))
            acq = qMultiFidelityMaxValueEntropy(sur.model, candidate_set=targets, num_mv_samples=s.num_mv_samples,
                                                cost_aware_utility=utility, project=sur.project)
        out = []
        with torch.no_grad():
            for i in range(0, len(X), chunk):
                out.append(acq(X[i:i + chunk].unsqueeze(-2)).numpy())
        return np.concatenate(out).astype(float)

    def _kg(self, sur: Surrogate, X: torch.Tensor, targets: torch.Tensor, chunk: int = 128) -> np.ndarray:
        """Discrete knowledge gradient per unit cost: E[max_t μ'(t)] − max_t μ(t) after observing one x."""
        q = torch.distributions.Normal(0.0, 1.0).icdf(
            (torch.arange(self.settings.kg_samples, dtype=torch.float64) + 0.5) / self.settings.kg_samples)
        with torch.no_grad():
            post = sur.model.posterior(torch.cat([targets, X]))
            mean = post.mean.squeeze(-1)
            cov = post.distribution.covariance_matrix
            T = len(targets)
            mu_t = mean[:T]
            var_x = cov.diagonal()[T:]
            noisy = sur.model.posterior(X, observation_noise=True).variance.squeeze(-1)
            sig = cov[:T, T:] / (noisy.clamp_min(var_x + 1e-12)).sqrt()  # T × C: how far each target moves
            best = mu_t.max()
            out = []
            for i in range(0, len(X), chunk):
                upd = mu_t[None, :, None] + sig[None, :, i:i + chunk] * q[:, None, None]  # J × T × c
                out.append((upd.max(dim=1).values.mean(dim=0) - best).clamp_min(0))
            kg = torch.cat(out)
            return (kg / sur.cost(X)).numpy().astype(float)
