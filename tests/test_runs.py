"""RunTable: loads the released benchmark tables as they are, round-trips, guards predictors from bad rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixopt.errors import InputError
from mixopt.runs import RunTable
from tests.conftest import need_regmix


def test_loads_regmix_release_as_is(tmp_path):
    path = need_regmix()
    rt = RunTable.from_csv(path)
    assert len(rt) == 512 and len(rt.domains) == 17 and len(rt.loss_columns) == 13
    assert rt.domains[0] == "arxiv" and "loss_pile_cc" in rt.loss_columns
    np.testing.assert_allclose(rt.weights.sum(axis=1), 1.0, atol=1e-12)  # rounding renormalised...
    assert any("renormalised" in n for n in rt.notes)  # ...and said so
    y = rt.objective("loss_pile_cc")
    assert np.isfinite(y).all() and 3 < y.min() < y.max() < 8
    for saver, loader, name in ((rt.to_parquet, RunTable.from_parquet, "t.parquet"),
                                (rt.to_csv, RunTable.from_csv, "t.csv")):
        saver(tmp_path / name)
        back = loader(tmp_path / name)
        pd.testing.assert_frame_equal(back.df, rt.df, check_exact=False, rtol=1e-12)
        assert back.domains == rt.domains


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_parquet_round_trip_property(n, k, seed):
    import tempfile
    from pathlib import Path

    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.ones(k), size=n)
    df = pd.DataFrame(W, columns=[f"w_d{i}" for i in range(k)])
    df["loss_d0"] = rng.normal(3, 0.1, n)
    df["status"] = rng.choice(["ok", "failed"], n)
    rt = RunTable(df)
    with tempfile.TemporaryDirectory() as d:
        rt.to_parquet(Path(d) / "x.parquet")
        back = RunTable.from_parquet(Path(d) / "x.parquet")
    pd.testing.assert_frame_equal(back.df, rt.df)
    np.testing.assert_array_equal(back.objective(), rt.objective())


def test_failed_and_nan_rows_never_reach_a_predictor():
    df = pd.DataFrame({"w_a": [0.5, 0.2, 1.0, 0.3], "w_b": [0.5, 0.8, 0.0, 0.7],
                       "loss_a": [3.0, float("nan"), 2.5, 2.0], "loss_b": [3.0, 3.1, 4.0, 1.0],
                       "status": ["ok", "ok", "ok", "failed"]})
    rt = RunTable(df)
    ok, y = rt.usable()
    assert len(ok) == 2 and list(y) == [3.0, 3.25]
    assert any("non-finite" in n for n in ok.notes)
    assert math.isnan(rt.objective("loss_a")[1])


@pytest.mark.parametrize("weights, words", [
    ([0.5, 0.3], "sum to 0.8"),
    ([1.2, -0.2], "negative"),
    ([float("nan"), 1.0], "not a number"),
])
def test_bad_weights_name_the_row(weights, words):
    df = pd.DataFrame({"run_id": ["ok1", "bad"], "w_a": [0.5, weights[0]], "w_b": [0.5, weights[1]]})
    with pytest.raises(InputError, match=words) as e:
        RunTable(df, source="runs.csv")
    assert "runs.csv" in str(e.value) and "bad" in str(e.value)


def test_missing_objective_column_lists_what_is_there():
    rt = RunTable(pd.DataFrame({"w_a": [1.0], "w_b": [0.0], "loss_a": [2.0]}))
    with pytest.raises(InputError, match="loss_a"):
        rt.objective("loss_zzz")


def test_no_weight_columns_and_unknown_status():
    with pytest.raises(InputError, match="w_<domain>"):
        RunTable(pd.DataFrame({"loss_a": [1.0]}))
    with pytest.raises(InputError, match="status"):
        RunTable(pd.DataFrame({"w_a": [1.0], "status": ["weird"]}))


def test_checkpoints_of_a_run_become_rows_and_failed_runs_stay_out():
    curve_a = [{"step": 0, "tokens": 0, "losses": {"x": 3.0, "y": 3.2}},
               {"step": 5, "tokens": 50, "losses": {"x": 2.0, "y": 2.5}}]
    df = pd.DataFrame({"run_id": ["a", "b", "c"], "w_x": [1.0, 0.5, 0.0], "w_y": [0.0, 0.5, 1.0],
                       "status": ["ok", "ok", "failed"], "fid_tokens": [100.0] * 3, "fid_flops": [10.0] * 3,
                       "loss_x": [1.5, 1.7, np.nan], "loss_y": [2.0, 1.9, np.nan],
                       "curve": [curve_a, None, [{"step": 5, "tokens": 50, "losses": {"x": 9.0, "y": 9.0}}]]})
    t = RunTable(df).with_checkpoints()
    assert list(t.df["run_id"]) == ["a", "a@0", "a@50", "b"]
    row = t.df.iloc[2]
    assert (row["fid_tokens"], row["fid_flops"], row["loss_x"], row["loss_y"]) == (50, 5, 2.0, 2.5)
    assert row["checkpoint_of"] == "a" and pd.isna(t.df.iloc[0]["checkpoint_of"])
    assert t.df.iloc[1]["fid_tokens"] == 0 and "curve" not in t.df.columns
    assert len(RunTable(df.drop(columns="curve")).with_checkpoints()) == 2  # no curves: the successful runs
