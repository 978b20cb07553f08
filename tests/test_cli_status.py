"""`status` and `runs` on a job folder with hand-written results (no Ray, no proxies): what is in flight, and
why a run failed, within 80 columns."""

from __future__ import annotations

from mixopt.search.store import JobStore, PendingRun
from mixopt.spec import SearchSpec
from tests.conftest import run_cli, tiny_spec_yaml


def test_status_lists_the_runs_in_flight_and_runs_says_why_each_failed(tmp_path, capsys):
    spec = SearchSpec.from_yaml(tiny_spec_yaml(tmp_path, runs=10))
    wd = tmp_path / "wd"
    store = JobStore.create(wd, spec, "tiny-20261201-101500-ffff")
    domains = list(spec.dataset.domains)
    store.set_meta("domains", domains)
    store.set_meta("state", "running")
    for i in range(5):
        store.add_proposals([PendingRun(f"r{i:04d}", i, 0, 1, dict.fromkeys(domains, 1 / len(domains)), None,
                                        "regmix")])
    store.add_result("r0000", "ok", {f"loss_{d}": 3.0 for d in domains}, {"seconds": 1.0}, None)
    why = "loss of 'python' is nan (diverged at step 12); lower proxy.lr"
    store.add_result("r0001", "failed", {}, {"seconds": 0.5}, why)
    res = run_cli("status", store.job_id, "--workdir", str(wd), columns=80)
    assert res.returncode == 0, res.stderr
    assert "in flight" in res.stdout and "r0002, r0003, r0004 (the oldest proposed 0 min ago)" in res.stdout
    res = run_cli("runs", store.job_id, "--workdir", str(wd), columns=80)
    assert res.returncode == 0, res.stderr
    assert all(len(line) <= 80 for line in res.stdout.splitlines()), res.stdout
    assert why in " ".join(res.stdout.split()), res.stdout  # whole, though it wraps
    from mixopt.cli import status

    store.set_meta("state", "interrupted")  # nothing is in flight once the driver has stopped
    status(store.job_id, wd, False, None)
    out = capsys.readouterr().out
    assert "interrupted" in out and "in flight" not in out
