"""Keeps benchmarks/e2e_demo.py working: the --toy path end to end (real searches, real target training)."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from mixopt.optimizers import unregister_optimizer
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_e2e_demo_toy_path_runs_and_reports(tmp_path, monkeypatch, request):
    spec = importlib.util.spec_from_file_location("e2e_demo", ROOT / "benchmarks" / "e2e_demo.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "e2e_demo", mod)
    spec.loader.exec_module(mod)  # registers its TPE baseline for this process
    request.addfinalizer(lambda: unregister_optimizer("tpe"))  # and the registry forgets it after this test
    out = tmp_path / "e2e.json"
    res = mod.main(["--toy", "--workdir", str(tmp_path / "work"), "--out", str(out), "--plot", str(tmp_path / "a.png"),
                    "--ladder-candidates"])
    names = {r["mixture"] for r in res["rows"]}
    assert {"default", "regmix λ=0, no ladder", "tpe", "uniform", "natural", "best proxy run"} <= names
    assert sum(n.startswith("ladder: ") for n in names) == 1  # the ladder's one candidate, trained at the target
    assert res["default"] == "default" and res["dataset"] == "demo" and res["compute_ratio"] > 0
    assert res["ladder"]["winner"] and len(res["ladder"]["rows"]) == 3  # 1 candidate + natural + uniform
    # the equal-compute searches get as many proxy runs as the default's proxies + ladder cost
    assert res["equal_compute_runs"] > 6
    assert res["params_ratio"] >= 8 and res["tokens_ratio"] >= 4
    for r in res["rows"]:
        assert len(r["values"]) == 2 and all(v == v for v in r["values"])  # two seeds, no NaN
        assert abs(sum(r["weights"].values()) - 1) < 1e-6
    assert -1 <= res["ranking"]["spearman_rho"] <= 1 and len(res["ranking"]["target"]) == 4
    assert json.loads(out.read_text())["mode"] == "toy"
    assert res.get("mlflow_parent_run")  # the plot and the JSON went to the regmix job's parent run
    assert (tmp_path / "a.png").stat().st_size > 1000
    mod.main(["--from-json", str(out), "--plot", str(tmp_path / "b.png")])  # redrawn from the JSON alone
    assert (tmp_path / "b.png").stat().st_size > 1000


def test_e2e_demo_measures_another_recipe(tmp_path, monkeypatch, request):
    """--recipe: the elasticity recipe (no ladder) is the 'default' row, with its law's evidence in the result."""
    spec = importlib.util.spec_from_file_location("e2e_demo", ROOT / "benchmarks" / "e2e_demo.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "e2e_demo", mod)
    spec.loader.exec_module(mod)
    request.addfinalizer(lambda: unregister_optimizer("tpe"))
    res = mod.main(["--toy", "--workdir", str(tmp_path / "work"), "--recipe",
                    str(ROOT / "search" / "elasticity-demo.yaml"), "--seeds", "2"])
    assert res["ladder"] == {"rows": []}  # the recipe has no ladder
    details = res["default_details"]
    assert set(details["elasticity"]) == set(res["rows"][0]["weights"])
    assert details["gain_over_uniform_se"] is not None and res["equal_compute_runs"] == 6
