"""kill -9 the driver at random points of a running search, resume, five times: nothing lost, nothing twice."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mixopt.search import JobStore
from mixopt.search.tracking import Tracker, default_tracking_uri
from tests.reliability.conftest import cli, command_spec, results

pytestmark = pytest.mark.slow

BUDGET = 30
KILLS = 5


def _job_db(wd: Path) -> Path | None:
    found = list((wd / "jobs").glob("*/runs.sqlite")) if (wd / "jobs").is_dir() else []
    assert len(found) <= 1, "a second job was created instead of resuming the first"
    return found[0] if found else None


def driver(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mixopt.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200"}, start_new_session=True)


def trainer_alive(marker: str) -> list[int]:
    """Processes whose command line mentions `marker` (our trainer runs), by scanning /proc."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker in (p / "cmdline").read_bytes().decode(errors="replace"):
                    out.append(int(p.name))
            except OSError:
                continue
    return out


def test_driver_killed_five_times_then_resumed(corpus, tmp_path, ray_head, figure):
    log = tmp_path / "executions.jsonl"
    spec = command_spec(corpus, tmp_path, name="kill", runs=BUDGET, parallelism=3,
                        plan={"_log": str(log), "_sleep": 1.0})
    wd = tmp_path / "wd"
    rng = random.Random(20261129)
    db: Path | None = None
    seen: dict[str, float] = {}
    t_start = time.time()
    for k in range(KILLS):
        job = db.parent.name if db else None
        args = (["resume", job] if job else ["submit", str(spec)]) + ["--workdir", str(wd), "--address",
                                                                     ray_head["gcs"]]
        t0 = time.time()
        proc = driver(args)
        if k == 0:  # the first kill lands anywhere in the start-up (prepare, job folder, MLflow, Ray)
            time.sleep(rng.uniform(1.0, 6.0))
        else:  # the others after 1-3 new results, at a random moment of the running search
            wanted = len(seen) + rng.randint(1, 3)
            deadline = time.time() + 180
            while time.time() < deadline and proc.poll() is None:
                db = db or _job_db(wd)
                if len(results(db)) >= wanted:
                    break
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.5))
        assert proc.poll() is None, "the driver finished before it could be killed; raise BUDGET"
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone, as a cluster's OOM killer or a lost node would
        proc.wait()
        db = db or _job_db(wd)
        now = results(db) if db else {}
        assert {r: now[r] for r in seen} == seen, "a recorded result changed or vanished"
        store = JobStore(db.parent) if db else None
        pending = len(store.pending()) if store else 0
        figure(f"kill -9 #{k + 1}: after {time.time() - t0:4.1f} s of the driver, {len(now):2d}/{BUDGET} results "
               f"recorded, {pending} pending")
        seen = now
    assert db is not None, "no job folder after five starts"
    t0 = time.time()
    res = cli("resume", db.parent.name, "--workdir", str(wd), "--address", ray_head["gcs"], timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    final = results(db)
    assert sorted(final) == [f"r{i:04d}" for i in range(BUDGET)]  # final count = budget, nothing beyond it
    assert {r: final[r] for r in seen} == seen
    store = JobStore(db.parent)
    assert store.n_proposed() == BUDGET and store.get_meta("state") == "done"
    assert set(store.run_table().df["status"]) == {"ok"}

    # Every execution of a run trained the mixture and seed it was proposed with (pending runs re-ran as such).
    runs: dict[str, set[str]] = {}
    for line in log.read_text().splitlines():
        e = json.loads(line)
        runs.setdefault(e["run"], set()).add(json.dumps([e["seed"], e["weights"]], sort_keys=True))
    assert sorted(runs) == sorted(final) and all(len(v) == 1 for v in runs.values())
    executions = len(log.read_text().splitlines())

    # MLflow: one child per run, every one finished, the parent finished with the recommendation.
    tr = Tracker(default_tracking_uri(wd), "kill", wd / "mlartifacts")
    children = tr.proxy_runs(store.get_meta("mlflow_parent_run_id"))
    names = [c.data.tags["mixopt.run_id"] for c in children]
    assert sorted(names) == sorted(final), "an MLflow child run is missing or doubled"
    assert {c.info.status for c in children} == {"FINISHED"}
    parent = tr.client.get_run(store.get_meta("mlflow_parent_run_id"))
    assert parent.info.status == "FINISHED" and parent.data.tags["mixopt.status"] == "done"
    time.sleep(0.5)
    assert trainer_alive(str(tmp_path / "kill-plan.json")) == [], "a killed driver's proxy outlived it"
    figure(f"kill -9 ×{KILLS} then resume: {len(final)}/{BUDGET} results, 0 lost, 0 recorded twice, "
           f"{executions - BUDGET} run(s) re-executed (pending at a kill), {len(children)} MLflow children; "
           f"final resume {time.time() - t0:.1f} s, whole test {time.time() - t_start:.1f} s")


def test_a_second_driver_on_a_running_job_is_refused(corpus, tmp_path):
    """Two drivers on one job would both re-run its pending runs; the second is refused while the first lives."""
    import socket

    from mixopt.errors import InputError
    from mixopt.search import Search
    from mixopt.spec import SearchSpec

    spec = SearchSpec.from_yaml(command_spec(corpus, tmp_path, name="twice"))
    store = JobStore.create(tmp_path / "wd", spec)
    store.set_meta("state", "running")
    store.set_meta("driver", {"pid": os.getppid(), "host": socket.gethostname()})  # a live process, not us
    with pytest.raises(InputError, match="is running"):
        Search.resume(store.job_id, workdir=tmp_path / "wd").run()
    assert store.n_proposed() == 0 and not (tmp_path / "wd" / "data").exists()
