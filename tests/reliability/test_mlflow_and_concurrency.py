"""MLflow going away mid-search, and two searches sharing one work dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from mixopt.search import JobStore
from mixopt.search.tracking import Tracker
from tests.reliability.conftest import cli, command_spec

pytestmark = pytest.mark.slow


def test_mlflow_server_stopped_mid_search_then_sync_restores_it(corpus, tmp_path, ray_head, mlflow_server,
                                                                figure):
    spec = command_spec(corpus, tmp_path, name="outage", runs=12, parallelism=2, plan={"_sleep": 0.6})
    wd = tmp_path / "wd"
    out = (tmp_path / "driver.log").open("w")
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "mixopt.cli", "submit", str(spec), "--workdir", str(wd),
                             "--address", ray_head["gcs"], "--tracking-uri", mlflow_server.uri],
                            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"},
                            start_new_session=True)
    store = None
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        found = list((wd / "jobs").glob("*/runs.sqlite")) if (wd / "jobs").is_dir() else []
        if found and JobStore(found[0].parent).n_finished() >= 3:
            store = JobStore(found[0].parent)
            break
        time.sleep(0.1)
    assert store is not None, (tmp_path / "driver.log").read_text()[-3000:]
    done_at_outage = store.n_finished()
    mlflow_server.stop()  # MLflow goes away with 9 runs still to go
    assert proc.wait(timeout=300) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    took = time.time() - t0
    log = (tmp_path / "driver.log").read_text()
    assert "MLflow unreachable" in log and f"mixopt sync {store.job_id}" in log
    table = store.run_table()
    assert len(table) == 12 and set(table.df["status"]) == {"ok"} and store.get_meta("state") == "done"
    behind = len(store.unmirrored()) + len(store.untracked())
    assert behind > 0

    mlflow_server.start()  # back, with what it had before the outage
    res = cli("sync", store.job_id, "--workdir", str(wd))
    assert res.returncode == 0, res.stdout + res.stderr
    assert store.unmirrored() == [] and store.untracked() == []
    tr = Tracker(mlflow_server.uri, "outage", wd / "mlartifacts")
    children = {c.data.tags["mixopt.run_id"]: c for c in tr.proxy_runs(store.get_meta("mlflow_parent_run_id"))}
    assert sorted(children) == sorted(table.run_ids())
    y = dict(zip(table.run_ids(), table.objective(), strict=True))
    for rid, c in children.items():
        assert c.info.status == "FINISHED" and c.data.metrics["objective"] == pytest.approx(y[rid])
        assert c.data.tags["mixopt.optimizer"] == "random" and c.data.tags["mixopt.fidelity"] == "cmd"
        assert c.data.tags["mixopt.status"] == "ok"
    parent = tr.client.get_run(store.get_meta("mlflow_parent_run_id"))
    assert parent.info.status == "FINISHED" and parent.data.tags["mixopt.status"] == "done"
    arts = {a.path for a in tr.client.list_artifacts(parent.info.run_id)}
    assert {"recommendation.json", "report.html"} <= arts
    again = cli("sync", store.job_id, "--workdir", str(wd))  # idempotent: nothing more to send
    assert again.returncode == 0 and "0 MLflow runs created, 0 results sent" in again.stdout
    figure(f"MLflow server stopped after {done_at_outage}/12 runs: search completed in {took:.1f} s with the run "
           f"table intact; {behind} runs/results were behind; `mixopt sync` restored 12/12 children + parent")


def test_two_searches_at_once_in_one_workdir(corpus, tmp_path, ray_head, figure):
    log = tmp_path / "executions.jsonl"
    wd = tmp_path / "wd"
    specs = []
    for seed in (11, 12):  # same name (same MLflow experiment, same second), different seeds
        path = command_spec(corpus, tmp_path, name="twin", runs=8, parallelism=2,
                            plan={"_log": str(log), "_sleep": 0.2})
        specs.append(path.rename(tmp_path / f"twin-{seed}.yaml"))
        specs[-1].write_text(specs[-1].read_text().replace("seed: 3", f"seed: {seed}"))
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, "-m", "mixopt.cli", "submit", str(s), "--workdir", str(wd),
                               "--address", ray_head["gcs"]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**os.environ, "COLUMNS": "200"}) for s in specs]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outs)
    jobs = sorted(p.parent for p in (wd / "jobs").glob("*/runs.sqlite"))
    assert len(jobs) == 2
    stores = [JobStore(j) for j in jobs]
    tables = [s.run_table() for s in stores]
    assert all(len(t) == 8 and set(t.df["status"]) == {"ok"} for t in tables)
    assert {s.spec.seed for s in stores} == {11, 12}
    w0, w1 = tables[0].weights, tables[1].weights
    assert not (abs(w0 - w1) < 1e-9).all(), "the two jobs trained the same mixtures"
    executions = [json.loads(line) for line in log.read_text().splitlines()]
    for s, t in zip(stores, tables, strict=True):
        mine = [e for e in executions if e["job"] == s.job_id]
        assert sorted(e["run"] for e in mine) == sorted(t.run_ids())  # each run once, in its own job folder
        for e in mine:
            row = t.df[t.df["run_id"] == e["run"]].iloc[0]
            assert all(abs(row[f"w_{d}"] - w) < 1e-9 for d, w in e["weights"].items())
    tr = Tracker(f"sqlite:///{wd / 'mlflow.db'}", "twin", wd / "mlartifacts")
    for s in stores:
        children = tr.proxy_runs(s.get_meta("mlflow_parent_run_id"))
        assert sorted(c.data.tags["mixopt.run_id"] for c in children) == [f"r{i:04d}" for i in range(8)]
        assert {c.data.tags["mixopt.job_id"] for c in children} == {s.job_id}
        assert str(s.get_meta("mlflow_experiment_id")) == tr.experiment_id  # one experiment, created once
    figure(f"two searches at once in one workdir (one dataset prepare, one MLflow store, one experiment): "
           f"2×8 runs, no run crossed jobs, {time.time() - t0:.1f} s")
