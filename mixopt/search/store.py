"""The job store: one folder per job, with the run table in SQLite as the single source of truth.

Layout of `WORKDIR/jobs/<job_id>/`: `spec.yaml` (the resolved spec, self-contained), `runs.sqlite`, and
`recommendation.json` once the search ends.

The tables are append-only. A proposal is written before its proxy starts (a write-ahead log), its result once
when it ends; a proposal without a result is pending. A driver killed at any point therefore loses no finished
run, and on resume re-runs exactly the pending proposals (same mixture, same seed) before proposing more.
"""

from __future__ import annotations

import glob
import json
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mixopt.errors import InputError
from mixopt.runs import RunTable
from mixopt.spec import SearchSpec

LADDER = "ladder:"  # the `source` of a verification-ladder run starts with this (its stage)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS proposals (
    run_id TEXT PRIMARY KEY, idx INTEGER NOT NULL UNIQUE, round INTEGER NOT NULL, seed INTEGER NOT NULL,
    weights TEXT NOT NULL, fidelity TEXT, source TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT PRIMARY KEY REFERENCES proposals(run_id), status TEXT NOT NULL, metrics TEXT NOT NULL,
    info TEXT NOT NULL, error TEXT, finished_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tracking (run_id TEXT PRIMARY KEY, mlflow_run_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS mirrored (run_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS schedules (run_id TEXT PRIMARY KEY REFERENCES proposals(run_id), schedule TEXT NOT NULL);
"""


@dataclass(frozen=True)
class PendingRun:
    run_id: str
    idx: int
    round: int
    seed: int
    weights: dict[str, float]
    fidelity: dict[str, float] | None
    source: str
    schedule: dict[str, Any] | None = None  # a mixing schedule (online methods); None = the static mixture


class JobStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.db_path = self.path / "runs.sqlite"

    # ------------------------------------------------------------------------------------------ life cycle

    @classmethod
    def create(cls, workdir: Path, spec: SearchSpec, job_id: str | None = None) -> JobStore:
        job_id = job_id or new_job_id(spec.name)
        path = Path(workdir) / "jobs" / job_id
        path.mkdir(parents=True, exist_ok=False)
        (path / "spec.yaml").write_text(spec.to_yaml())
        # The run table is built under a temporary name and renamed when its tables exist: a reader polling the
        # job folder (`mixopt status`, a test) never opens a runs.sqlite without them.
        tmp = cls(path)
        tmp.db_path = path / "runs.sqlite.new"
        with tmp._db() as db:
            db.executescript(SCHEMA)
            db.execute("INSERT INTO meta VALUES ('job_id', ?), ('created_at', ?), ('state', 'created')",
                       (job_id, json.dumps(time.time())))
        con = sqlite3.connect(tmp.db_path)
        try:
            con.execute("PRAGMA journal_mode=DELETE")  # fold the WAL into the file before it is renamed
        finally:
            con.close()
        tmp.db_path.replace(path / "runs.sqlite")
        return cls(path)

    @classmethod
    def open(cls, workdir: Path, job: str | None) -> JobStore:
        """A job by id (under WORKDIR/jobs), by folder path, or the newest job when `job` is None."""
        jobs = Path(workdir) / "jobs"
        if job is None:
            found = sorted(jobs.glob("*/runs.sqlite"), key=lambda p: p.stat().st_mtime) if jobs.is_dir() else []
            if not found:
                raise InputError(str(jobs), "no jobs here", "submit one with `mixopt submit SPEC` or pass --workdir")
            return cls(found[-1].parent)._migrated()
        for cand in (Path(job), jobs / job):
            if (cand / "runs.sqlite").is_file():
                return cls(cand)._migrated()
        # A unique prefix of a job id works too (ids are long; a terminal may cut them).
        matches = sorted(p.parent for p in jobs.glob(f"{glob.escape(job)}*/runs.sqlite")) if jobs.is_dir() else []
        if len(matches) == 1:
            return cls(matches[0])._migrated()
        if len(matches) > 1:
            raise InputError(f"job {job}", f"matches {len(matches)} jobs ({', '.join(m.name for m in matches[:4])}"
                             f"{', …' if len(matches) > 4 else ''})", "give more of the job id")
        raise InputError(f"job {job}", f"not found under {jobs}",
                         "give a job id (or a unique prefix of one) from `mixopt status`, or a job folder path")

    def _migrated(self) -> JobStore:
        """Tables added since the job was created (all `IF NOT EXISTS`, so this is a no-op otherwise)."""
        try:
            with self._db() as db:
                db.execute("SELECT COUNT(*) FROM proposals").fetchone()
                db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise InputError(str(self.db_path), f"not a readable run table ({e})",
                             "restore the file from a backup, or remove the job folder") from None
        return self

    @property
    def job_id(self) -> str:
        return self.get_meta("job_id") or self.path.name

    @property
    def spec(self) -> SearchSpec:
        return SearchSpec.from_yaml(self.path / "spec.yaml")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.db_path, timeout=60)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            with con:  # one transaction
                yield con
        finally:
            con.close()

    # ------------------------------------------------------------------------------------------ meta

    def get_meta(self, key: str) -> Any:
        with self._db() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return json.loads(row[0])
        except json.JSONDecodeError:
            return row[0]

    def set_meta(self, key: str, value: Any) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                       (key, value if isinstance(value, str) else json.dumps(value)))

    # ------------------------------------------------------------------------------------------ runs

    def n_proposed(self) -> int:
        with self._db() as db:
            return int(db.execute("SELECT COUNT(*) FROM proposals").fetchone()[0])

    def n_search_proposed(self) -> int:
        """Proposals of the search itself (the budget counts these; the verification ladder's are extra)."""
        with self._db() as db:
            return int(db.execute(f"SELECT COUNT(*) FROM proposals WHERE source NOT LIKE '{LADDER}%'").fetchone()[0])

    def ladder_proposals(self) -> list[PendingRun]:
        return self._proposals(f"WHERE p.source LIKE '{LADDER}%'")

    def n_finished(self) -> int:
        with self._db() as db:
            return int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def next_round(self) -> int:
        with self._db() as db:
            last = db.execute("SELECT MAX(round) FROM proposals").fetchone()[0]
        return 0 if last is None else int(last) + 1

    def add_proposals(self, rows: list[PendingRun]) -> None:
        now = time.time()
        with self._db() as db:
            db.executemany(
                "INSERT INTO proposals VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.run_id, r.idx, r.round, r.seed, json.dumps(r.weights),
                  json.dumps(r.fidelity) if r.fidelity else None, r.source, now) for r in rows])
            db.executemany("INSERT INTO schedules VALUES (?, ?)",
                           [(r.run_id, json.dumps(r.schedule)) for r in rows if r.schedule])

    def add_result(self, run_id: str, status: str, metrics: dict[str, float], info: dict[str, Any],
                   error: str | None) -> bool:
        """Record a run's outcome once; a second result for the same run is ignored (returns False)."""
        with self._db() as db:
            cur = db.execute("INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?, ?)",
                             (run_id, status, json.dumps(metrics), json.dumps(info), error, time.time()))
            return cur.rowcount == 1

    def pending(self) -> list[PendingRun]:
        """Proposals without a result, oldest first."""
        return self._proposals("LEFT JOIN results r ON r.run_id = p.run_id WHERE r.run_id IS NULL")

    def untracked(self) -> list[PendingRun]:
        """Proposals that have no MLflow run yet (MLflow was unreachable when they started)."""
        return self._proposals("LEFT JOIN tracking t ON t.run_id = p.run_id WHERE t.run_id IS NULL")

    def _proposals(self, where: str) -> list[PendingRun]:
        with self._db() as db:
            rows = db.execute(
                "SELECT p.run_id, p.idx, p.round, p.seed, p.weights, p.fidelity, p.source, s.schedule "
                f"FROM proposals p LEFT JOIN schedules s ON s.run_id = p.run_id {where} ORDER BY p.idx").fetchall()
        return [PendingRun(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]) if r[5] else None, r[6],
                           json.loads(r[7]) if r[7] else None) for r in rows]

    def set_tracking(self, run_id: str, mlflow_run_id: str) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO tracking VALUES (?, ?)", (run_id, mlflow_run_id))

    def forget_tracking(self) -> None:
        """The MLflow mirror is gone (another server, a wiped store): every run is to be mirrored afresh."""
        with self._db() as db:
            db.execute("DELETE FROM tracking")
            db.execute("DELETE FROM mirrored")
            db.execute("DELETE FROM meta WHERE key IN ('mlflow_parent_run_id', 'mlflow_experiment_id')")

    def mark_mirrored(self, run_id: str) -> None:
        """The run's result reached MLflow; a driver killed before this line re-sends it on resume."""
        with self._db() as db:
            db.execute("INSERT OR IGNORE INTO mirrored VALUES (?)", (run_id,))

    def unmirrored(self) -> list[tuple[PendingRun, dict[str, Any]]]:
        """Finished runs whose result never reached MLflow, with the result as the driver recorded it."""
        with self._db() as db:
            rows = db.execute(
                "SELECT p.run_id, p.idx, p.round, p.seed, p.weights, p.fidelity, p.source, r.status, r.metrics, "
                "r.info, r.error FROM proposals p JOIN results r ON r.run_id = p.run_id "
                "LEFT JOIN mirrored m ON m.run_id = p.run_id WHERE m.run_id IS NULL ORDER BY p.idx").fetchall()
        out = []
        for r in rows:
            p = PendingRun(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]) if r[5] else None, r[6])
            info = json.loads(r[9]) if r[9] else {}
            losses = {k.removeprefix("loss_"): v for k, v in json.loads(r[8]).items()}
            out.append((p, {**info, "status": r[7], "losses": losses, "error": r[10]}))
        return out

    def tracking_ids(self) -> dict[str, str]:
        with self._db() as db:
            return dict(db.execute("SELECT run_id, mlflow_run_id FROM tracking").fetchall())

    def frame(self) -> pd.DataFrame:
        """One row per proposal: weights, status (pending until a result exists), metrics, timings."""
        with self._db() as db:
            rows = db.execute(
                "SELECT p.run_id, p.idx, p.round, p.seed, p.weights, p.fidelity, p.source, p.created_at, "
                "r.status, r.metrics, r.info, r.error, r.finished_at, s.schedule FROM proposals p "
                "LEFT JOIN results r ON r.run_id = p.run_id LEFT JOIN schedules s ON s.run_id = p.run_id "
                "ORDER BY p.idx").fetchall()
        domains = self.get_meta("domains") or []
        records = []
        for (run_id, idx, rnd, seed, w, fid, source, created, status, metrics, info, error, finished,
             schedule) in rows:
            rec: dict[str, Any] = {"run_id": run_id, "idx": idx, "round": rnd, "seed": seed, "source": source,
                                   "stage": "ladder" if source.startswith(LADDER) else "search"}
            weights = json.loads(w)
            rec.update({f"w_{d}": float(weights.get(d, 0.0)) for d in domains or weights})
            rec.update({f"fid_{k}": v for k, v in (json.loads(fid) if fid else {}).items()})
            rec["status"] = status or "pending"
            rec.update(json.loads(metrics) if metrics else {})
            extra = json.loads(info) if info else {}
            for k in ("seconds", "tokens", "params", "tokens_per_s", "train_loss", "steps", "batched"):
                if k in extra:
                    rec[k] = extra[k]
            # Online runs: what the schedule was, what it did, and the static mixture it amounts to.
            rec["schedule"] = json.loads(schedule) if schedule else None
            rec["trajectory"] = extra.get("trajectory")
            rec["mean_weights"] = extra.get("mean_weights")
            rec["curve"] = extra.get("curve")  # [{step, tokens, losses}]: checkpoints (RunTable.with_checkpoints)
            rec["error"] = error
            rec["created_at"], rec["finished_at"] = created, finished
            records.append(rec)
        df = pd.DataFrame(records)
        if df.empty:
            df = pd.DataFrame({f"w_{d}": pd.Series(dtype=float) for d in domains})
            df["status"] = pd.Series(dtype=object)
        return df

    def run_table(self, ladder: bool = False) -> RunTable:
        """The run table; the verification ladder's rows only with `ladder=True` (optimizers never see them:
        they are a check at another fidelity, not proxy evidence of the search)."""
        df = self.frame()
        if not ladder and "stage" in df.columns:
            df = df[df["stage"] != "ladder"].reset_index(drop=True)
        return RunTable(df, token_counts=self.get_meta("token_counts"), source=str(self.db_path))

    # ------------------------------------------------------------------------------------------ outputs

    def write_recommendation(self, rec: dict[str, Any]) -> Path:
        out = self.path / "recommendation.json"
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(rec, indent=2))
        tmp.replace(out)
        return out


def new_job_id(name: str) -> str:
    """`NAME-YYYYmmdd-HHMMSS-xxxx`: sortable by time, unique enough for two jobs started in the same second."""
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def alive(pid: Any) -> bool:
    """Whether a process with this id exists on this machine (a job's driver, say)."""
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, TypeError, ValueError):
        return False


def list_jobs(workdir: Path) -> list[JobStore]:
    jobs = Path(workdir) / "jobs"
    if not jobs.is_dir():
        return []
    return [JobStore(p.parent) for p in sorted(jobs.glob("*/runs.sqlite"), key=lambda p: p.stat().st_mtime)]


def safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", s)
