"""Keeps benchmarks/ladder_noise.py working: the --toy path trains every variant and reports paired noise."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_ladder_noise_toy_path_reports_each_variant(tmp_path, workdir):
    out = tmp_path / "noise.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ladder_noise.py"), "--toy", "--seeds", "2",
                          "--workers", "1", "--workdir", str(workdir), "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    got = json.loads(out.read_text())
    assert list(got["variants"]) == ["iid sampler", "stratified", "stratified, 256 eval windows"]
    assert got["reference"] == "iid sampler"
    assert [r["mixture"] for r in got["rows"]][:2] == ["uniform", "natural"] and len(got["rows"]) == 5
    for r in got["rows"]:
        for v in got["variants"]:
            assert len(r[v]["values"]) == 2 and all(x == x for x in r[v]["values"])
    # same seeds, different samplers: the two variants trained on different data
    assert got["rows"][1]["iid sampler"]["values"] != got["rows"][1]["stratified"]["values"]
    assert all(s >= 0 for s in got["pooled_diff_sd"].values())
