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
from mixopt.optimizers.base import OptimizerBase, Proposal, Recommendation
from mixopt.proxies.model import model_size
from mixopt.runs import RunTable
from mixopt.search import cluster
from mixopt.search.store import JobStore, PendingRun
from mixopt.search.tracking import Tracker, default_tracking_uri
from mixopt.spec import ProxySpec, SearchSpec
from mixopt.target import apply_target

log = logging.getLogger(__name__)

Event = Callable[[str, dict[str, Any]], None]
DEFAULT_WORKDIR = Path("mixopt-work")


def _quiet(event: str, data: dict[str, Any]) -> None:
    log.info("%s %s", event, data)


def run_seed(seed: int, idx: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}|{idx}".encode()).digest()[:4], "little")


def _train_task(proxy: dict, items: list[dict], train: dict, val: dict, vocab: int, threads: int) -> list[dict]:
    """Runs inside a Ray worker: the proxies of one task, trained together as one batched model.

    items: [{"run_id", "weights", "seed", "schedule", "run_dir"}]. External-command proxies run one after the
    other (a user's trainer is not batchable from here).
    """
    from mixopt.proxies.command import run_command_proxy
    from mixopt.proxies.train import train_proxies
    from mixopt.spec import ProxySpec

    spec = ProxySpec.model_validate(proxy)
    if spec.kind == "command":
        return [run_command_proxy(spec, it["weights"], it["seed"], list(train), it.get("run_dir"),
                                  it.get("schedule")).to_dict() for it in items]
    results = train_proxies(spec, [it["weights"] for it in items], [it["seed"] for it in items], train, val,
                            vocab, threads, schedules=[it.get("schedule") for it in items])
    return [r.to_dict() for r in results]


