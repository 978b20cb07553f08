"""The driver loop: propose → train proxies as Ray tasks → record → repeat → recommend.

One process drives a job. It asks the optimizer for mixtures, writes them to the store before starting them (a
write-ahead log), runs them as Ray tasks of `proxies_per_task` proposals each, and records every result the
moment it arrives (to SQLite first, then to MLflow).

Scheduling (`scheduling:` in the search spec):
- `async` (default): at most `parallelism` runs in flight; whenever a task ends, its results are recorded and
  the optimizer is asked for as many new proposals as there are free slots, with the runs still in flight in
  the history as `pending` rows. No worker waits for the slowest proxy of a round.
- `rounds`: propose `parallelism` mixtures, wait for all of them, repeat. The proposals then depend only on the
  seed and the history, never on which proxy happened to finish first; the price is idle workers at the end of
  every round (large when run lengths differ, e.g. across fidelities).
An optimizer that needs complete results at some points (CLIMB between its rounds) can say so with an optional
`wait_for_pending(history) -> bool` method; the async driver then lets the runs in flight finish first.
Optimizers seed their randomness with the number of rows in the history (pending rows included), so in async
mode proposers that ignore results (random, RegMix's sampler) are still deterministic for an uninterrupted job
whose `parallelism` is a multiple of `proxies_per_task`; only rounds are reproducible whatever the timing.

Failures: a run that fails by itself (diverged, NaN, the trainer raised or exited non-zero, a timeout) is a
`failed` row with the reason and is never retried; a task whose worker or node died (a system failure) is
re-run by Ray up to `max_retries` times. A task that runs longer than its proxy's `timeout_s` is cancelled
(its worker killed) and its runs are failed with "timed out".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mixopt.data.prepare import PreparedData, prepare
from mixopt.errors import InputError, MixoptError
from mixopt.optimizers import get_optimizer
from mixopt.optimizers.base import OptimizerBase, Proposal, Recommendation, WaitsForPending
from mixopt.proxies.model import model_size
from mixopt.runs import RunTable
from mixopt.search import cluster, ladder
from mixopt.search.checks import check_search, load_search_spec
from mixopt.search.store import JobStore, PendingRun, alive
from mixopt.search.tracking import Tracker, default_tracking_uri
from mixopt.simplex import distance_to_prior
from mixopt.spec import ProxySpec, SearchSpec
from mixopt.target import apply_target

log = logging.getLogger(__name__)

Event = Callable[[str, dict[str, Any]], None]
DEFAULT_WORKDIR = Path("mixopt-work")


def _quiet(event: str, data: dict[str, Any]) -> None:
    log.info("%s %s", event, data)


def run_seed(seed: int, idx: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}|{idx}".encode()).digest()[:4], "little")


def _train_task(proxy: dict, items: list[dict], train: dict | None, val: dict | None, vocab: int, threads: int,
                domains: list[str]) -> Iterator[Any]:
    """Runs inside a Ray worker: the proxies of one task, trained together as one batched model.

    A streaming generator: it first yields a start marker (the driver's timeout counts from there, not from
    submission, so time spent waiting for a free worker or an autoscaled node is not counted), then the list of
    results. items: [{"run_id", "weights", "seed", "schedule", "run_dir"}]. External-command proxies run one
    after the other (a user's trainer is not batchable from here).
    """
    yield STARTED
    from mixopt.proxies.command import run_command_proxy
    from mixopt.proxies.entry import train_proxies
    from mixopt.spec import ProxySpec

    spec = ProxySpec.model_validate(proxy)
    if spec.kind == "command":
        yield [run_command_proxy(spec, it["weights"], it["seed"], domains, it.get("run_dir"),
                                 it.get("schedule")).to_dict() for it in items]
        return
    assert train is not None and val is not None
    results = train_proxies(spec, [it["weights"] for it in items], [it["seed"] for it in items], train, val,
                            vocab, threads, schedules=[it.get("schedule") for it in items])
    yield [r.to_dict() for r in results]


STARTED = "started"
COMMAND_GRACE_S = 60.0  # the driver's limit on a command task exceeds the command's own, which reports better
MLFLOW_RETRY_S = 30.0  # after an MLflow failure, calls are skipped this long, then tried again


def resolve_fidelity(spec: SearchSpec, fidelity: dict[str, Any] | None, vocab_size: int
                     ) -> tuple[ProxySpec, dict[str, float]]:
    """The proxy a proposal asks for, and the fidelity record stored with its run.

    A proposal names its fidelity by `level` (index into [proxy, *fidelities]), `proxy` (a proxy's name) or
    `params` (the nearest proxy by total parameter count, on a log scale); `tokens` overrides the chosen
    proxy's budget. No fidelity means the search's `proxy`. The record (level, params, active_params,
    nonembedding_params — what size laws want —, tokens, flops) becomes the `fid_*` columns of the run table,
    so optimizers see what was actually trained.
    """
    proxies = [p.for_vocab(vocab_size) for p in spec.proxies]
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
        proxy = proxy.model_copy(update={"tokens": int(fid["tokens"]), "tokens_per_param": None})
        ProxySpec.model_validate(proxy.model_dump())  # budgets below one batch are refused here
    record: dict[str, float] = {"level": level, "tokens": proxy.tokens}
    if proxy.kind != "command":
        size = model_size(proxy, vocab_size)
        record.update(params=size.total, active_params=size.active, nonembedding_params=size.non_embedding,
                      flops=size.flops_per_token * proxy.tokens)
    return proxy, record


@dataclass
class _Task:
    """One Ray task in flight: the runs it trains, when it started, how long it may run."""

    proxy: ProxySpec
    runs: list[PendingRun]
    limit_s: float | None
    started: float | None = None


@dataclass
class _Mirror:
    """The MLflow side of a job, best effort: the search never waits for, or fails because of, MLflow.

    After a failed call, MLflow is left alone for MLFLOW_RETRY_S; then the next call tries again and, once one
    succeeds, `catch_up` creates the child runs and sends the results that were skipped meanwhile.
    `mixopt sync JOB` does the same after the fact (e.g. when the server was down until the end).
    """

    search: Search
    tracker: Tracker | None
    parent: str | None = None
    down_until: float = 0.0
    behind: bool = False
    warned: bool = field(default=False, repr=False)

    @property
    def up(self) -> bool:
        return self.tracker is not None and self.parent is not None and time.monotonic() >= self.down_until

    def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        if self.tracker is None or time.monotonic() < self.down_until:
            self.behind = True
            return None
        try:
            out = fn(*args, **kw)
        except Exception as e:
            self.down_until = time.monotonic() + MLFLOW_RETRY_S
            self.behind = True
            log.warning("MLflow call %s failed: %s", getattr(fn, "__name__", fn), e)
            if not self.warned:  # one warning per outage, not one per run
                self.search.on_event("warning", {"message": f"MLflow unreachable ({_first_line(e)}); runs are "
                                     "recorded in the job store and mirrored when it is back (or `mixopt sync`)"})
                self.warned = True
            return None
        if self.warned:
            self.search.on_event("warning", {"message": "MLflow reachable again; catching up"})
            self.warned = False
        return out

    def open_job(self) -> None:
        """The parent run: the job's own (verified to exist on this server), or a new one."""
        store, search = self.search.store, self.search
        assert store is not None
        if self.tracker is None:
            return
        existing = store.get_meta("mlflow_parent_run_id")
        if existing and self.call(self.tracker.exists, existing) is False:
            store.forget_tracking()  # another server, or a wiped store: mirror everything afresh
            existing = None
        parent = self.call(self.tracker.start_job, store.job_id, search.spec.model_dump(mode="json"), existing)
        if parent:
            self.parent = parent
            store.set_meta("mlflow_parent_run_id", parent)
            store.set_meta("mlflow_experiment_id", self.tracker.experiment_id)

    def start(self, p: PendingRun, proxy: ProxySpec) -> None:
        store = self.search.store
        assert store is not None
        if self.tracker is None or self.parent is None:
            self.behind = self.tracker is not None
            return
        if p.run_id in store.tracking_ids():  # a pending run re-run after a resume keeps its MLflow run
            return
        tags = {"mixopt.optimizer": self.search.spec.optimizer.name, "mixopt.fidelity": proxy.name,
                "mixopt.fidelity_level": str(int((p.fidelity or {}).get("level", 0))), "mixopt.source": p.source}
        mid = self.call(self.tracker.start_proxy, self.parent, store.job_id, p.run_id, p.weights, p.seed, p.round,
                        proxy.model_dump(mode="json"), tags)
        if mid:
            store.set_tracking(p.run_id, mid)

    def finish(self, p: PendingRun, res: dict[str, Any], objective: float | None) -> None:
        store = self.search.store
        assert store is not None
        mid = store.tracking_ids().get(p.run_id)
        if self.tracker is None or mid is None:
            self.behind = self.tracker is not None
            return
        metrics = {f"loss_{d}": float(v) for d, v in (res.get("losses") or {}).items()}
        if objective is not None:
            metrics["objective"] = objective
        for k in ("seconds", "tokens_per_s", "train_loss"):
            if isinstance(res.get(k), int | float):
                metrics[k] = float(res[k])
        if self.call(self.tracker.finish_proxy, mid, res["status"], metrics, res.get("error"), _series(res),
                     int(res.get("steps") or 0)) is True:
            store.mark_mirrored(p.run_id)

    def catch_up(self, force: bool = False) -> None:
        """Child runs for proposals that have none, results that never reached MLflow (a killed driver, an
        outage): the mirror ends up as it would have been had MLflow never failed. `force` tries even within
        the pause after a failure (the end of a search, `mixopt sync`)."""
        store = self.search.store
        assert store is not None
        if self.tracker is None:
            return
        if force:
            self.down_until = 0.0
        if self.parent is None:
            self.open_job()
        if not self.up:
            return
        self.behind = False
        vocab = int(store.get_meta("vocab_size") or 257)
        untracked = store.untracked()
        if untracked:
            # A driver killed between creating a child run and noting its id left a child the store does not
            # know: adopt it (and drop any doubles) instead of creating another.
            known = self.call(self.tracker.children, self.parent)
            if known is None:
                return
            for p in untracked:
                ids = known.get(p.run_id)
                if ids:
                    store.set_tracking(p.run_id, ids[0])
                    for extra in ids[1:]:
                        self.call(self.tracker.delete, extra)
                else:
                    self.start(p, resolve_fidelity(self.search.spec, p.fidelity, vocab)[0])
        for p, res in store.unmirrored():
            self.finish(p, res, self.search.objective_of(p, res))

    def close(self, rec: dict[str, Any] | None, status: str, artifacts: list[Path] | None = None) -> bool:
        if self.tracker is None or self.parent is None:
            return False
        return self.call(self.tracker.finish_job, self.parent, rec, status, artifacts) is True


class Search:
    """A search job: `Search(spec).run()` creates the job and runs it; `Search.resume(path)` continues one."""

    def __init__(self, spec: SearchSpec, workdir: str | Path | None = None, ray_address: str | None = None,
                 tracking_uri: str | None = None, on_event: Event | None = None,
                 store: JobStore | None = None, job_id: str | None = None) -> None:
        self.spec = spec
        self.workdir = Path(workdir or spec.workdir or DEFAULT_WORKDIR)
        self.ray_address = ray_address or spec.ray_address
        self.tracking_uri = tracking_uri or spec.tracking_uri or default_tracking_uri(self.workdir)
        self.on_event = on_event or _quiet
        self.job_id = job_id
        # Validate the optimizer and its settings before anything is written.
        check_search(spec, spec.name)
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
        if self.store is not None:
            self._refuse_second_driver()
        self._check_memory()
        # Ray first: a cluster that refuses this client (e.g. its token) is told before the data is prepared,
        # and leaves no job folder behind.
        started_ray = cluster.connect(self.ray_address)
        try:
            data = self._prepare()
            if self.store is None:
                self.store = JobStore.create(self.workdir, self.spec, self.job_id)
            store = self.store
            store.set_meta("domains", data.domains)
            store.set_meta("token_counts", data.token_counts)
            store.set_meta("data_path", str(data.path))
            store.set_meta("vocab_size", data.vocab_size)
            store.set_meta("tracking_uri", self.tracking_uri)
            store.set_meta("driver", {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
            store.set_meta("state", "running")
            self.on_event("job", {"job_id": store.job_id, "path": str(store.path),
                                  "budget": self.spec.budget.runs, "done": store.n_finished(),
                                  "best": self._best_so_far()})
            mirror = _Mirror(self, self._tracker())
            mirror.open_job()
            mirror.catch_up()
        except BaseException:
            if started_ray:
                cluster.shutdown()
            raise
        try:
            self._loop(data, mirror)
            mirror.catch_up(force=True)
            try:
                rec = self.recommend(data=data, mirror=mirror)
            except InputError:  # e.g. every proxy failed: the runs are recorded, there is nothing to recommend
                store.set_meta("state", "no-recommendation")
                mirror.close(None, "FAILED")
                raise
        except InputError:
            raise
        except BaseException:
            store.set_meta("state", "interrupted")
            mirror.close(None, "KILLED")
            raise
        finally:
            if started_ray:
                cluster.shutdown()
        store.set_meta("state", "done")
        if mirror.close(rec.to_dict(), "FINISHED", self._artifacts()):
            store.set_meta("mlflow_closed", True)
        else:
            self._artifacts()  # the report is written all the same
            self.on_event("warning", {"message": f"the MLflow view of {store.job_id} is incomplete; the run table "
                                      f"is not: `mixopt sync {store.job_id}` restores it"})
        return rec

    def _check_memory(self) -> None:
        """Refuse, before anything trains, a proxy whose training cannot fit in this machine's memory (a local
        search on the CPU; a cluster's and a GPU's memory are not known here)."""
        if self.ray_address or os.environ.get("RAY_ADDRESS"):
            return
        try:
            ram = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            return
        from mixopt.proxies.model import training_memory_bytes

        vocab = self.spec.dataset.tokenizer.vocab_size or 257
        for p in self.spec.proxies:
            if p.kind == "command" or p.device == "cuda":
                continue
            need = training_memory_bytes(p, vocab)
            if need > 0.8 * ram:
                raise InputError(f"proxy {p.name}", f"training it needs about {need / 2**30:,.1f} GiB of memory "
                                 f"({p.proxies_per_task} per task), more than this machine's {ram / 2**30:.1f} GiB",
                                 "make it smaller (d_model, n_layer, batch_size, seq_len) or lower "
                                 "proxies_per_task")

    def _best_so_far(self) -> float | None:
        """The best objective among the search runs already recorded (a resumed job's earlier sessions)."""
        assert self.store is not None
        table = self.store.run_table()
        if not len(table) or not table.loss_columns:
            return None
        _, y = table.usable(self.spec.objective)
        return float(np.min(y)) if len(y) else None

    def _refuse_second_driver(self) -> None:
        """Two drivers on one job would each re-run its pending proposals: refuse while the first is alive."""
        assert self.store is not None
        driver = self.store.get_meta("driver") or {}
        if (self.store.get_meta("state") == "running" and driver.get("host") == socket.gethostname()
                and driver.get("pid") != os.getpid() and alive(driver.get("pid"))):
            raise InputError(f"job {self.store.job_id}", f"is running (driver pid {driver['pid']} on this machine)",
                             f"wait for it, or `mixopt stop {self.store.job_id}` first")

    def sync(self) -> dict[str, int]:
        """Restore the MLflow view of this job from its run table (`mixopt sync`): parent run, every child run,
        every result, the recommendation and the report. Idempotent; raises MixoptError when MLflow is down."""
        store = self.store
        assert store is not None
        try:
            tracker = Tracker(self.tracking_uri, self.spec.name, self.workdir / "mlartifacts")
        except Exception as e:
            raise MixoptError(f"MLflow at {self.tracking_uri} did not answer ({_first_line(e)}); nothing "
                              "changed") from None
        if store.get_meta("tracking_uri") != self.tracking_uri:
            store.forget_tracking()
            store.set_meta("tracking_uri", self.tracking_uri)
        before = len(store.unmirrored()), len(store.untracked())
        mirror = _Mirror(self, tracker)
        mirror.catch_up(force=True)
        if mirror.warned or mirror.parent is None:
            raise MixoptError(f"MLflow at {self.tracking_uri} did not answer; nothing changed in the run table")
        state = store.get_meta("state")
        rec_path = store.path / "recommendation.json"
        closed = False
        if state == "done" and rec_path.is_file():
            closed = mirror.close(json.loads(rec_path.read_text()), "FINISHED", self._artifacts())
        elif state in ("interrupted", "no-recommendation"):
            closed = mirror.close(None, "KILLED" if state == "interrupted" else "FAILED")
        if closed:
            store.set_meta("mlflow_closed", True)
        after = len(store.unmirrored()), len(store.untracked())
        return {"results_sent": before[0] - after[0], "runs_created": before[1] - after[1],
                "still_missing": after[0] + after[1], "parent_closed": int(closed)}

    def recommend(self, optimizer: OptimizerBase | None = None, data: PreparedData | None = None,
                  mirror: _Mirror | None = None) -> Recommendation:
        """The job's recommendation: the optimizer's, verified by the ladder when it is on and `data` is given
        (the search's end), then fitted to the target. Written once, as the job's `recommendation.json`."""
        assert self.store is not None
        opt = optimizer or self.optimizer
        table = self.store.run_table()
        rec = opt.recommend(table, self.spec.target)
        on, why = self._ladder_on(opt)
        if why:
            rec.notes.append(why)
        if on and data is not None and mirror is not None:
            rec = self._verify(rec, table, data, mirror)
        rec = apply_target(rec, table.token_counts, self.spec.target)
        self.store.write_recommendation(rec.to_dict())
        self.on_event("recommendation", rec.to_dict())
        return rec

    def _ladder_on(self, opt: OptimizerBase) -> tuple[bool, str | None]:
        spec = self.spec
        lad = spec.ladder
        if lad.enabled is False:
            return False, None
        if not getattr(opt, "verifies", True):
            return False, (None if lad.enabled == "auto" else f"no verification ladder: {opt.name} does not "
                           "recommend a static mixture from proxy evidence")
        n = spec.ladder_runs()
        if lad.enabled == "auto" and n > spec.budget.runs:
            return False, (f"verification ladder skipped: it would train {n} runs, more than the search's "
                           f"{spec.budget.runs}; raise budget.runs or lower ladder.candidates / ladder.seeds")
        return True, None

    def _verify(self, rec: Recommendation, table: RunTable, data: PreparedData, mirror: _Mirror) -> Recommendation:
        """Train the ladder (what is not in the store yet), then let its verdict pick the recommendation."""
        store, spec = self.store, self.spec
        assert store is not None
        rungs = ladder.plan(spec, rec.weights, rec.method, rec.details, table)
        fid = ladder.ladder_fidelity(spec)
        _, record = resolve_fidelity(spec, fid, data.vocab_size)
        seeds = ladder.ladder_seeds(spec)
        have = {(p.source, p.seed) for p in store.ladder_proposals()}
        idx, round_ = store.n_proposed(), store.next_round()
        new = []
        for sd in seeds:
            for r in rungs:
                if (ladder.LADDER + r.label, sd) not in have:
                    new.append(PendingRun(run_id=f"r{idx:04d}", idx=idx, round=round_, seed=sd, weights=r.weights,
                                          fidelity=record, source=ladder.LADDER + r.label))
                    idx += 1
        store.add_proposals(new)
        self.on_event("ladder", {"runs": len(rungs) * len(seeds), "todo": len(new),
                                 "mixtures": [r.label for r in rungs], "fidelity": record})
        self._loop(data, mirror)  # the budget is spent: this trains the ladder's pending runs only
        mirror.catch_up(force=True)
        full = store.run_table(ladder=True)
        lad_table = full.select((full.df["stage"] == "ladder").to_numpy())
        verdict = ladder.decide(rungs, lad_table, spec, table)
        search_flops = float(table.df.get("fid_flops", pd.Series(dtype=float)).fillna(0).sum())
        ladder_flops = float(lad_table.df.get("fid_flops", pd.Series(dtype=float)).fillna(0).sum())
        verdict.update(fidelity=record, runs=len(lad_table), compute_flops=ladder_flops, search_flops=search_flops,
                       compute_vs_search=ladder_flops / search_flops if search_flops else None)
        by_label = {r.label: r for r in rungs}
        winner = by_label.get(verdict.get("winner") or "")
        details = {**rec.details, "ladder": verdict, "optimizer_weights": rec.weights}
        notes = [*rec.notes, f"verification ladder: {verdict['reason']}"]
        if winner is None:
            rec.details, rec.notes = details, notes
            return rec
        weights = winner.weights
        if winner.kind == "candidate":
            cand = next((c for c in rec.details.get("candidates") or [] if c.get("label") == winner.label), None)
            if cand is not None and "kl_lambda" in cand:
                details["kl_lambda"] = cand["kl_lambda"]
                details["kl_lambda_choice"] = "ladder"
            details["verified_by"] = "ladder"
        else:
            details["verified_by"] = "ladder (baseline kept)"
        prior = full.prior
        if prior is not None:
            details["distance_to_prior"] = distance_to_prior(
                np.array([weights.get(d, 0.0) for d in full.domains]), prior)
        predicted = rec.predicted if winner.label.startswith(f"{rec.method} (recommended") else None
        return Recommendation(weights=weights, method=rec.method, objective=rec.objective, predicted=predicted,
                              uncertainty=rec.uncertainty if predicted is not None else None,
                              settings=rec.settings, runs_used=rec.runs_used, notes=notes, details=details)

    def objective_of(self, p: PendingRun, res: dict[str, Any]) -> float | None:
        metrics = {f"loss_{d}": float(v) for d, v in (res.get("losses") or {}).items()}
        if not metrics or res.get("status") != "ok":
            return None
        return float(RunTable(_one_row(p.weights, metrics)).objective(self.spec.objective)[0])

    def _artifacts(self) -> list[Path]:
        """The job's HTML report, written now, for the parent run (the recommendation goes as a dict)."""
        assert self.store is not None
        self.on_event("report", {"path": str(self.store.path / "report.html")})
        try:
            from mixopt.search.report import write_report

            return [write_report(self.store)]
        except Exception as e:  # a report is for people; it must never fail a finished search
            log.warning("report not written: %s", e)
            self.on_event("warning", {"message": f"report not written: {_first_line(e)}"})
            return []

    def _prepare(self) -> PreparedData:
        def on_domain(name: str, i: int, n: int) -> None:
            self.on_event("prepare", {"domain": name, "i": i, "n": n})

        return prepare(self.spec.dataset, self.workdir / "data", on_domain=on_domain)

    def _tracker(self) -> Tracker | None:
        try:
            return Tracker(self.tracking_uri, self.spec.name, self.workdir / "mlartifacts")
        except Exception as e:  # tracking mirrors the run table; the search must not depend on it
            log.warning("MLflow tracking unavailable (%s): runs are recorded in the job store only", e)
            self.on_event("warning", {"message": f"MLflow tracking unavailable ({_first_line(e)}): runs are "
                                      "recorded in the job store; `mixopt sync` mirrors them later"})
            return None

    def _loop(self, data: PreparedData, mirror: _Mirror) -> None:
        """Keep up to `parallelism` runs in flight until the budget is proposed and every run has a result."""
        import ray

        store, spec = self.store, self.spec
        assert store is not None
        train_ref = val_ref = None
        if any(p.kind != "command" for p in spec.proxies):
            train_ref = ray.put(data.load("train", mmap=False))
            val_ref = ray.put(data.load("val", mmap=False))
        remote = ray.remote(_train_task)
        queue = store.pending()  # left over from a killed driver: same mixtures, same seeds
        inflight: dict[Any, _Task] = {}
        try:
            while True:
                busy = sum(len(t.runs) for t in inflight.values())
                room = spec.budget.runs - store.n_search_proposed()
                if not queue and room > 0 and (spec.scheduling == "async" or not inflight):
                    n = min(spec.parallelism - busy, room)
                    if n > 0 and not (inflight and self._barrier()):
                        queue = self._propose(n, data.vocab_size)
                        store.add_proposals(queue)
                queue = self._submit(queue, inflight, spec.parallelism - busy, remote, train_ref, val_ref,
                                     data, mirror)
                if not inflight:
                    if queue:  # cannot happen: a free slot always takes the head of the queue
                        raise RuntimeError(f"{len(queue)} runs queued with nothing in flight")
                    return
                self._wait(inflight, mirror)
                if mirror.behind and mirror.up:
                    mirror.catch_up()
        except BaseException:
            for gen in inflight:  # our tasks must not outlive the driver on a shared cluster
                with contextlib.suppress(Exception):
                    ray.cancel(gen, force=True)
            raise

    def _barrier(self) -> bool:
        """An optimizer may ask the asynchronous driver to let the runs in flight finish before it proposes
        again (`wait_for_pending(history) -> bool`), e.g. CLIMB at the start of each of its rounds."""
        return (isinstance(self.optimizer, WaitsForPending) and self.store is not None
                and bool(self.optimizer.wait_for_pending(self.store.run_table())))

    def _submit(self, queue: list[PendingRun], inflight: dict[Any, _Task], free: int, remote: Any,
                train_ref: Any, val_ref: Any, data: PreparedData, mirror: _Mirror) -> list[PendingRun]:
        """Start tasks from the head of the queue while slots are free; runs of one proxy share a task (up to
        its `proxies_per_task`). Returns what is still queued."""
        store, spec = self.store, self.spec
        assert store is not None
        queue = list(queue)
        while queue and free > 0:
            proxy, _ = resolve_fidelity(spec, queue[0].fidelity, data.vocab_size)
            key = proxy.model_dump_json()
            group: list[PendingRun] = []
            for p in list(queue):
                if len(group) >= min(proxy.proxies_per_task, free):
                    break
                if resolve_fidelity(spec, p.fidelity, data.vocab_size)[0].model_dump_json() == key:
                    group.append(p)
                    queue.remove(p)
            for p in group:
                mirror.start(p, proxy)
                self.on_event("start", {"run_id": p.run_id, "weights": p.weights})
            items = [{"run_id": p.run_id, "weights": p.weights, "seed": p.seed, "schedule": p.schedule,
                      "run_dir": str(store.path / "runs" / p.run_id)} for p in group]
            gen = remote.options(num_cpus=proxy.num_cpus, num_gpus=proxy.num_gpus, max_retries=spec.max_retries,
                                 num_returns="streaming").remote(
                proxy.model_dump(mode="json"), items, train_ref, val_ref, data.vocab_size,
                max(1, int(proxy.num_cpus)), data.domains)
            limit = proxy.timeout_s
            if limit is not None and proxy.kind == "command":
                limit = limit * len(group) + COMMAND_GRACE_S
            inflight[gen] = _Task(proxy, group, limit)
            free -= len(group)
        return queue

    def _wait(self, inflight: dict[Any, _Task], mirror: _Mirror) -> None:
        """Wait for the next task event (started, finished, failed) or deadline, and act on it."""
        import ray

        now = time.monotonic()
        deadlines = [t.started + t.limit_s - now for t in inflight.values()
                     if t.started is not None and t.limit_s is not None]
        timeout = max(0.0, min(deadlines)) if deadlines else None
        if mirror.behind and mirror.tracker is not None:
            timeout = min(timeout if timeout is not None else MLFLOW_RETRY_S, MLFLOW_RETRY_S)
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=timeout)
        for gen in ready:
            task = inflight[gen]
            try:
                value = ray.get(next(gen))
            except StopIteration:
                value = [{"status": "failed", "losses": {}, "error": "the task ended without results"}] * len(
                    task.runs)
            except ray.exceptions.TaskCancelledError:
                continue
            except Exception as e:  # the trainer raised, or the worker died more often than max_retries
                value = [{"status": "failed", "losses": {}, "error": _task_error(e, self.spec.max_retries)}
                         ] * len(task.runs)
            if value == STARTED:
                task.started = time.monotonic()
                continue
            del inflight[gen]
            for p, res in zip(task.runs, value, strict=True):
                self._record(p, res, mirror)
        now = time.monotonic()
        for gen, task in list(inflight.items()):
            if task.started is not None and task.limit_s is not None and now - task.started >= task.limit_s:
                ray.cancel(gen, force=True)  # kills the worker: a hung proxy frees its slot and its memory
                del inflight[gen]
                err = f"timed out after {task.limit_s:g} s (the proxy's timeout_s); the task was cancelled"
                for p in task.runs:
                    self._record(p, {"status": "failed", "losses": {}, "error": err}, mirror)

    def _propose(self, n: int, vocab_size: int) -> list[PendingRun]:
        store, spec = self.store, self.spec
        assert store is not None
        start = store.n_proposed()
        done = store.n_search_proposed()
        round_ = store.next_round()
        history = store.run_table()
        mixtures: list[tuple[Proposal, str]] = []
        fixed = [(m, "include") for m in spec.include_mixtures]
        if self._ladder_on(self.optimizer)[0]:
            # The ladder's baselines are trained first at the proxy scale too: when the ladder cannot tell
            # them apart, the search's measurement of each decides which one a candidate must beat.
            fixed = [(b, "baseline") for b in self._baselines(history)] + fixed
        for i in range(done, min(done + n, len(fixed))):
            mix, src = fixed[i]
            total = sum(mix.values())  # within 1e-3 of 1 (checked at load); stored exactly on the simplex
            mixtures.append((Proposal({d: float(mix.get(d, 0.0)) / total for d in history.domains}), src))
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
                                  seed=run_seed(spec.seed, 0 if spec.proxy_seeds == "common" else start + i),
                                  weights=prop.weights, fidelity=record,
                                  source=src, schedule=prop.schedule))
        return out

    def _baselines(self, history: RunTable) -> list[dict[str, float]]:
        out = []
        for name in self.spec.ladder.baselines:
            if name == "uniform":
                out.append({d: 1 / len(history.domains) for d in history.domains})
            elif history.prior is not None:
                out.append(dict(zip(history.domains, history.prior.tolist(), strict=True)))
        return out

    def _record(self, p: PendingRun, res: dict[str, Any], mirror: _Mirror) -> None:
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
        res = {**res, "status": status}
        objective = self.objective_of(p, res)
        if fresh:
            mirror.finish(p, res, objective)
        self.on_event("result", {"run_id": p.run_id, "status": status, "objective": objective,
                                 "error": res.get("error"), "seconds": res.get("seconds"),
                                 "done": self.store.n_finished(), "budget": self.spec.budget.runs,
                                 "stage": "ladder" if p.source.startswith(ladder.LADDER) else "search"})


def _task_error(e: BaseException, retries: int) -> str:
    import ray

    if isinstance(e, ray.exceptions.RayTaskError):
        return f"the trainer raised: {_tail(e.cause if e.cause is not None else e)}"
    if isinstance(e, ray.exceptions.WorkerCrashedError | ray.exceptions.NodeDiedError
                  | ray.exceptions.OutOfMemoryError | ray.exceptions.LocalRayletDiedError):
        return f"system failure, retried {retries} time(s) without success: {_tail(e, 500)}"
    return _tail(e)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]

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
        spec = load_search_spec(spec)
    return Search(spec, **kw).run()


__all__ = ["DEFAULT_WORKDIR", "Search", "submit"]
