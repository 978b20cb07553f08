"""End to end through real Ray, a real SQLite run table and a real MLflow store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from mixopt.search import JobStore, Search
from mixopt.search.tracking import Tracker, default_tracking_uri
from mixopt.spec import SearchSpec
from tests.conftest import ROOT, run_cli, tiny_spec_yaml
from tests.reliability.conftest import results

pytestmark = pytest.mark.slow


def mlflow_children(workdir: Path, store: JobStore, experiment: str = "tiny") -> dict[str, object]:
    tr = Tracker(default_tracking_uri(workdir), experiment, workdir / "mlartifacts")
    runs = tr.proxy_runs(store.get_meta("mlflow_parent_run_id"))
    return {r.data.tags["mixopt.run_id"]: r for r in runs}


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory, workdir):
    """One real search (4 proxies through Ray, MLflow store in the workdir) shared by the tests below."""
    tmp = tmp_path_factory.mktemp("tiny")
    spec = SearchSpec.from_yaml(tiny_spec_yaml(tmp, runs=4, parallelism=2,
                                               extra="include_mixtures:\n  - {python: 1.0}\n"))
    events = []
    search = Search(spec, workdir=workdir, on_event=lambda e, d: events.append((e, d)))
    rec = search.run()
    return search, rec, events


def test_tiny_search_end_to_end(tiny_job, workdir):
    search, rec, events = tiny_job
    store = search.store
    table = store.run_table()
    assert len(table) == 4 and set(table.df["status"]) == {"ok"}
    assert table.df.loc[0, "w_python"] == 1.0 and table.df.loc[0, "source"] == "include"
    assert sorted(table.run_ids()) == ["r0000", "r0001", "r0002", "r0003"]
    saved = json.loads((store.path / "recommendation.json").read_text())
    assert saved["weights"] == rec.weights and abs(sum(rec.weights.values()) - 1) < 1e-9
    assert saved["method"] == "regmix" and saved["predicted"] is not None and len(saved["runs_used"]) == 4
    assert store.get_meta("state") == "done"
    assert sum(e == "result" for e, _ in events) == 4
    # MLflow mirrors the run table: same runs, same weights, same losses; the parent run holds the result.
    children = mlflow_children(workdir, store)
    assert set(children) == set(table.run_ids())
    for _, row in table.df.iterrows():
        r = children[row["run_id"]]
        assert r.info.status == "FINISHED"
        for d in table.domains:
            assert float(r.data.params[f"w_{d}"]) == pytest.approx(row[f"w_{d}"], abs=1e-6)
            assert r.data.metrics[f"loss_{d}"] == pytest.approx(row[f"loss_{d}"])
    parent = Tracker(default_tracking_uri(workdir), "tiny", workdir / "mlartifacts").client.get_run(
        store.get_meta("mlflow_parent_run_id"))
    assert parent.info.status == "FINISHED" and "rec_predicted" in parent.data.metrics


def test_resume_after_the_driver_is_killed(tmp_path):
    wd = tmp_path / "wd"
    spec = tiny_spec_yaml(tmp_path, runs=6, parallelism=2, tokens=8 * 64 * 60)
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "mixopt.cli", "submit", str(spec), "--workdir", str(wd)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    deadline = time.time() + 240
    db = None
    while time.time() < deadline:
        found = list((wd / "jobs").glob("*/runs.sqlite")) if (wd / "jobs").is_dir() else []
        if found and len(results(found[0])) >= 2:
            db = found[0]
            break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    assert db is not None, "no run finished in time"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray cluster it started
    proc.wait()
    before = results(db)
    assert 2 <= len(before) < 6
    prepared = sorted((wd / "data").iterdir())
    store = JobStore(db.parent)
    pending_before = [p.run_id for p in store.pending()]

    res = run_cli("resume", store.job_id, "--workdir", str(wd), timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    # the recommendation is printed when it exists, before the report's refits
    assert res.stdout.index("recommended mixture") < res.stdout.index("writing the job report")
    after = results(db)
    assert sorted(after) == [f"r{i:04d}" for i in range(6)]  # nothing repeated, nothing beyond the budget
    assert {k: after[k] for k in before} == before  # finished runs untouched
    table = store.run_table()
    assert set(table.df["status"]) == {"ok"} and store.n_proposed() == 6
    # the runs pending at the kill were re-run with the same mixture and seed they were proposed with
    for rid in pending_before:
        assert rid in after
    rec = json.loads((db.parent / "recommendation.json").read_text())
    assert abs(sum(rec["weights"].values()) - 1) < 1e-9
    assert sorted((wd / "data").iterdir()) == prepared  # resume read the job's prepared data, made no second copy
    # MLflow has one child per run: the re-run pending runs reused their MLflow run, none duplicated
    children = mlflow_children(wd, store)
    assert sorted(children) == sorted(after)
    assert all(c.info.status == "FINISHED" for c in children.values()), (
        {k: c.info.status for k, c in children.items()}, res.stdout[-3000:])


def test_the_ladder_runs_after_the_search_and_resumes_after_a_kill(tmp_path):
    """The verification ladder's runs are write-ahead rows like any other: a driver killed mid-ladder resumes
    with the finished ladder runs untouched and the rest re-run; the verdict lands in the recommendation."""
    wd = tmp_path / "wd"
    spec = tiny_spec_yaml(tmp_path, runs=6, parallelism=2, tokens=8 * 64 * 30,
                          extra="ladder: {enabled: true, candidates: 1, seeds: 2}\n")
    proc = subprocess.Popen([sys.executable, "-m", "mixopt.cli", "submit", str(spec), "--workdir", str(wd)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"}, start_new_session=True)
    deadline = time.time() + 300
    db = None
    while time.time() < deadline:
        found = list((wd / "jobs").glob("*/runs.sqlite")) if (wd / "jobs").is_dir() else []
        if found and len(results(found[0])) >= 8:  # the 6 search runs and 2 of the 6 ladder runs
            db = found[0]
            break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    assert db is not None, "the ladder did not start in time"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = results(db)
    store = JobStore(db.parent)
    assert len(store.ladder_proposals()) == 6 and 8 <= len(before) < 12

    res = run_cli("resume", store.job_id, "--workdir", str(wd), timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    # the recommendation is printed when it exists, before the report's refits
    assert res.stdout.index("recommended mixture") < res.stdout.index("writing the job report")
    after = results(db)
    assert sorted(after) == [f"r{i:04d}" for i in range(12)] and {k: after[k] for k in before} == before
    full = store.run_table(ladder=True)
    lad = full.df[full.df["stage"] == "ladder"]
    assert len(lad) == 6 and set(lad["status"]) == {"ok"} and lad["seed"].nunique() == 2
    assert set(lad["fid_tokens"]) == {4 * 8 * 64 * 30}  # the proxy trained 4× longer
    assert len(store.run_table()) == 6  # optimizers see the search's runs only
    rec = json.loads((db.parent / "recommendation.json").read_text())
    verdict = rec["details"]["ladder"]
    assert verdict["winner"] in {r["label"] for r in verdict["rows"]} and len(verdict["rows"]) == 3
    assert rec["details"]["verified_by"].startswith("ladder") and "distance_to_prior" in rec["details"]
    assert any(n.startswith("verification ladder:") for n in rec["notes"])
    assert sorted(mlflow_children(wd, store)) == sorted(after)  # each ladder run is a child run too


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_runs_command_and_mlflow_ui_show_the_same_runs(tiny_job, workdir, tmp_path):
    job = tiny_job[0].store
    res = run_cli("runs", job.job_id, "--workdir", str(workdir), "--format", "json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert len(rows) == 4
    # the CSV export carries the corpus token counts: recommending from it sees the job's prior and caps
    csv = run_cli("runs", job.job_id, "--workdir", str(workdir), "--format", "csv")
    (tmp_path / "runs.csv").write_text(csv.stdout)
    from mixopt.runs import RunTable

    assert RunTable.from_csv(tmp_path / "runs.csv").token_counts == job.run_table().token_counts is not None
    port = _free_port()
    ui = subprocess.Popen([sys.executable, "-m", "mixopt.cli", "ui", "--workdir", str(workdir), "--port",
                           str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=2).read()
                break
            except OSError:
                assert time.time() < deadline and ui.poll() is None, "MLflow UI did not start"
                time.sleep(0.5)
        page = urllib.request.urlopen(base + "/", timeout=10).read().decode()
        assert "<html" in page.lower()
        exps = json.loads(urllib.request.urlopen(base + "/api/2.0/mlflow/experiments/search?max_results=100",
                                                 timeout=10).read())
        exp_id = next(e["experiment_id"] for e in exps["experiments"] if e["name"] == "tiny")
        body = json.dumps({"experiment_ids": [exp_id], "max_results": 1000,
                           "filter": f"tags.mlflow.parentRunId = '{job.get_meta('mlflow_parent_run_id')}'"})
        req = urllib.request.Request(base + "/api/2.0/mlflow/runs/search", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
        runs = json.loads(urllib.request.urlopen(req, timeout=10).read())["runs"]
        ui_rows = {next(t["value"] for t in r["data"]["tags"] if t["key"] == "mixopt.run_id"):
                   {m["key"]: m["value"] for m in r["data"]["metrics"]} for r in runs}
        assert set(ui_rows) == {r["run_id"] for r in rows}
        for r in rows:
            for k, v in r.items():
                if k.startswith("loss_"):
                    assert np.isclose(ui_rows[r["run_id"]][k], v)
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


def test_demo_spec_is_under_budget_shape():
    spec = SearchSpec.from_yaml(ROOT / "search" / "demo.yaml")
    # 24 runs in rounds of 4, two batched proxies per Ray task ≈ 2–3 minutes here; ≥ 16 runs in < 10 minutes.
    assert spec.budget.runs >= 16 and spec.parallelism == 4 and spec.proxy.tokens <= 1_000_000
    assert spec.proxy.proxies_per_task == 2


def test_diverged_proxies_are_failed_runs_and_never_fed_to_a_predictor(tmp_path, workdir):
    from mixopt.errors import InputError

    path = tiny_spec_yaml(tmp_path, runs=2, optimizer="random")
    text = path.read_text().replace("  eval_windows: 4\n", "  eval_windows: 4\n  lr: 1.0e12\n"
                                    "  warmup_frac: 0.0\n  grad_clip: 1.0e30\n")
    path.write_text(text.replace("name: tiny\n", "name: diverge\n", 1))
    search = Search(SearchSpec.from_yaml(path), workdir=workdir)
    with pytest.raises(InputError, match="at least one successful run"):
        search.run()
    table = search.store.run_table()
    assert list(table.df["status"]) == ["failed", "failed"]
    assert all("diverged" in e for e in table.df["error"])
    assert not table.loss_columns  # no numbers from a diverged run are kept
    assert search.store.get_meta("state") == "no-recommendation"
    children = mlflow_children(workdir, search.store, experiment="diverge")
    assert {c.info.status for c in children.values()} == {"FAILED"}
    assert all("diverged" in c.data.tags["mixopt.error"] for c in children.values())


def test_status_and_recommend_commands(tiny_job, workdir):
    res = run_cli("status", "--workdir", str(workdir))
    assert res.returncode == 0 and "tiny-" in res.stdout and "done" in res.stdout, res.stdout + res.stderr
    job = tiny_job[0].store
    res = run_cli("recommend", job.job_id, "--workdir", str(workdir), "--optimizer", "random", "--json")
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    assert rec["method"] == "random" and abs(sum(rec["weights"].values()) - 1) < 1e-9
    res = run_cli("recommend", job.job_id, "--workdir", str(workdir), "--optimizer", "nope")
    assert res.returncode == 2 and "--optimizer" in res.stderr


def test_results_cut_off_from_mlflow_by_a_kill_are_mirrored_on_resume(tmp_path):
    """The driver records a result in SQLite, then in MLflow; a kill between the two must not leave MLflow stale."""
    from mixopt.search.driver import _Mirror
    from mixopt.search.store import PendingRun

    spec = SearchSpec.from_yaml(tiny_spec_yaml(tmp_path, runs=4))
    wd = tmp_path / "wd"
    store = JobStore.create(wd, spec)
    store.set_meta("domains", list(spec.dataset.domains))
    weights = dict.fromkeys(spec.dataset.domains, 1 / len(spec.dataset.domains))
    run = PendingRun("r0000", 0, 0, 7, weights, None, "regmix")
    store.add_proposals([run])
    tracker = Tracker(default_tracking_uri(wd), spec.name, wd / "mlartifacts")
    parent = tracker.start_job(store.job_id, spec.model_dump(mode="json"))
    store.set_tracking("r0000", tracker.start_proxy(parent, store.job_id, "r0000", weights, 7, 0, {}))
    losses = {d: 2.0 + i / 10 for i, d in enumerate(spec.dataset.domains)}
    store.add_result("r0000", "ok", {f"loss_{d}": v for d, v in losses.items()}, {"seconds": 1.5}, None)
    # ...killed here: the MLflow child is still RUNNING with no metrics
    child = tracker.client.get_run(store.tracking_ids()["r0000"])
    assert child.info.status == "RUNNING" and not child.data.metrics

    _Mirror(Search(spec, workdir=wd, store=store), tracker, parent=parent).catch_up()  # what resume does first
    child = tracker.client.get_run(store.tracking_ids()["r0000"])
    assert child.info.status == "FINISHED"
    assert child.data.metrics["loss_python"] == pytest.approx(losses["python"])
    assert child.data.metrics["objective"] == pytest.approx(np.mean(list(losses.values())))
    assert store.unmirrored() == []


def test_a_round_of_proposals_trains_as_batched_tasks(tmp_path, workdir):
    path = tiny_spec_yaml(tmp_path, runs=4, parallelism=4, optimizer="random")
    path.write_text(path.read_text().replace("  eval_windows: 4\n", "  eval_windows: 4\n  proxies_per_task: 2\n")
                    .replace("name: tiny\n", "name: batched\n", 1))
    search = Search(SearchSpec.from_yaml(path), workdir=workdir)
    search.run()
    df = search.store.run_table().df
    assert list(df["status"]) == ["ok"] * 4 and list(df["batched"]) == [2] * 4
    assert df["round"].nunique() == 1
    # Every run records the fidelity it was trained at.
    assert set(df["fid_level"]) == {0} and set(df["fid_tokens"]) == {8192} and (df["fid_params"] > 0).all()
    assert (df["fid_flops"] > 0).all()
    losses = df[[c for c in df.columns if c.startswith("loss_")]].to_numpy()
    assert len({tuple(np.round(r, 6)) for r in losses}) == 4  # four different proxies, not one copied


TRAINER = """
import json, sys
m = json.load(open(sys.argv[1]))
w = m["weights"]
if w["python"] > 0.6:
    print("diverged at step 12", file=sys.stderr); sys.exit(1)
