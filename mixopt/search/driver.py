"""The driver loop: propose → train proxies as Ray tasks → record → repeat → recommend.

One process drives a job. It proposes a round of `parallelism` mixtures from the run table, writes them to the
store before starting them, runs each as a Ray task, and records every result the moment it arrives (to SQLite
first, then to MLflow). Rounds are synchronous so that proposals depend only on the seed and the history, not
on which proxy happened to finish first.
"""

from __future__ import annotations

import hashlib
import logging
import math
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mixopt.data.prepare import PreparedData, prepare
from mixopt.errors import InputError
from mixopt.optimizers import get_optimizer
from mixopt.optimizers.base import OptimizerBase, Recommendation
from mixopt.runs import RunTable
from mixopt.search import cluster
from mixopt.search.store import JobStore, PendingRun
from mixopt.search.tracking import Tracker, default_tracking_uri
from mixopt.spec import SearchSpec
from mixopt.target import apply_target

log = logging.getLogger(__name__)

Event = Callable[[str, dict[str, Any]], None]
DEFAULT_WORKDIR = Path("mixopt-work")


def _quiet(event: str, data: dict[str, Any]) -> None:
    log.info("%s %s", event, data)


def run_seed(seed: int, idx: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}|{idx}".encode()).digest()[:4], "little")


def _train_task(proxy: dict, weights: dict[str, float], seed: int, train: dict, val: dict, vocab: int,
                threads: int) -> dict:
    """Runs inside a Ray worker."""
    from mixopt.proxies.train import train_proxy
    from mixopt.spec import ProxySpec

    return train_proxy(ProxySpec.model_validate(proxy), weights, train, val, vocab, seed, threads).to_dict()


