"""Asynchronous scheduling keeps workers busy past a slow proxy; rounds wait for it."""

from __future__ import annotations

import time

import pytest

from mixopt.search import Search
from mixopt.spec import SearchSpec
from tests.reliability.conftest import command_spec

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["async", "rounds"])
def test_a_slow_proxy_holds_up_only_a_synchronous_round(corpus, tmp_path, shared_wd, ray_head, mode, figure):
    plan = {"r0000": "slow", "_slow": 4.0, "_sleep": 0.2}
    spec = SearchSpec.from_yaml(command_spec(corpus, tmp_path, name=f"sched-{mode}", runs=6, parallelism=2,
                                             plan=plan, extra=f"scheduling: {mode}"))
    t0 = time.time()
    search = Search(spec, workdir=shared_wd, ray_address=ray_head["gcs"])
    search.run()
    took = time.time() - t0
    df = search.store.run_table().df.set_index("run_id")
    assert list(df["status"]) == ["ok"] * 6 and len(df) == 6
    slow_done = df.loc["r0000", "finished_at"]
    started_meanwhile = [r for r in df.index[1:] if df.loc[r, "created_at"] < slow_done]
    if mode == "async":  # the other slot went on proposing and training while r0000 ran
        assert len(started_meanwhile) >= 3, df[["created_at", "finished_at"]]
        assert df["round"].nunique() >= 4
    else:  # the second round was proposed only when r0000, the slow run of the first, had finished
        assert started_meanwhile == ["r0001"], df[["created_at", "finished_at"]]
        assert list(df["round"]) == [0, 0, 1, 1, 2, 2]
    figure(f"scheduling {mode}: 6 runs, one 4 s proxy among 0.2 s ones, 2 slots: {len(started_meanwhile)} other "
           f"run(s) proposed while it trained; search {took:.1f} s")


def test_an_optimizer_can_ask_the_async_driver_to_wait_for_pending_runs(corpus, tmp_path, shared_wd, ray_head):
    from mixopt.optimizers.random_search import RandomSearch

    class Rounds(RandomSearch):
        """Random proposals, but a barrier before the 4th run (like CLIMB before its next round)."""

        def wait_for_pending(self, history) -> bool:
            return len(history) == 3

    plan = {"r0000": "slow", "_slow": 3.0, "_sleep": 0.2}
    spec = SearchSpec.from_yaml(command_spec(corpus, tmp_path, name="barrier", runs=5, parallelism=2, plan=plan))
    search = Search(spec, workdir=shared_wd, ray_address=ray_head["gcs"])
    search.optimizer = Rounds(seed=spec.seed, objective=spec.objective)
    search.run()
    df = search.store.run_table().df.set_index("run_id")
    assert list(df["status"]) == ["ok"] * 5
    assert df.loc["r0002", "created_at"] < df.loc["r0000", "finished_at"]  # async up to the barrier
    assert df.loc["r0003", "created_at"] >= df.loc[["r0000", "r0001", "r0002"], "finished_at"].max()