def resolve_fidelity(spec: SearchSpec, fidelity: dict[str, Any] | None, vocab_size: int
                     ) -> tuple[ProxySpec, dict[str, float]]:
    """The proxy a proposal asks for, and the fidelity record stored with its run.

    A proposal names its fidelity by `level` (index into [proxy, *fidelities]), `proxy` (a proxy's name) or
    `params` (the nearest proxy by total parameter count, on a log scale); `tokens` overrides the chosen
    proxy's budget. No fidelity means the search's `proxy`. The record (level, params, active_params,
    nonembedding_params — what size laws want —, tokens, flops) becomes the `fid_*` columns of the run table,
    so optimizers see what was actually trained.
    """
    proxies = spec.proxies
    fid = dict(fidelity or {})
    unknown = sorted(set(fid) - {"level", "proxy", "params", "tokens", "active_params", "nonembedding_params",
                                 "flops"})
    if unknown:
        raise ValueError(f"fidelity keys {unknown} are not understood; use level, proxy, params or tokens")
    level = 0
    if "level" in fid:
        level = int(fid["level"])
        if not 0 <= level < len(proxies):
            raise ValueError(f"fidelity level {level} does not exist; this search has {len(proxies)} proxies")
    elif "proxy" in fid:
        names = [p.name for p in proxies]
        if fid["proxy"] not in names:
            raise ValueError(f"fidelity names proxy {fid['proxy']!r}; this search has {names}")
        level = names.index(fid["proxy"])
    elif "params" in fid:
        sizes = [model_size(p, vocab_size).total if p.kind != "command" else 0 for p in proxies]
        want = math.log(max(float(fid["params"]), 1.0))
        level = min(range(len(proxies)), key=lambda i: abs(math.log(max(sizes[i], 1)) - want))
    proxy = proxies[level]
    if "tokens" in fid and int(fid["tokens"]) != proxy.tokens:
        proxy = proxy.model_copy(update={"tokens": int(fid["tokens"])})
        ProxySpec.model_validate(proxy.model_dump())  # budgets below one batch are refused here
    record: dict[str, float] = {"level": level, "tokens": proxy.tokens}
    if proxy.kind != "command":
        size = model_size(proxy, vocab_size)
        record.update(params=size.total, active_params=size.active, nonembedding_params=size.non_embedding,
                      flops=size.flops_per_token * proxy.tokens)
    return proxy, record


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
        while True:
            batch = store.pending()  # left over from a killed driver: same mixtures, same seeds
            if not batch:
                n_done = store.n_proposed()
                if n_done >= spec.budget.runs:
                    return
                batch = self._next_round(min(spec.parallelism, spec.budget.runs - n_done), data.vocab_size)
                store.add_proposals(batch)
            tracked = store.tracking_ids()
            refs: dict[Any, list[PendingRun]] = {}
            for proxy, group in self._tasks(batch, data.vocab_size):
                proxy_dict = proxy.model_dump(mode="json")
                for p in group:
                    if tracker is not None and parent and p.run_id not in tracked:
                        mid = self._safe(tracker.start_proxy, parent, store.job_id, p.run_id, p.weights, p.seed,
                                         p.round, proxy_dict)
                        if mid:
                            store.set_tracking(p.run_id, mid)
                            tracked[p.run_id] = mid
                    self.on_event("start", {"run_id": p.run_id, "weights": p.weights})
                items = [{"run_id": p.run_id, "weights": p.weights, "seed": p.seed, "schedule": p.schedule,
                          "run_dir": str(store.path / "runs" / p.run_id)} for p in group]
                task = ray.remote(_train_task).options(num_cpus=proxy.num_cpus, num_gpus=proxy.num_gpus,
                                                       max_retries=1)
                ref = task.remote(proxy_dict, items, train_ref, val_ref, data.vocab_size,
                                  max(1, int(proxy.num_cpus)))
                refs[ref] = group
            waiting = list(refs)
            while waiting:
                ready, waiting = ray.wait(waiting, num_returns=1)
                group = refs[ready[0]]
                try:
                    results = ray.get(ready[0])
                except Exception as e:  # the task itself crashed (OOM, worker died, bug): failed runs
                    results = [{"status": "failed", "losses": {}, "error": _tail(e)}] * len(group)
                for p, res in zip(group, results, strict=True):
                    self._record(p, res, tracker, tracked.get(p.run_id))

    def _tasks(self, batch: list[PendingRun], vocab_size: int) -> list[tuple[ProxySpec, list[PendingRun]]]:
        """Group a round's runs by the proxy they train, then into tasks of `proxies_per_task` runs each."""
        groups: dict[str, tuple[ProxySpec, list[PendingRun]]] = {}
        for p in batch:
            proxy, _ = resolve_fidelity(self.spec, p.fidelity, vocab_size)
            key = proxy.model_dump_json()
            groups.setdefault(key, (proxy, []))[1].append(p)
        tasks = []
        for proxy, runs in groups.values():
            k = proxy.proxies_per_task
            tasks += [(proxy, runs[i:i + k]) for i in range(0, len(runs), k)]
        return tasks

    def _next_round(self, n: int, vocab_size: int) -> list[PendingRun]:
        store, spec = self.store, self.spec
        assert store is not None
        start = store.n_proposed()
        round_ = store.next_round()
        history = store.run_table()
        mixtures: list[tuple[Proposal, str]] = []
        for i in range(start, min(start + n, len(spec.include_mixtures))):
            mix = spec.include_mixtures[i]
            total = sum(mix.values())  # within 1e-3 of 1 (checked at load); stored exactly on the simplex
            mixtures.append((Proposal({d: float(mix.get(d, 0.0)) / total for d in history.domains}), "include"))
        if len(mixtures) < n:
            for prop in self.optimizer.propose(history, n - len(mixtures)):
                mixtures.append((prop, self.optimizer.name))
        out = []
        for i, (prop, src) in enumerate(mixtures):
            try:
                _, record = resolve_fidelity(spec, prop.fidelity, vocab_size)
            except ValueError as e:
                raise InputError(f"optimizer {self.optimizer.name}", f"proposed an impossible fidelity: {e}",
                                 "list the proxy sizes it may use under `fidelities:` in the search spec") from None
            out.append(PendingRun(run_id=f"r{start + i:04d}", idx=start + i, round=round_,
                                  seed=run_seed(spec.seed, start + i), weights=prop.weights, fidelity=record,
                                  source=src, schedule=prop.schedule))
        return out

    def _record(self, p: PendingRun, res: dict[str, Any], tracker: Tracker | None, mlflow_id: str | None
                ) -> None:
        assert self.store is not None
        metrics = {f"loss_{d}": float(v) for d, v in res.get("losses", {}).items()}
        status = res.get("status", "failed")
        if status == "ok" and not all(math.isfinite(v) for v in metrics.values()):
            status, res["error"] = "failed", "non-finite validation loss"
        if status != "ok":
            metrics = {}  # a failed run's numbers must never reach a predictor
        info = {k: res.get(k) for k in ("seconds", "tokens", "params", "active_params", "flops", "tokens_per_s",
                                        "train_loss", "steps", "failed_step", "batched", "epochs", "mean_weights",
                                        "trajectory", "curve", "expert_load") if res.get(k) not in (None, [], {})}
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
            if self._safe(tracker.finish_proxy, mlflow_id, res["status"], shown, res.get("error"), _series(res),
                          int(res.get("steps") or 0)) is True:
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


def _series(res: dict[str, Any]) -> list[tuple[str, float, int]]:
    """Step-indexed metrics for MLflow charts: `loss_<domain>` along the eval curve and `mix_<domain>`, the
    proportions in force at each step of the trajectory (online schedules), closed at the last step."""
    out = [(f"loss_{d}", float(v), int(c["step"])) for c in res.get("curve") or [] for d, v in c["losses"].items()]
    traj = res.get("trajectory") or []
    if len(traj) > 1:
        end = int(res.get("steps") or traj[-1]["step"])
        for point in traj:
            out += [(f"mix_{d}", float(w), int(point["step"])) for d, w in point["weights"].items()]
        out += [(f"mix_{d}", float(w), end) for d, w in traj[-1]["weights"].items()]
    return out


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
