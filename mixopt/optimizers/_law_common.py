"""Plumbing shared by the law-based optimizers (`mixing_law`, `dcpt`, `cmr`): fidelities, designs, two domains.

A run's fidelity is recorded as `fid_<name>` columns of the run table (`fid_params`: non-embedding parameters,
`fid_tokens`: training tokens); a Proposal asks for one as a dict {"params": N, "tokens": D}. The law-based
optimizers propose full factorial designs (every mixture at every fidelity level), because their laws are
fitted across those axes, and skip design points the history already holds so a resumed search continues
the design instead of repeating it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
from pydantic import Field

from mixopt.errors import InputError
from mixopt.laws.pipeline import mixture_keys
from mixopt.optimizers.base import NoSettings, OptimizerBase, Proposal, mixture_dict
from mixopt.runs import RunTable
from mixopt.spec import ObjectiveSpec


def fidelity_values(table: RunTable, name: str, required: bool, default: float | None = None) -> np.ndarray:
    """The `fid_<name>` column as floats; `default` fills a missing column (error when required and none)."""
    col = f"fid_{name}"
    if col not in table.df.columns:
        if required and default is None:
            raise InputError(f"{table.source}: {col}", f"the run table has no {col} column",
                             f"record each proxy's {name} as {col} (the proposals of this optimizer carry it)")
        return np.full(len(table), np.nan if default is None else float(default))
    v = table.df[col].astype(float).to_numpy()
    if required and not np.isfinite(v).all():
        raise InputError(f"{table.source}: {col}", "missing or non-numeric fidelity values",
                         f"give every successful run its {name}")
    return v


def factorial_design(domains: list[str], mixtures: np.ndarray, levels: Sequence[dict[str, float]],
                     history: RunTable, rng: np.random.Generator, n: int) -> list[Proposal]:
    """The first n design points (mixture × fidelity level) not yet in the history, in a seeded random order.

    A point is in the history when a run (of any status but failed) has the same weights (within 1e-6) and
    its recorded fidelity is nearest to that level (log scale, per key): the driver trains the nearest proxy
    to a requested size and records what it trained, which is rarely the requested number itself. When the
    design is exhausted, it starts over (replicates average out noise).
    """
    levels = list(levels) or [{}]
    points = list(itertools.product(range(len(mixtures)), range(len(levels))))
    done = completed_points(history, domains, mixtures, levels)
    todo = [p for p in points if p not in done]
    order = [todo[i] for i in rng.permutation(len(todo))] if todo else []
    while len(order) < n:  # replicates, in a fresh random order each round
        order += [points[i] for i in rng.permutation(len(points))]
    return [Proposal(mixture_dict(domains, mixtures[m]), dict(levels[f]) or None) for m, f in order[:n]]


def completed_points(history: RunTable, domains: list[str], mixtures: np.ndarray,
                     levels: Sequence[dict[str, float]]) -> set[tuple[int, int]]:
    """(mixture index, level index) pairs some live (not failed) run of the history already covers."""
    if len(history) == 0:
        return set()
    live = (history.df["status"] != "failed").to_numpy()
    W = history.weights
    # A level index is recorded as asked; sizes and budgets are matched to the nearest requested value.
    nearest = {k: fidelity_values(history, k, required=False) if k == "level" else
               _nearest_level(fidelity_values(history, k, required=False), [lv[k] for lv in levels if k in lv])
               for lv in levels for k in lv}
    done = set()
    for m, w in enumerate(mixtures):
        same_w = live & (np.abs(W - w[None, :]).max(axis=1) < 1e-6)
        if not same_w.any():
            continue
        for f, lv in enumerate(levels):
            same = same_w.copy()
            for k, v in lv.items():
                same &= nearest[k] == v
            if same.any():
                done.add((m, f))
    return done


def propose_at_levels(history: RunTable, n: int, levels: Sequence[dict[str, float]],
                      sample: Callable[[int], np.ndarray]) -> list[Proposal]:
    """n proposals, each new mixture at every level: mixtures the history holds at only some levels come first.

    Laws fitted across scales need the same mixture at every level (a size law per mixture, or a mixture term
    compared across scales), so a half-finished mixture is completed before new ones are drawn.
    `sample(k)` returns k new mixtures (k × domains); it is only called when new mixtures are needed.
    """
    levels = [dict(lv) for lv in levels] or [{}]
    out: list[Proposal] = []
    ok = history.with_status("ok", "pending")
    if len(ok) and len(levels) > 1:
        keys, _ = mixture_keys(ok.weights, tol=1e-6)
        done = completed_points(history, history.domains, keys, levels)
        for m, w in enumerate(keys):
            for f, lv in enumerate(levels):
                if (m, f) not in done and any((m, g) in done for g in range(len(levels))):
                    out.append(Proposal(mixture_dict(history.domains, w), dict(lv)))
    need = max(0, -(-(n - len(out)) // len(levels)))
    if need:
        for w in sample(need):
            out += [Proposal(mixture_dict(history.domains, w), dict(lv) or None) for lv in levels]
    return out[:n]


def domain_bounds(history: RunTable, values: dict[str, float] | None, where: str, default: float
                  ) -> np.ndarray | None:
    """A per-domain setting ({domain: weight}) as an array in the run table's order; `default` fills the rest."""
    if values is None:
        return None
    unknown = sorted(set(values) - set(history.domains))
    if unknown:
        raise InputError(where, f"unknown domain(s) {unknown}",
                         f"use the run table's domains: {', '.join(history.domains)}")
    return np.array([float(values.get(d, default)) for d in history.domains])