class Search:
    """A search job: `Search(spec).run()` creates the job and runs it; `Search.resume(path)` continues one."""

    def __init__(self, spec: SearchSpec, workdir: str | Path | None = None, ray_address: str | None = None,
                 tracking_uri: str | None = None, on_event: Event | None = None,
                 store: JobStore | None = None) -> None:
        self.spec = spec
        self.workdir = Path(workdir or spec.workdir or DEFAULT_WORKDIR)
        self.ray_address = ray_address or spec.ray_address
        self.tracking_uri = tracking_uri or spec.tracking_uri or default_tracking_uri(self.workdir)
        self.on_event = on_event or _quiet
        # Validate the optimizer settings before anything is written.
        self.optimizer: OptimizerBase = get_optimizer(spec.optimizer.name, seed=spec.seed,
                                                      objective=spec.objective, **spec.optimizer.settings)
        self.store = store

    @classmethod
    def resume(cls, job: str | Path | None, workdir: str | Path | None = None, **kw: Any) -> Search:
        wd = Path(workdir or DEFAULT_WORKDIR)
        store = JobStore.open(wd, None if job is None else str(job))
        tracking_uri = kw.pop("tracking_uri", None) or store.get_meta("tracking_uri")
        return cls(store.spec, workdir=wd, store=store, tracking_uri=tracking_uri, **kw)

    # ------------------------------------------------------------------------------------------ main loop

    def run(self) -> Recommendation:
        data = self._prepare()
        if self.store is None:
            self.store = JobStore.create(self.workdir, self.spec)
        store = self.store
        store.set_meta("domains", data.domains)
        store.set_meta("token_counts", data.token_counts)
        store.set_meta("data_path", str(data.path))
        store.set_meta("tracking_uri", self.tracking_uri)
        store.set_meta("state", "running")
        self.on_event("job", {"job_id": store.job_id, "path": str(store.path), "budget": self.spec.budget.runs,
                              "done": store.n_finished()})
        tracker = self._tracker()
        parent = None
        if tracker is not None:
            parent = self._safe(tracker.start_job, store.job_id, self.spec.model_dump(mode="json"),
                                store.get_meta("mlflow_parent_run_id"))
            if parent:
                store.set_meta("mlflow_parent_run_id", parent)
                store.set_meta("mlflow_experiment_id", tracker.experiment_id)
                self._catch_up(tracker)
        started_ray = cluster.connect(self.ray_address)
        try:
            self._loop(data, tracker, parent)
            try:
                rec = self.recommend()
            except InputError:  # e.g. every proxy failed: the runs are recorded, there is nothing to recommend
                store.set_meta("state", "no-recommendation")
                if tracker is not None and parent:
                    self._safe(tracker.finish_job, parent, None, "FAILED")
                raise
        except InputError:
            raise
        except BaseException:
            store.set_meta("state", "interrupted")
            if tracker is not None and parent:
                self._safe(tracker.finish_job, parent, None, "KILLED")
            raise
        finally:
            if started_ray:
                cluster.shutdown()
        store.set_meta("state", "done")
        if tracker is not None and parent:
            self._safe(tracker.finish_job, parent, rec.to_dict())
        return rec

    def recommend(self, optimizer: OptimizerBase | None = None) -> Recommendation:
        assert self.store is not None
        opt = optimizer or self.optimizer
        table = self.store.run_table()
        rec = apply_target(opt.recommend(table, self.spec.target), table.token_counts, self.spec.target)
        self.store.write_recommendation(rec.to_dict())
        self.on_event("recommendation", rec.to_dict())
        return rec

    def _prepare(self) -> PreparedData:
        def on_domain(name: str, i: int, n: int) -> None:
            self.on_event("prepare", {"domain": name, "i": i, "n": n})

        return prepare(self.spec.dataset, self.workdir / "data", on_domain=on_domain)

    def _tracker(self) -> Tracker | None:
        try:
            return Tracker(self.tracking_uri, self.spec.name, self.workdir / "mlartifacts")
        except Exception as e:  # tracking mirrors the run table; the search must not depend on it
            log.warning("MLflow tracking unavailable (%s): runs are recorded in the job store only", e)
            self.on_event("warning", {"message": f"MLflow tracking unavailable: {e}"})
            return None

    def _safe(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as e:
            log.warning("MLflow call %s failed: %s", getattr(fn, "__name__", fn), e)
            self.on_event("warning", {"message": f"MLflow call failed: {e}"})
            return None

    def _loop(self, data: PreparedData, tracker: Tracker | None, parent: str | None) -> None:
        import ray

        store, spec = self.store, self.spec
        assert store is not None
        train_ref = ray.put(data.load("train", mmap=False))
        val_ref = ray.put(data.load("val", mmap=False))
        threads = max(1, int(spec.proxy.num_cpus))
        task = ray.remote(_train_task).options(num_cpus=spec.proxy.num_cpus, num_gpus=spec.proxy.num_gpus,
                                               max_retries=1)
        proxy_dict = spec.proxy.model_dump(mode="json")
        while True:
            batch = store.pending()  # left over from a killed driver: same mixtures, same seeds
            if not batch:
                n_done = store.n_proposed()
                if n_done >= spec.budget.runs:
                    return
                batch = self._next_round(min(spec.parallelism, spec.budget.runs - n_done))
                store.add_proposals(batch)
            tracked = store.tracking_ids()
            refs = {}
            for p in batch:
                if tracker is not None and parent and p.run_id not in tracked:
                    mid = self._safe(tracker.start_proxy, parent, store.job_id, p.run_id, p.weights, p.seed,
                                     p.round, proxy_dict)
                    if mid:
                        store.set_tracking(p.run_id, mid)
                        tracked[p.run_id] = mid
                refs[task.remote(proxy_dict, p.weights, p.seed, train_ref, val_ref, data.vocab_size,
                                 threads)] = p
                self.on_event("start", {"run_id": p.run_id, "weights": p.weights})
            waiting = list(refs)
            while waiting:
                ready, waiting = ray.wait(waiting, num_returns=1)
                p = refs[ready[0]]
                try:
                    res = ray.get(ready[0])
                except Exception as e:  # the task itself crashed (OOM, worker died, bug): a failed run
                    res = {"status": "failed", "losses": {}, "error": _tail(e)}
                self._record(p, res, tracker, tracked.get(p.run_id))

    def _next_round(self, n: int) -> list[PendingRun]:
        store, spec = self.store, self.spec
        assert store is not None
        start = store.n_proposed()
        round_ = store.next_round()
        history = store.run_table()
        mixtures: list[tuple[dict[str, float], str]] = []
        for i in range(start, min(start + n, len(spec.include_mixtures))):
            mix = spec.include_mixtures[i]
            total = sum(mix.values())  # within 1e-3 of 1 (checked at load); stored exactly on the simplex
            mixtures.append(({d: float(mix.get(d, 0.0)) / total for d in history.domains}, "include"))
        if len(mixtures) < n:
            for prop in self.optimizer.propose(history, n - len(mixtures)):
                mixtures.append((prop.weights, self.optimizer.name))
        return [PendingRun(run_id=f"r{start + i:04d}", idx=start + i, round=round_,
                           seed=run_seed(spec.seed, start + i), weights=w, fidelity=None, source=src)
                for i, (w, src) in enumerate(mixtures)]

    def _record(self, p: PendingRun, res: dict[str, Any], tracker: Tracker | None, mlflow_id: str | None
                ) -> None:
        assert self.store is not None
        metrics = {f"loss_{d}": float(v) for d, v in res.get("losses", {}).items()}
        status = res.get("status", "failed")
        if status == "ok" and not all(math.isfinite(v) for v in metrics.values()):
            status, res["error"] = "failed", "non-finite validation loss"
        if status != "ok":
            metrics = {}  # a failed run's numbers must never reach a predictor
        info = {k: res.get(k) for k in ("seconds", "tokens", "params", "tokens_per_s", "train_loss", "steps",
                                        "epochs")}
        fresh = self.store.add_result(p.run_id, status, metrics, info, res.get("error"))
        objective = self._mirror(p, {**res, "status": status}, tracker, mlflow_id) if fresh else None
        self.on_event("result", {"run_id": p.run_id, "status": status, "objective": objective,
                                 "error": res.get("error"), "seconds": res.get("seconds")})


    def _mirror(self, p: PendingRun, res: dict[str, Any], tracker: Tracker | None, mlflow_id: str | None
                ) -> float | None:
        """Send a recorded result to MLflow (once); returns the run's objective."""
        assert self.store is not None
        metrics = {f"loss_{d}": float(v) for d, v in (res.get("losses") or {}).items()}
        objective = None
        if metrics and res["status"] == "ok":
            objective = float(RunTable(_one_row(p.weights, metrics)).objective(self.spec.objective)[0])
        if tracker is not None and mlflow_id:
            shown = dict(metrics)
            if objective is not None:
                shown["objective"] = objective
            for k in ("seconds", "tokens_per_s", "train_loss"):
                if isinstance(res.get(k), int | float):
                    shown[k] = float(res[k])
            if self._safe(tracker.finish_proxy, mlflow_id, res["status"], shown, res.get("error")) is True:
                self.store.mark_mirrored(p.run_id)
        return objective

    def _catch_up(self, tracker: Tracker | None) -> None:
        """Runs recorded in the store whose MLflow mirror was cut off by a killed driver are finished now."""
        if tracker is None or self.store is None:
            return
        tracked = self.store.tracking_ids()
        for p, res in self.store.unmirrored():
            if p.run_id in tracked:
                self._mirror(p, res, tracker, tracked[p.run_id])


def _one_row(weights: dict[str, float], metrics: dict[str, float]):
    import pandas as pd

    return pd.DataFrame([{**{f"w_{d}": w for d, w in weights.items()}, **metrics}])


def _tail(e: BaseException, n: int = 2000) -> str:
    text = "".join(traceback.format_exception_only(type(e), e)).strip()
    return text[-n:]


def submit(spec: SearchSpec | str | Path, **kw: Any) -> Recommendation:
    """Run a search to the end in this process (local Ray unless an address is given)."""
    if not isinstance(spec, SearchSpec):
        spec = SearchSpec.from_yaml(spec)
    return Search(spec, **kw).run()


__all__ = ["DEFAULT_WORKDIR", "Search", "submit"]
