"""`RunTable`: the history of a search — one row per proxy run — as a pandas frame with a fixed vocabulary.

Columns, by convention (the same as the released benchmark CSVs, so they load as they are):
- `w_<domain>`: mixture weight of each training domain (these define the domains and their order);
- `loss_<domain>`: validation loss measured on a domain (not necessarily one that is trained on);
- `fid_<name>`: fidelity of the run (e.g. `fid_tokens`, `fid_params`), optional;
- `status`: `ok`, `failed` or `pending` (absent means every row is `ok`);
- online runs (job store only): `schedule` (the mixing schedule's dict), `trajectory` ([{step, weights}] at
  every change) and `mean_weights` (proportions averaged over training steps);
- anything else (run_id, seed, timings, error text) is carried along untouched.

Optimizers only ever see a RunTable; they never talk to the job store or to MLflow.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from mixopt.errors import InputError
from mixopt.spec import ObjectiveSpec

ROUNDING_TOLERANCE = 0.01  # released tables round weights (RegMix: sums in [0.996, 1.003]); renormalise those
STATUSES = ("ok", "failed", "pending")
TOKENS_PREFIX = "tokens_"  # exported corpus token counts, one column per domain


class RunTable:
    def __init__(self, df: pd.DataFrame, token_counts: dict[str, float] | None = None,
                 source: str = "run table") -> None:
        self.source = source
        self.notes: list[str] = []
        df = df.reset_index(drop=True).copy()
        self.domains = [c[2:] for c in df.columns if c.startswith("w_")]
        if not self.domains:
            raise InputError(source, "no weight columns (w_<domain>)",
                             "name each domain's mixture weight column w_<domain>")
        if "status" not in df.columns:
            df["status"] = "ok"
        bad = sorted(set(df["status"].astype(str)) - set(STATUSES))
        if bad:
            raise InputError(f"{source}: status", f"unknown status value(s) {bad}",
                             f"use one of {', '.join(STATUSES)}")
        self.df = df
        self._check_weights()
        self.token_counts = None
        if token_counts is None:
            token_counts = self._exported_token_counts(df, source)
        if token_counts is not None:
            missing = [d for d in self.domains if d not in token_counts]
            if missing:
                raise InputError(source, f"token counts missing for domain(s) {missing}",
                                 "give a token count for every w_ column")
            self.token_counts = {d: float(token_counts[d]) for d in self.domains}

    def _exported_token_counts(self, df: pd.DataFrame, source: str) -> dict[str, float] | None:
        """Token counts carried as `tokens_<domain>` columns (what `mixopt runs --format csv` writes), so a
        table recommended from its export has the same prior and repetition caps as the job's own."""
        cols = [f"{TOKENS_PREFIX}{d}" for d in self.domains]
        if not len(df) or not all(c in df.columns for c in cols):
            return None
        first = df[cols].iloc[0]
        if not (df[cols] == first).all().all() or first.isna().any():
            raise InputError(f"{source}: {TOKENS_PREFIX}<domain>", "token counts differ between rows",
                             "give each domain's corpus token count, the same on every row")
        return {d: float(first[c]) for d, c in zip(self.domains, cols, strict=True)}

    def with_token_columns(self) -> pd.DataFrame:
        """The table with its token counts as `tokens_<domain>` columns (for exports that must carry them)."""
        df = self.df.copy()
        for d, n in (self.token_counts or {}).items():
            df[f"{TOKENS_PREFIX}{d}"] = n
        return df

    # ------------------------------------------------------------------------------------------ loading

    @classmethod
    def empty(cls, domains: list[str], token_counts: dict[str, float] | None = None) -> RunTable:
        cols = [f"w_{d}" for d in domains] + ["status"]
        return cls(pd.DataFrame({c: pd.Series(dtype=float if c != "status" else object) for c in cols}),
                   token_counts=token_counts)

    @classmethod
    def from_csv(cls, path: str | Path, token_counts: dict[str, float] | None = None) -> RunTable:
        path = Path(path)
        if not path.is_file():
            raise InputError(str(path), "file not found", "check the path")
        return cls(pd.read_csv(path), token_counts=token_counts, source=str(path))

    @classmethod
    def from_parquet(cls, path: str | Path, token_counts: dict[str, float] | None = None) -> RunTable:
        path = Path(path)
        if not path.is_file():
            raise InputError(str(path), "file not found", "check the path")
        return cls(pd.read_parquet(path), token_counts=token_counts, source=str(path))

    @classmethod
    def from_file(cls, path: str | Path, token_counts: dict[str, float] | None = None) -> RunTable:
        """CSV or Parquet by extension."""
        p = Path(path)
        if p.suffix.lower() in (".parquet", ".pq"):
            return cls.from_parquet(p, token_counts)
        return cls.from_csv(p, token_counts)

    def to_parquet(self, path: str | Path) -> None:
        self.df.to_parquet(path, index=False)

    def to_csv(self, path: str | Path) -> None:
        self.df.to_csv(path, index=False)

    # ------------------------------------------------------------------------------------------ views

    def __len__(self) -> int:
        return len(self.df)

    def __repr__(self) -> str:
        counts = self.df["status"].value_counts().to_dict()
        return f"RunTable({len(self)} runs, {len(self.domains)} domains, {counts})"

    @property
    def weight_columns(self) -> list[str]:
        return [f"w_{d}" for d in self.domains]

    @property
    def loss_columns(self) -> list[str]:
        return [c for c in self.df.columns if c.startswith("loss_")]

    @property
    def weights(self) -> np.ndarray:
        return self.df[self.weight_columns].to_numpy(dtype=float, copy=True)

    @property
    def prior(self) -> np.ndarray | None:
        """Token share of each domain (the 'natural' mixture), when token counts are known."""
        if self.token_counts is None:
            return None
        n = np.array([self.token_counts[d] for d in self.domains], dtype=float)
        return n / n.sum()

    def with_status(self, *statuses: str) -> RunTable:
        return self._subset(self.df["status"].isin(statuses).to_numpy())

    def head(self, n: int) -> RunTable:
        """The first `n` runs, in the order they were proposed."""
        return self._subset(np.arange(len(self.df)) < n)

    def select(self, mask: np.ndarray) -> RunTable:
        """The rows where `mask` is true (notes and token counts carried over)."""
        return self._subset(np.asarray(mask, dtype=bool))

    def _subset(self, mask: np.ndarray) -> RunTable:
        sub = RunTable.__new__(RunTable)
        sub.source, sub.notes, sub.domains = self.source, list(self.notes), list(self.domains)
        sub.df = self.df[mask].reset_index(drop=True)
        sub.token_counts = self.token_counts
        return sub

    def objective_columns(self, spec: ObjectiveSpec | str | None = None) -> tuple[list[str], np.ndarray]:
        """The objective's loss columns and their weights: the objective is Σ a_j·loss_j (the mean: a_j = 1/n)."""
        spec = _as_objective(spec)
        cols = list(spec.metrics if spec.metrics is not None else self.loss_columns)
        a = (np.asarray(spec.weights, dtype=float) if spec.weights is not None
             else np.full(len(cols), 1 / max(len(cols), 1)))
        return cols, a

    def objective(self, spec: ObjectiveSpec | str | None = None) -> np.ndarray:
        """Objective per row (lower is better); NaN where a metric is missing or not finite."""
        spec = _as_objective(spec)
        cols, _ = self.objective_columns(spec)
        if not cols:
            raise InputError(self.source, "no loss_<domain> columns to build the objective from",
                             "record per-domain validation losses as loss_<domain>")
        missing = [c for c in cols if c not in self.df.columns]
        if missing:
            raise InputError(f"{self.source}: objective", f"column(s) {missing} not in the table",
                             f"choose from {', '.join(self.loss_columns) or '(no loss columns)'}")
        vals = self.df[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float, copy=True)
        vals[~np.isfinite(vals)] = np.nan
        if spec.weights is None:
            return vals.mean(axis=1)
        return vals @ np.asarray(spec.weights, dtype=float)  # a weighted sum, as written

    def usable(self, spec: ObjectiveSpec | str | None = None) -> tuple[RunTable, np.ndarray]:
        """Runs a predictor may learn from: status ok and a finite objective. Failed runs never get in."""
        if not (self.df["status"] == "ok").any():  # e.g. every proxy diverged: there may be no loss columns
            return self._subset(np.zeros(len(self.df), dtype=bool)), np.zeros(0)
        y = self.objective(spec)
        mask = (self.df["status"] == "ok").to_numpy() & np.isfinite(y)
        sub = self._subset(mask)
        dropped = int((self.df["status"] == "ok").sum() - mask.sum())
        if dropped:
            sub.notes.append(f"{dropped} run(s) with status ok but a missing or non-finite objective excluded")
        if len(sub):
            dup = len(sub) - len(np.unique(np.round(sub.weights, 9), axis=0))
            if dup:
                sub.notes.append(f"{dup} run(s) repeat an earlier mixture; kept (repeats average out seed noise)")
        return sub, y[mask]

    def with_checkpoints(self) -> RunTable:
        """Successful runs plus a row per intermediate checkpoint of each (its `curve`), as a law fit wants them.

        Scaling laws in the token budget D are fitted on checkpoints along runs, not only on final losses
        (D-CPT validates every 1k of 20k steps; CMR measures T along each continual-pretraining run). A checkpoint
        row copies its run's row with the losses measured there, `fid_tokens` = the tokens trained by then
        (`fid_flops` scaled alike), `checkpoint_of` = the run's id and run_id `<run>@<tokens>`. Rows of runs
        without a curve are kept as they are; failed runs and their curves are dropped.
        """
        ok = self.with_status("ok")
        if "curve" not in ok.df.columns or len(ok) == 0:
            return ok
        rows = []
        for rec in ok.df.to_dict("records"):
            curve = rec.pop("curve", None)
            rows.append({**rec, "checkpoint_of": None})
            for point in curve if isinstance(curve, list) else []:
                row = {**rec, **{f"loss_{d}": float(v) for d, v in point["losses"].items()}}
                row["checkpoint_of"] = rec.get("run_id")
                row["run_id"] = f"{rec.get('run_id')}@{int(point['tokens'])}"
                final = rec.get("fid_tokens")
                if "fid_flops" in rec and final:
                    row["fid_flops"] = float(rec["fid_flops"]) * point["tokens"] / float(final)
                row["fid_tokens"] = float(point["tokens"])
                rows.append(row)
        out = RunTable(pd.DataFrame(rows), token_counts=self.token_counts, source=self.source)
        out.notes = list(ok.notes)
        return out

    def run_ids(self) -> list[str]:
        if "run_id" in self.df.columns:
            return [str(x) for x in self.df["run_id"]]
        return [str(i) for i in range(len(self.df))]

    # ------------------------------------------------------------------------------------------ checks

    def _check_weights(self) -> None:
        """Weights must be finite, non-negative, and sum to 1 up to rounding; rounding is renormalised."""
        if len(self.df) == 0:
            return
        active = (self.df["status"] != "pending").to_numpy()
        W = self.df[self.weight_columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float, copy=True)
        ids = self.run_ids()
        for row in np.flatnonzero(active & ~np.isfinite(W).all(axis=1)):
            col = self.weight_columns[int(np.flatnonzero(~np.isfinite(W[row]))[0])]
            raise InputError(f"{self.source}: row {ids[row]}, {col}", "weight is missing or not a number",
                             "give every w_ column a number in [0, 1]")
        for row in np.flatnonzero(active & (W < 0).any(axis=1)):
            raise InputError(f"{self.source}: row {ids[row]}", "negative weight",
                             "weights must be in [0, 1]")
        sums = W.sum(axis=1)
        off = active & (np.abs(sums - 1) > ROUNDING_TOLERANCE)
        if off.any():
            row = int(np.flatnonzero(off)[0])
            raise InputError(f"{self.source}: row {ids[row]}", f"weights sum to {sums[row]:.6g}, not 1",
                             "rescale that row's w_ columns so they sum to 1")
        rounded = active & (np.abs(sums - 1) > 1e-9)
        if rounded.any():
            W[rounded] = W[rounded] / sums[rounded, None]
            self.df.loc[rounded, self.weight_columns] = W[rounded]
            self.notes.append(f"{int(rounded.sum())} row(s) with weights off 1 by rounding were renormalised")


def _as_objective(spec: ObjectiveSpec | str | None) -> ObjectiveSpec:
    if spec is None:
        return ObjectiveSpec()
    if isinstance(spec, str):
        return ObjectiveSpec(metrics=[spec])
    return spec


def weights_frame(mixtures: Iterable[dict[str, float]], domains: list[str]) -> pd.DataFrame:
    return pd.DataFrame([{f"w_{d}": float(m.get(d, 0.0)) for d in domains} for m in mixtures])