json.dump({"losses": {d: 2.0 + (v - 0.3) ** 2 for d, v in w.items()}}, open(sys.argv[2], "w"))
"""


def test_external_command_proxies_run_through_the_search(tmp_path, workdir):
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    spec = SearchSpec.from_yaml(tiny_spec_yaml(tmp_path, runs=4, parallelism=4, optimizer="random", extra="""
include_mixtures:
  - {python: 1.0}
""").as_posix())
    proxy = {"name": "mine", "kind": "command", "tokens": 1000, "timeout_s": 60,
             "command": [sys.executable, str(script), "{mixture_json}", "{metrics_json}"]}
    spec = spec.model_copy(update={"proxy": spec.proxy.model_validate(proxy), "name": "command"})
    search = Search(spec, workdir=workdir)
    rec = search.run()
    df = search.store.run_table().df
    assert df.loc[0, "status"] == "failed" and "diverged at step 12" in df.loc[0, "error"]
    assert (df["status"].iloc[1:] == "ok").all()
    assert df.loc[1, "loss_prose"] == pytest.approx(2.0 + (df.loc[1, "w_prose"] - 0.3) ** 2)
    assert (search.store.path / "runs" / "r0001" / "mixture.json").is_file()
    assert "r0000" not in rec.runs_used


def test_resolve_fidelity_maps_proposals_onto_the_proxy_zoo(tmp_path):
    from mixopt.search.driver import resolve_fidelity

    spec = SearchSpec.from_yaml(tiny_spec_yaml(tmp_path, extra="""