def _nearest_level(recorded: np.ndarray, values: list[float]) -> np.ndarray:
    """Each recorded fidelity mapped to the nearest requested value on a log scale (NaN: none recorded)."""
    vals = np.unique(np.asarray(values, dtype=float))
    out = np.full(len(recorded), np.nan)
    ok = np.isfinite(recorded) & (recorded > 0)
    if ok.any() and (vals > 0).all():
        out[ok] = vals[np.abs(np.log(recorded[ok])[:, None] - np.log(vals)[None, :]).argmin(axis=1)]
    return out


def levels_from(params: Sequence[float] | None, tokens: Sequence[float] | None) -> list[dict[str, float]]:
    """Fidelity levels: the cross product of the listed parameter counts and token budgets."""
    ps = list(params or [None])
    ts = list(tokens or [None])
    out = []
    for p, t in itertools.product(ps, ts):
        lv = {}
        if p is not None:
            lv["params"] = float(p)
        if t is not None:
            lv["tokens"] = float(t)
        out.append(lv)
    return out


class TwoDomains:
    """The general/domain pair of continual-pretraining optimizers, checked against a run table."""

    def __init__(self, history: RunTable, general: str, domain: str, general_loss: str | None,
                 domain_loss: str | None, where: str) -> None:
        if set(history.domains) != {general, domain} or general == domain:
            raise InputError(f"{history.source}: weight columns", f"{where} works on exactly two domains, "
                             f"{general!r} (general) and {domain!r} (domain); the run table has "
                             f"{', '.join(history.domains)}",
                             "name the run table's two domains in optimizer.general and optimizer.domain")
        self.domains = history.domains
        self.general, self.domain = general, domain
        self.general_loss = general_loss or f"loss_{general}"
        self.domain_loss = domain_loss or f"loss_{domain}"
        self.j = history.domains.index(domain)

    def weights(self, r_d: float) -> dict[str, float]:
        return {d: float(r_d) if d == self.domain else 1.0 - float(r_d) for d in self.domains}

    def mixtures(self, ratios: Sequence[float]) -> np.ndarray:
        W = np.zeros((len(ratios), 2))
        W[:, self.j] = ratios
        W[:, 1 - self.j] = 1.0 - np.asarray(ratios, dtype=float)
        return W

    def losses(self, table: RunTable) -> tuple[np.ndarray, np.ndarray]:
        for col in (self.general_loss, self.domain_loss):
            if col not in table.df.columns:
                raise InputError(f"{table.source}: {col}", "loss column not in the run table",
                                 f"record it, or name another with optimizer.general_loss / domain_loss "
                                 f"(have: {', '.join(table.loss_columns) or 'none'})")
        return (table.df[self.general_loss].to_numpy(dtype=float), table.df[self.domain_loss].to_numpy(dtype=float))

    def usable(self, history: RunTable) -> RunTable:
        """Successful runs with both losses finite (failed and diverged runs never reach a fit)."""
        if not (history.df["status"] == "ok").any():
            return history.with_status("ok")
        self.losses(history)  # names a missing column
        return history.usable(ObjectiveSpec(metrics=[self.general_loss, self.domain_loss]))[0]


def source_runs(table: RunTable) -> list[str]:
    """The runs behind a fit's points, each once (a checkpoint row counts as the run it was taken from)."""
    ids = table.run_ids()
    if "checkpoint_of" in table.df.columns:
        ids = [str(c) if isinstance(c, str) else i for c, i in zip(table.df["checkpoint_of"], ids, strict=True)]
    return list(dict.fromkeys(ids))


def points_note(table: RunTable) -> str:
    n_runs = len(source_runs(table))
    return f"{len(table)} points ({len(table) - n_runs} of them checkpoints along {n_runs} runs)" \
        if len(table) > n_runs else f"{len(table)} runs"


def fit_notes(table: RunTable) -> list[str]:
    """The run table's notes, less the one about repeated mixtures: a design repeats each mixture on purpose
    (once per fidelity level)."""
    return [n for n in table.notes if "repeat an earlier mixture" not in n]


class TwoDomainSettings(NoSettings):
    general: str = Field(default="general", description="the general corpus (a domain of the run table)")
    domain: str = Field(default="domain", description="the target domain (the other domain of the run table)")
    general_loss: str | None = Field(default=None, description="general-loss column (default loss_<general>)")
    domain_loss: str | None = Field(default=None, description="domain-loss column (default loss_<domain>)")
    size_key: str = Field(default="params", description="the fid_ column holding model size N: params (what the "
                          "driver records), or e.g. a non-embedding count; targets are read in its units")
    delta: float = Field(default=1e-3, gt=0, description="Huber δ of the fits")
    bootstrap: int = Field(default=8, ge=0, description="refits on resampled runs for intervals")
    checkpoints: bool = Field(default=True, description="fit on every run's intermediate checkpoints too (its eval "
                              "curve, `eval_every`), as both papers do, not only on final losses")


class TwoDomainOptimizer(OptimizerBase):
    """Continual-pretraining optimizers: a general/domain pair, a design of domain shares × fidelity levels."""

    def _pair(self, history: RunTable) -> TwoDomains:
        s = self.settings
        return TwoDomains(history, s.general, s.domain, s.general_loss, s.domain_loss, self.name)

    def _levels(self) -> list[dict[str, float]]:
        raise NotImplementedError

    def _points(self, history: RunTable) -> RunTable:
        """The rows a law is fitted on: runs, and their checkpoints when asked (proposals use runs only)."""
        return history.with_checkpoints() if self.settings.checkpoints else history

    def propose(self, history: RunTable, n: int) -> list[Proposal]:
        pair = self._pair(history)
        mixtures = pair.mixtures(self.settings.ratios)
        return factorial_design(history.domains, mixtures, self._levels(), history, self.rng(history), n)
