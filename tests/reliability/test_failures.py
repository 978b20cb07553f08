"""Proxies that fail by themselves (NaN, raise, hang) and workers that die: what is recorded, what is retried.

Budget accounting (README, "Failures and the budget"): `budget.runs` counts proposals. A run that fails by
itself is a `failed` row with its reason, counts against the budget and is never retried nor fed to a
predictor. A task whose worker died is re-run by Ray (`max_retries`) under the same run id: it costs no budget.
"""

from __future__ import annotations

import json
import time

import pytest

from mixopt.errors import InputError
from mixopt.search import Search
from mixopt.spec import SearchSpec
from tests.reliability.conftest import command_spec

pytestmark = pytest.mark.slow


def test_nan_raise_and_timeout_are_failed_runs_with_reasons(corpus, tmp_path, shared_wd, ray_head, figure):
    plan = {"r0001": "nan", "r0002": "raise", "r0003": "hang", "_sleep": 0.1}
    spec = SearchSpec.from_yaml(command_spec(corpus, tmp_path, name="fail", runs=6, parallelism=3, plan=plan,
                                             timeout_s=2,
                                             optimizer="{name: regmix, n_candidates: 2000, top_k: 4, min_runs: 2}"))
    t0 = time.time()
    search = Search(spec, workdir=shared_wd, ray_address=ray_head["gcs"])
    rec = search.run()
    df = search.store.run_table().df.set_index("run_id")
    assert len(df) == 6  # failed runs count against the budget: 6 proposals, 6 rows, no retries
    assert list(df["status"]) == ["ok", "failed", "failed", "failed", "ok", "ok"]
    assert "diverged" in df.loc["r0001", "error"] and "nan" in df.loc["r0001", "error"].lower()
    assert "exit code 1" in df.loc["r0002", "error"] and "trainer blew up" in df.loc["r0002", "error"]
    assert "timed out after 2 s" in df.loc["r0003", "error"]
    assert not [c for c in df.columns if c.startswith("loss_") and df.loc["r0001", c] == df.loc["r0001", c]]
    assert set(rec.runs_used) == {"r0000", "r0004", "r0005"}  # failed runs never reach the predictor
    figure(f"NaN / raise / timeout(2 s): recorded failed with reasons, excluded from the fit, budget 6 = 3 ok + 3 "
           f"failed; search {time.time() - t0:.1f} s")


def test_a_killed_worker_is_retried_and_the_search_completes(corpus, tmp_path, shared_wd, ray_head, figure):
    log = tmp_path / "executions.jsonl"
    plan = {"r0001": "kill-worker-once", "_log": str(log), "_sleep": 0.1}
    spec = SearchSpec.from_yaml(command_spec(corpus, tmp_path, name="retry", runs=4, parallelism=2, plan=plan))
    t0 = time.time()
    search = Search(spec, workdir=shared_wd, ray_address=ray_head["gcs"])
    search.run()
    df = search.store.run_table().df
    assert list(df["status"]) == ["ok"] * 4 and len(df) == 4  # the retry cost no budget
    runs = [json.loads(line)["run"] for line in log.read_text().splitlines()]
    assert runs.count("r0001") == 2 and all(runs.count(f"r000{i}") == 1 for i in (0, 2, 3))
    assert (search.store.path / "runs" / "r0001" / "killed").is_file()  # the first attempt did kill its worker
    figure(f"Ray worker SIGKILLed during a proxy: task retried once (max_retries {spec.max_retries}), 4/4 ok, "
           f"{time.time() - t0:.1f} s")


def test_workers_that_keep_dying_fail_the_run_after_max_retries(corpus, tmp_path, shared_wd, ray_head):
    """max_retries: 0 — the first death is final: a failed run that says it was a system failure."""
    plan = {"r0000": "kill-worker-once", "_sleep": 0.1}
    spec = SearchSpec.from_yaml(command_spec(corpus, tmp_path, name="noretry", runs=2, parallelism=2, plan=plan,
                                             extra="max_retries: 0"))
    search = Search(spec, workdir=shared_wd, ray_address=ray_head["gcs"])
    search.run()
    df = search.store.run_table().df.set_index("run_id")
    assert df.loc["r0000", "status"] == "failed" and "system failure" in df.loc["r0000", "error"]
    assert df.loc["r0001", "status"] == "ok"


def test_an_in_process_proxy_past_its_timeout_is_cancelled(corpus, tmp_path, shared_wd, ray_head, figure):
    """The driver's own limit for proxies trained in the Ray worker: cancel (kill) the task, record failed."""
    path = tmp_path / "slow.yaml"
    path.write_text(f"""
name: slow
dataset: {corpus / 'corpus.yaml'}
proxy: {{n_layer: 1, d_model: 16, n_head: 2, seq_len: 32, batch_size: 4, tokens: 100000000, eval_windows: 1,
        timeout_s: 6}}
optimizer: {{name: random}}
budget: {{runs: 1}}
parallelism: 1
""")
    search = Search(SearchSpec.from_yaml(path), workdir=shared_wd, ray_address=ray_head["gcs"])
    t0 = time.time()
    with pytest.raises(InputError, match="successful run"):
        search.run()
    took = time.time() - t0
    df = search.store.run_table().df
    assert list(df["status"]) == ["failed"] and "timed out after 6 s" in df.loc[0, "error"]
    assert search.store.get_meta("state") == "no-recommendation"
    figure(f"in-process proxy with timeout_s 6 (would train for hours): cancelled and failed after {took:.1f} s "
           "of search")