fidelities:
  - {name: wide, n_layer: 2, d_model: 64, n_head: 2, seq_len: 64, batch_size: 8, tokens: 16384, eval_windows: 4}
"""))
    small, rec0 = resolve_fidelity(spec, None, 257)
    assert small.name == "tiny" and rec0["level"] == 0 and rec0["tokens"] == 8192
    wide, rec1 = resolve_fidelity(spec, {"proxy": "wide"}, 257)
    assert wide.d_model == 64 and rec1["level"] == 1 and rec1["params"] > rec0["params"]
    assert resolve_fidelity(spec, {"params": rec1["params"] * 1.2}, 257)[1]["level"] == 1
    p, rec = resolve_fidelity(spec, {"level": 1, "tokens": 4096}, 257)
    assert p.tokens == 4096 and rec["tokens"] == 4096 and rec["flops"] == pytest.approx(rec1["flops"] / 4)
    for bad in ({"level": 5}, {"proxy": "nope"}, {"size": 3}):
        with pytest.raises(ValueError):
            resolve_fidelity(spec, bad, 257)


CPT_SPEC = """
name: cpt-tiny
dataset: {root}/datasets/cpt-demo.yaml
proxy: {{name: s, n_layer: 1, d_model: 16, n_head: 2, seq_len: 32, batch_size: 8, tokens: 2560, eval_every: 2,
        eval_windows: 4, lr: 0.01, lr_schedule: constant, proxies_per_task: 4}}
