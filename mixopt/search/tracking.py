"""MLflow mirror of a job: a parent run per job, a child run per proxy.

MLflow is for people (UI, comparisons, artifacts); nothing is read back from it to drive the search. Every
call goes through one `MlflowClient` bound to an explicit tracking URI (no global state), and each run's
parameters and metrics are sent in one `log_batch`.

Tags, on the parent and on every child, make runs filterable in the UI: `mixopt.job_id`, `mixopt.optimizer`,
`mixopt.status` (running, ok, failed; done, interrupted on the parent) and, on children, `mixopt.fidelity`
(the proxy's name) and `mixopt.fidelity_level`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# A tracking server that is down must cost the driver seconds, not MLflow's default of several minutes of
# retries per call; the driver stops calling it for a while after a failure and catches up later.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


def default_tracking_uri(workdir: Path) -> str:
    return f"sqlite:///{(Path(workdir) / 'mlflow.db').resolve()}"


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "databricks"))


class Tracker:
    def __init__(self, uri: str, experiment: str, artifact_root: Path) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        for k, v in HTTP_DEFAULTS.items():
            os.environ.setdefault(k, v)
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        # Schema migrations of a new store log at INFO through MLflow's own handler; keep the terminal clean.
        logging.getLogger("mlflow").setLevel(logging.WARNING)

        self.uri = uri
        with _store_lock(uri):  # two drivers creating one SQLite store at once would race its migrations
            self.client = MlflowClient(tracking_uri=uri)
            self.experiment_id = self._experiment(experiment, artifact_root, MlflowException)

    def _experiment(self, experiment: str, artifact_root: Path, MlflowException: type) -> str:  # noqa: N803
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            # A local store keeps artifacts beside it; a server decides where its artifacts go.
            location = None
            if not is_remote(self.uri):
                artifact_root.mkdir(parents=True, exist_ok=True)
                location = artifact_root.resolve().as_uri()
            try:
                return self.client.create_experiment(experiment, artifact_location=location)
            except MlflowException:  # another job created it a moment ago
                exp = self.client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
        return exp.experiment_id

    def exists(self, run_id: str) -> bool:
        """Whether the server knows the run (a wiped or different store does not)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
            return True
        except MlflowException:
            return False

    def start_job(self, job_id: str, spec: dict[str, Any], existing: str | None = None) -> str:
        from mlflow.entities import Param, RunTag

        if existing is not None:
            self.client.update_run(existing, status="RUNNING")
            self.client.set_tag(existing, "mixopt.status", "running")
            return existing
        optimizer = str(spec.get("optimizer", {}).get("name"))
        run = self.client.create_run(self.experiment_id, run_name=job_id, tags={
            "mixopt.job_id": job_id, "mixopt.kind": "job", "mixopt.optimizer": optimizer,
            "mixopt.status": "running"})
        flat = _flatten(spec)
        self.client.log_batch(run.info.run_id, params=[Param(k, _param(v)) for k, v in flat.items()],
                              tags=[RunTag("mixopt.optimizer", optimizer)])
        return run.info.run_id

    def start_proxy(self, parent: str, job_id: str, run_id: str, weights: dict[str, float], seed: int,
                    round_: int, proxy: dict[str, Any], tags: dict[str, str] | None = None) -> str:
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id, run_name=run_id, tags={
            "mlflow.parentRunId": parent, "mixopt.job_id": job_id, "mixopt.run_id": run_id,
            "mixopt.kind": "proxy", "mixopt.status": "running", **(tags or {})})
        params = [Param(f"w_{d}", f"{w:.6f}") for d, w in weights.items()]
        params += [Param("seed", str(seed)), Param("round", str(round_))]
        params += [Param(f"proxy.{k}", _param(v)) for k, v in proxy.items()]
        self.client.log_batch(run.info.run_id, params=params)
        return run.info.run_id

    def finish_proxy(self, mlflow_run_id: str, status: str, metrics: dict[str, float],
                     error: str | None, series: list[tuple[str, float, int]] | None = None, step: int = 0) -> bool:
        """Final metrics (at `step`, the run's last step) plus step series: loss curves, mixing trajectories."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        ms = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and math.isfinite(v)]
        ms += [Metric(k, float(v), now, int(s)) for k, v, s in series or [] if v is not None and math.isfinite(v)]
        tags = [RunTag("mixopt.status", status)] + ([RunTag("mixopt.error", error[-4000:])] if error else [])
        for i in range(0, max(len(ms), 1), 1000):  # log_batch takes at most 1000 metrics
            self.client.log_batch(mlflow_run_id, metrics=ms[i:i + 1000], tags=tags if i == 0 else [])
        self.client.set_terminated(mlflow_run_id, status="FINISHED" if status == "ok" else "FAILED")
        return True

    def finish_job(self, parent: str, rec: dict[str, Any] | None, status: str = "FINISHED",
                   artifacts: list[Path] | None = None) -> bool:
        from mlflow.entities import Metric

        if rec is not None:
            now = int(time.time() * 1000)
            ms = [Metric(f"rec_w_{d}", float(w), now, 0) for d, w in rec["weights"].items()]
            if rec.get("predicted") is not None:
                ms.append(Metric("rec_predicted", float(rec["predicted"]), now, 0))
            self.client.log_batch(parent, metrics=ms)
            self.client.log_dict(parent, rec, "recommendation.json")
        for path in artifacts or []:
            self.client.log_artifact(parent, str(path))
        tag = {"FINISHED": "done", "FAILED": "no-recommendation", "KILLED": "interrupted"}.get(status, status)
        self.client.set_tag(parent, "mixopt.status", tag)
        self.client.set_terminated(parent, status=status)
        return True

    def children(self, parent: str) -> dict[str, list[str]]:
        """run_id -> MLflow run ids of the job's child runs, oldest first (normally one each)."""
        out: dict[str, list[str]] = {}
        for r in sorted(self.proxy_runs(parent), key=lambda r: r.info.start_time or 0):
            rid = r.data.tags.get("mixopt.run_id")
            if rid:
                out.setdefault(rid, []).append(r.info.run_id)
        return out

    def delete(self, mlflow_run_id: str) -> None:
        self.client.delete_run(mlflow_run_id)

    def proxy_runs(self, parent: str) -> list[Any]:
        return self.client.search_runs([self.experiment_id],
                                       filter_string=f"tags.mlflow.parentRunId = '{parent}'",
                                       max_results=50_000)


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock beside a local SQLite store while it is opened (and created or migrated)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in ("dataset",):
            out.update(_flatten(v, key + "."))
        elif key != "dataset":
            out[key] = v
    if not prefix and "dataset" in d:
        out["dataset.name"] = d["dataset"].get("name")
    return out


def _param(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."
