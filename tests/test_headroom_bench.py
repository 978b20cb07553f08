"""Keeps benchmarks/headroom.py working: the --toy path fits the target's elasticities, checks their optimum on
fresh seeds, reads the trend across rungs, adds a trend to an earlier result, fits at a cheap rung, and screens
several proxies against the target's fit."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "headroom.py"), "--toy", "--workers", "1",
                           *args], capture_output=True, text=True, timeout=600)


def test_headroom_toy_path_fits_checks_and_reads_the_trend(tmp_path, workdir):
    out = tmp_path / "headroom.json"
    res = run("--design-seeds", "2", "--eval-seeds", "2", "--draws", "2", "--trend", "--workdir", str(workdir),
              "--out", str(out))
    assert res.returncode == 0, res.stderr
    got = json.loads(out.read_text())
    names = [r["mixture"] for r in got["design"]]
    assert names == ["uniform", "natural", "natural reflected", "draw 0", "draw 1"]
    assert all(len(r["values"]) == 2 and all(v == v for v in r["values"]) for r in got["design"])
    assert abs(sum(got["optimum"].values()) - 1) < 1e-9 and min(got["optimum"].values()) >= 0.02 / 1.2
    assert [r["mixture"] for r in got["check"]] == ["uniform", "target-fitted optimum", "halfway to it"]
    assert got["check"][1]["gap_se"] >= 0 and got["eval_seeds"] == [2000, 2001]
    trend = got["trend"]
    assert [r["mixture"] for r in trend["rows"]] == names[1:]
    assert trend["flops"]["nano"] < trend["flops"]["micro"] < trend["flops"]["target"]
    f = trend["flops"]  # the line through nano and micro, extended in log compute
    k = (math.log(f["target"]) - math.log(f["micro"])) / (math.log(f["micro"]) - math.log(f["nano"]))
    for r in trend["rows"]:
        assert r["extrapolated"] == pytest.approx(r["gap_micro"] + k * (r["gap_micro"] - r["gap_nano"]))

    # --trend-from adds the same trend to an earlier result without retraining the target
    again = tmp_path / "again.json"
    res = run("--trend-from", str(out), "--workdir", str(workdir), "--out", str(again))
    assert res.returncode == 0, res.stderr
    got2 = json.loads(again.read_text())
    assert got2["design"] == got["design"] and got2["trend"]["rows"] == trend["rows"]

    # --fit-at fits the same law at a cheap rung and checks that optimum at the target, paired with FILE's uniform
    fitted = tmp_path / "fitted.json"
    res = run("--fit-at", "micro", "--from", str(out), "--workdir", str(workdir), "--out", str(fitted))
    assert res.returncode == 0, res.stderr
    f = json.loads(fitted.read_text())["fitted_at"]["micro"]
    assert abs(sum(f["optimum"].values()) - 1) < 1e-9 and len(f["values"]) == 2
    uni = next(r for r in got["check"] if r["mixture"] == "uniform")["values"]
    assert f["gap_to_uniform"] == pytest.approx(sum(a - b for a, b in zip(f["values"], uni, strict=True)) / 2)
    assert -1 <= f["elasticity_spearman"] <= 1 and f["l1_to_target_optimum"] >= 0

    # --screen fits the law at several proxies (the second on half of every domain's training tokens) and sets
    # each against the target's fit without training the target again
    screened = tmp_path / "screened.json"
    res = run("--screen", "nano", "micro@0.5", "--from", str(out), "--workdir", str(workdir), "--out",
              str(screened))
    assert res.returncode == 0, res.stderr
    sc = json.loads(screened.read_text())["screen"]
    assert list(sc) == ["nano", "micro@0.5"] and sc["micro@0.5"]["data_fraction"] == 0.5
    for f in sc.values():
        assert abs(sum(f["optimum"].values()) - 1) < 1e-9 and "values" not in f
        assert math.isfinite(f["predicted_gain_under_target_law"]) and -1 <= f["elasticity_spearman"] <= 1