fidelities:
  - {{name: m, n_layer: 1, d_model: 32, n_head: 2, seq_len: 32, batch_size: 8, tokens: 2560, eval_every: 2,
     eval_windows: 4, lr: 0.01, lr_schedule: constant, proxies_per_task: 4}}
base: {{weights: {{general: 1.0}}, tokens: 5120, cache_dir: {cache}}}
optimizer: {{name: dcpt, general: general, domain: legal, ratios: [0.0, 0.25, 0.5, 1.0], tokens_levels: [2560],
            params_levels: [{small}, {large}], bootstrap: 0, min_runs: 12}}
target: {{params: 20000, tokens: 10000}}
budget: {{runs: 8}}
parallelism: 4
seed: 0
"""


def test_continual_pretraining_search_feeds_both_laws_from_checkpoints(tmp_path, workdir):
    from mixopt.proxies import model_size
    from mixopt.spec import ProxySpec

    sizes = [model_size(ProxySpec(n_layer=1, d_model=d, n_head=2, seq_len=32), 257).total for d in (16, 32)]
    path = tmp_path / "cpt.yaml"
    path.write_text(CPT_SPEC.format(root=ROOT, cache=tmp_path / "bases", small=sizes[0], large=sizes[1]))
    search = Search(SearchSpec.from_yaml(path), workdir=workdir)
    search.run()
    table = search.store.run_table()
    assert list(table.df["status"]) == ["ok"] * 8 and len(list((tmp_path / "bases").glob("*.pt"))) == 2
    # Every run of one size starts from that size's base: the same losses at 0 tokens, whatever its mixture.
    starts = table.df.groupby("fid_level")["curve"].apply(lambda cs: {json.dumps(c[0]["losses"]) for c in cs})
    assert all(len(s) == 1 for s in starts) and starts.iloc[0] != starts.iloc[1]
    points = table.with_checkpoints()
    assert len(points) == 8 * 6 and set(points.df["fid_tokens"]) == {0, 512, 1024, 1536, 2048, 2560}
    res = run_cli("recommend", search.store.job_id, "--workdir", str(workdir), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["method"] == "dcpt"
    res = run_cli("recommend", search.store.job_id, "--workdir", str(workdir), "--json", "--optimizer", "cmr",
                  "-s", "general=general", "-s", "domain=legal", "-s", "epsilon=0.5")
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    assert rec["method"] == "cmr" and rec["details"]["base_losses"]["source"].endswith("at 0 tokens")
    res = run_cli("recommend", search.store.job_id, "--workdir", str(workdir), "-s", "epsilon=-1")
    assert res.returncode == 2 and "epsilon" in res.stderr


def test_a_resumed_jobs_progress_counts_the_best_of_earlier_sessions(tmp_path):
    """The progress bar's "best" starts from the runs already in the job, not from this session's first."""
    from mixopt.cli import _Live
    from mixopt.search.store import PendingRun

    spec = SearchSpec.from_yaml(tiny_spec_yaml(tmp_path, runs=4))
    store = JobStore.create(tmp_path / "wd", spec)
    domains = list(spec.dataset.domains)
    store.set_meta("domains", domains)
    search = Search(spec, workdir=tmp_path / "wd", store=store)
    assert search._best_so_far() is None
    for i, loss in enumerate([3.0, 2.5, float("nan")]):
        w = dict.fromkeys(domains, 1 / len(domains))
        store.add_proposals([PendingRun(f"r{i:04d}", i, 0, 1, w, None, "regmix")])
        store.add_result(f"r{i:04d}", "ok", {f"loss_{d}": loss for d in domains}, {"seconds": 1.0}, None)
    assert search._best_so_far() == pytest.approx(2.5)
    live = _Live()
    live("job", {"job_id": "j", "path": "p", "budget": 4, "done": 3, "best": 2.5})
    live("result", {"run_id": "r0003", "status": "ok", "objective": 2.7, "done": 4, "budget": 4})
    assert live.best == pytest.approx(2.5)


def test_a_unique_prefix_of_a_job_id_opens_the_job(tmp_path):
    from mixopt.errors import InputError

    spec = SearchSpec.from_yaml(tiny_spec_yaml(tmp_path, runs=4))
    wd = tmp_path / "wd"
    a = JobStore.create(wd, spec, "tiny-20261201-101500-aaaa")
    JobStore.create(wd, spec, "tiny-20261201-101500-abbb")
    assert JobStore.open(wd, "tiny-20261201-101500-aa").path == a.path
    with pytest.raises(InputError, match="matches 2 jobs"):
        JobStore.open(wd, "tiny-20261201-101500-a")
    with pytest.raises(InputError, match="not found"):
        JobStore.open(wd, "nope")


def test_status_and_runs_fit_an_80_column_terminal(tiny_job, workdir):
    """Every line within 80 columns, no number or job id cut short (rich marks a cut with an ellipsis)."""
    job = tiny_job[0].store
    listing = run_cli("status", "--workdir", str(workdir), columns=80)
    assert listing.returncode == 0, listing.stderr
    assert job.job_id in listing.stdout  # whole, on one line: it can be copied
    runs = run_cli("runs", job.job_id, "--workdir", str(workdir), columns=80)
    assert runs.returncode == 0, runs.stderr
    for out in (listing.stdout, runs.stdout):
        assert all(len(line) <= 80 for line in out.splitlines()), out
        assert "…" not in out, out
    table = job.run_table()
    first = table.df.iloc[0]
    row = next(line for line in runs.stdout.splitlines() if line.split()[:1] == [first["run_id"]])
    assert [f"{100 * first[c]:.0f}" for c in table.weight_columns] == row.split()[2:2 + len(table.weight_columns)]
    assert "per-domain losses left out at 80 columns" in runs.stdout


def test_a_proxy_that_cannot_fit_in_memory_is_refused_before_anything_runs(tmp_path):
    import yaml

    from mixopt.errors import InputError

    raw = yaml.safe_load(tiny_spec_yaml(tmp_path, runs=4).read_text())
    raw["proxy"].update(d_model=100_000, n_head=4)
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(raw))
    wd = tmp_path / "wd"
    with pytest.raises(InputError, match=r"GiB of memory.*more than this machine's"):
        Search(SearchSpec.from_yaml(path), workdir=wd).run()
    assert not wd.exists()  # no data prepared, no job folder


def test_status_of_a_running_job_says_about_how_long_is_left(tmp_path):
    import sqlite3

    from mixopt.cli import _eta
    from mixopt.search.store import PendingRun

    spec = SearchSpec.from_yaml(tiny_spec_yaml(tmp_path, runs=10))
    wd = tmp_path / "wd"
    store = JobStore.create(wd, spec, "tiny-20261201-101500-eeee")
    domains = list(spec.dataset.domains)
    store.set_meta("state", "running")
    assert _eta(store) == "10 runs to go; a pace needs two finished runs"
    for i in range(4):
        store.add_proposals([PendingRun(f"r{i:04d}", i, 0, 1, dict.fromkeys(domains, 1 / len(domains)), None,
                                        "regmix")])
        store.add_result(f"r{i:04d}", "ok", {f"loss_{d}": 3.0 for d in domains}, {"seconds": 1.0}, None)
    with sqlite3.connect(store.db_path) as db:  # finished a minute apart
        for i in range(4):
            db.execute("UPDATE results SET finished_at = ? WHERE run_id = ?", (1000.0 + 60 * i, f"r{i:04d}"))
    eta = _eta(store)
    assert eta.startswith("about 6 min for the search's 6 remaining runs (the last 3 runs' pace)"), eta
    r = run_cli("status", store.job_id, "--workdir", str(wd))
    assert r.returncode == 0, r.stderr
    assert "time left" in r.stdout and "about 6 min" in r.stdout
    store.set_meta("state", "finished")
    assert _eta(store) == ""
