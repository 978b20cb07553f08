"""Targets: repetition caps on every optimizer's mixture, effective tokens, MoE dense equivalents, exports."""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import mixopt
from mixopt.errors import InputError
from mixopt.export import FORMATS, export
from mixopt.optimizers import get_optimizer
from mixopt.optimizers.base import Recommendation
from mixopt.runs import RunTable
from mixopt.search.driver import Search
from mixopt.search.store import JobStore, PendingRun
from mixopt.spec import LeverageSpec, SearchSpec, TargetSpec
from mixopt.target import (
    R_D_STAR,
    apply_target,
    compute_optimal_params,
    dense_equivalent,
    effective_data,
    effective_tokens,
    efficiency_leverage,
    epochs,
    optimal_params,
    rebalance,
    scaling_law,
)
from tests.conftest import DEMO_DOMAINS, ROOT

TARGETS = ROOT / "search" / "targets"
FAST = {"regmix": dict(n_candidates=2000, top_k=16, predictor="lightgbm", n_bootstrap=0, n_estimators=20,
                       max_epochs=None),
        "climb": dict(n_candidates=2000, predictor="lightgbm", n_bootstrap=0, n_estimators=20)}  # caps in search


def history(counts: dict[str, float], n: int = 12, seed: int = 0) -> RunTable:
    rng = np.random.default_rng(seed)
    domains = list(counts)
    W = rng.dirichlet(np.ones(len(domains)), size=n)
    df = pd.DataFrame(W, columns=[f"w_{d}" for d in domains])
    df["loss_a"] = 3.0 - 1.5 * W[:, 0] + rng.normal(0, 0.01, n)  # more of domain a is better: caps will bind
    df["run_id"] = [f"r{i}" for i in range(n)]
    return RunTable(df, token_counts=counts)


# ------------------------------------------------------------------------------------------ data-constrained law


def test_datablations_check_values():
    assert scaling_law(6.34e9, 242e9, 25e9) == pytest.approx(2.2256440889984477, abs=1e-9)
    assert scaling_law(8.67e9, 178e9, 25e9) == pytest.approx(2.2269634075087867, abs=1e-9)
    with pytest.raises(ValueError, match="unique tokens"):
        scaling_law(1e9, 1e10, 2e10)


def test_epochs_and_effective_tokens_by_hand():
    counts = np.array([100.0, 1000.0, 400.0])
    w = np.array([0.5, 0.2, 0.3])
    D = 1000.0
    assert epochs(w, counts, D).tolist() == pytest.approx([5.0, 0.2, 0.75])
    eff = effective_tokens(w, counts, D)
    # a: 500 tokens seen of 100 unique → 4 repeats: 100 + 100·R*·(1 − e^(−4/R*)) = 100 + 356.34...
    assert eff[0] == pytest.approx(100 + 100 * R_D_STAR * (1 - math.exp(-4 / R_D_STAR)))
    assert 450 < eff[0] < 460  # four repeats are nearly as good as fresh data (456 of 500)
    assert eff[1:].tolist() == pytest.approx([200.0, 300.0])  # under one epoch: every token is fresh
    assert effective_data(100.0, 100.0) == 100.0 and effective_data(0.0, 10.0) == 0.0
    assert epochs(np.array([0.5, 0.5]), np.array([0.0, 10.0]), 10.0)[0] == math.inf
    # The compute-optimal N of the fitted law agrees with its own N_opt(D).
    n = compute_optimal_params(6 * 1e9 * 2e10)
    assert optimal_params(6 * 1e9 * 2e10 / (6 * n)) == pytest.approx(n, rel=1e-9)


def test_apply_target_reports_efficiency_by_hand():
    rec = Recommendation(weights={"a": 0.5, "b": 0.2, "c": 0.3}, method="m", objective="o")
    target = TargetSpec(params=1e9, tokens=1000.0, max_epochs=8)
    out = apply_target(rec, {"a": 100, "b": 1000, "c": 400}, target)
    assert out.weights == rec.weights and not out.details["rebalanced"]
    expected = (100 + 100 * R_D_STAR * (1 - math.exp(-4 / R_D_STAR)) + 200 + 300) / 1000
    assert out.details["data_efficiency"] == pytest.approx(expected)
    assert out.details["repetition"]["a"]["epochs"] == pytest.approx(5.0)
    assert rec.notes == [] and rec.details == {}  # the optimizer's recommendation is not modified


def test_apply_target_rebalances_and_explains():
    rec = Recommendation(weights={"a": 0.6, "b": 0.3, "c": 0.1}, method="m", objective="o", predicted=2.0)
    target = TargetSpec(tokens=1000.0, max_epochs=4, max_epochs_per_domain={"c": 100})
    out = apply_target(rec, {"a": 100, "b": 1000, "c": 1000}, target)  # a: 6 epochs > 4 → cap 0.4
    assert out.weights == pytest.approx({"a": 0.4, "b": 0.45, "c": 0.15})
    assert out.details["original_weights"] == pytest.approx(rec.weights) and out.details["rebalanced"]
    text = " ".join(out.notes)
    assert "a would repeat 6.00× (cap 4)" in text and "re-balanced" in text and "original mixture" in text
    assert "predicted objective is the optimizer's" in text
    with pytest.raises(InputError, match="max_epochs_per_domain"):
        apply_target(rec, {"a": 1, "b": 1, "c": 1}, TargetSpec(tokens=10.0, max_epochs_per_domain={"z": 2}))
    short = apply_target(rec, {"a": 1, "b": 1, "c": 3}, TargetSpec(tokens=1000.0))  # corpus far too small
    assert short.weights == pytest.approx({"a": 0.2, "b": 0.2, "c": 0.6}) and short.details["caps_infeasible"]
    assert "no mixture respects the caps" in " ".join(short.notes)
    note = apply_target(rec, None, target).notes[-1]
    assert "domain token counts unknown" in note


# ------------------------------------------------------------------------------------------ rebalance


def test_rebalance_by_hand():
    assert rebalance(np.array([0.6, 0.3, 0.1]), np.array([0.4, 1, 1])) == pytest.approx([0.4, 0.45, 0.15])
    # a cascade: giving b its share pushes b over its own cap
    assert rebalance(np.array([0.6, 0.3, 0.1]), np.array([0.4, 0.4, 1])) == pytest.approx([0.4, 0.4, 0.2])
    # only domains the optimizer left at 0 can take the excess: they share it by their room (1 : 0.25)
    assert rebalance(np.array([1.0, 0, 0]), np.array([0.5, 1, 0.25])) == pytest.approx([0.5, 0.4, 0.1])
    with pytest.raises(InputError, match="caps sum to 0.9"):
        rebalance(np.array([0.5, 0.5]), np.array([0.45, 0.45]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0.01, 1)), min_size=2, max_size=8), st.floats(0, 1))
def test_rebalance_properties(pairs, lift):
    w = np.array([p[0] for p in pairs])
    caps = np.array([p[1] for p in pairs])
    if w.sum() <= 1e-6:
        w[0] = 1.0
    if caps.sum() < 1:  # make it feasible, by a random margin
        caps = np.minimum(1.0, caps / caps.sum() * (1 + lift))
    w = w / w.sum()
    out = rebalance(w, caps)
    assert abs(out.sum() - 1) < 1e-9 and (out >= 0).all() and (out <= caps + 1e-12).all()
    if (w <= caps).all():
        assert np.array_equal(out, w)
    free = (out < caps - 1e-9) & (w > 1e-9)
    if free.sum() >= 2:  # domains that did not hit a cap keep the optimizer's proportions
        ratio = out[free] / w[free]
        assert np.allclose(ratio, ratio[0], rtol=1e-6)


@settings(max_examples=10, deadline=None)
@given(st.lists(st.floats(1e3, 1e7), min_size=3, max_size=3), st.floats(0.05, 0.99), st.floats(1, 8),
       st.floats(1, 20))
def test_caps_never_violated_across_optimizers(counts, fill, max_epochs, python_epochs):
    counts_d = dict(zip(["a", "b", "c"], counts, strict=True))
    per_domain = {"b": python_epochs}
    room = sum(min(1e30, (per_domain.get(d, max_epochs)) * n) for d, n in counts_d.items())
    target = TargetSpec(kind="dense", params=1e8, tokens=fill * room, max_epochs=max_epochs,
                        max_epochs_per_domain=per_domain)
    table = history(counts_d)
    caps = {d: min(1.0, per_domain.get(d, max_epochs) * n / target.tokens) for d, n in counts_d.items()}
    for name in ("random", "uniform", "natural", "regmix", "climb"):
        opt = get_optimizer(name, objective="loss_a", **FAST.get(name, {}))
        rec = apply_target(opt.recommend(table, target), table.token_counts, target)
        w = rec.weights
        assert abs(sum(w.values()) - 1) < 1e-9, name
        assert all(w[d] <= caps[d] + 1e-9 for d in w), (name, w, caps)
        assert 0 < rec.details["data_efficiency"] <= 1 + 1e-12


def test_mixopt_recommend_applies_the_target():
    table = history({"a": 1000.0, "b": 1e6, "c": 1e6})
    target = TargetSpec(tokens=1e5, max_epochs=4)  # a may take at most 4% of the run
    rec = mixopt.recommend(table, optimizer="random", objective="loss_a", target=target)
    plain = mixopt.recommend(table, optimizer="random", objective="loss_a")
    assert plain.weights["a"] > 0.04 and rec.weights["a"] == pytest.approx(0.04)
    assert rec.details["rebalanced"] and "target" not in plain.details


# ------------------------------------------------------------------------------------------ MoE


def test_efficiency_leverage_by_hand():
    law = LeverageSpec(a=0.5, d=0.0, gamma=-0.5, g_opt=math.e, r_max=1000.0)  # exponent at G = e: 0.5 − 0.5 + 1
    # A = 1/2: r = 2, r̂ = 1 + 1/(1/1 + 1/999) = 1.999
    assert efficiency_leverage(0.5, math.e, 1e20, law) == pytest.approx(1.999)
    assert efficiency_leverage(1.0, 3.0, 1e21) == 1.0  # a dense model has no leverage, whatever the law
    law_c = LeverageSpec(a=0.0, d=0.1, gamma=-0.5, g_opt=1.0)
    assert efficiency_leverage(0.5, 1.0, math.e**2, law_c) == pytest.approx(1.999 ** 0.2)  # exponent 0.1·ln e²
    # Leverage grows with compute and peaks at g_opt.
    els = [efficiency_leverage(0.05, g, 1e21) for g in (2, 5, 10, 20, 50)]
    assert max(els) == els[2] and efficiency_leverage(0.05, 10, 1e23) > els[2]
    with pytest.raises(ValueError):
        efficiency_leverage(0.0, 10, 1e21)


def test_default_law_reproduces_the_public_point():
    # Ling-mini-beta: 0.85B active on 1T tokens matches a 6.1B dense model (docs/methods.md §8d), activation 9/257.
    el = efficiency_leverage(9 / 257, 10.0, 6 * 0.85e9 * 1e12)
    assert el == pytest.approx(6.1 / 0.85, rel=2e-3)
    t = TargetSpec(kind="moe", params=17.5e9, active_params=0.85e9, n_experts=256, top_k=8, shared_experts=1,
                   tokens=1e12)
    assert t.activation_ratio == pytest.approx(9 / 257) and round(t.activation_ratio, 3) == 0.035
    eq = dense_equivalent(t)
    assert eq["params"] == pytest.approx(6.1e9, rel=2e-3) and eq["granularity_assumed"]
    assert eq["rule"].startswith("same_tokens")


def test_transfer_rules():
    t = TargetSpec.from_yaml(TARGETS / "moe-7b.yaml")
    eq = dense_equivalent(t)
    assert t.activation_ratio == 8 / 64 and eq["compute"] == pytest.approx(6 * 1.3e9 * 1e12)
    assert eq["params"] == pytest.approx(eq["efficiency_leverage"] * 1.3e9)
    assert eq["compute_eq"] == pytest.approx(6 * eq["params"] * t.tokens)  # same D: C_eq = 6·N_eq·D
    chin = t.model_copy(update={"leverage": t.leverage.model_copy(update={"transfer": "chinchilla"})})
    eq_c = dense_equivalent(chin)
    assert eq_c["params"] == pytest.approx(compute_optimal_params(eq["compute_eq"]))
    assert eq_c["rule"].startswith("chinchilla")
    assert dense_equivalent(TargetSpec(params=1e9))["params"] == 1e9
    rec = apply_target(Recommendation({"a": 0.5, "b": 0.5}, "m", "o"), {"a": 1e12, "b": 1e12}, t)
    assert "transfer rule same_tokens" in " ".join(rec.notes)
    assert rec.details["target"]["dense_equivalent"]["params"] == pytest.approx(eq["params"])
    assert rec.details["target"]["data_constrained_loss"] > 1


# ------------------------------------------------------------------------------------------ specs


def test_target_spec_rules(tmp_path):
    old = TargetSpec.model_validate({"kind": "dense", "params": 1e9, "tokens": 2.5e10})
    assert old.max_epochs == 4 and old.domain_max_epochs("x") == 4
    cases = [({"kind": "moe", "params": 7e9}, "needs active_params, n_experts, top_k"),
             ({"kind": "dense", "n_experts": 8}, "n_experts apply to moe targets only"),
             ({"kind": "moe", "params": 1e9, "active_params": 2e9, "n_experts": 8, "top_k": 2}, "active_params"),
             ({"kind": "moe", "params": 9e9, "active_params": 2e9, "n_experts": 8, "top_k": 9}, "top_k"),
             ({"max_epochs_per_domain": {"web": -1}}, "max_epochs_per_domain.web")]
    for raw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            TargetSpec.model_validate(raw)
    p = tmp_path / "t.yaml"
    p.write_text("target:\n  kind: dense\n  tokens: 1e9\n  epochs: 3\n")
    with pytest.raises(InputError, match=r"target\.epochs: unknown key"):
        TargetSpec.from_yaml(p)
    p.write_text("target:\n  kind: dense\n  tokens: 2.0e9\n")
    assert TargetSpec.from_yaml(p).tokens == 2e9
    for f in TARGETS.glob("*.yaml"):
        assert TargetSpec.from_yaml(f).tokens


# ------------------------------------------------------------------------------------------ exports


def _rec() -> Recommendation:
    rec = Recommendation(weights={"web": 0.5, "code": 0.3, "math": 0.2, "empty": 0.0}, method="regmix",
                         objective="mean(loss_*)", predicted=2.5)
    return apply_target(rec, {"web": 1e12, "code": 1e11, "math": 1e10, "empty": 1e9},
                        TargetSpec(params=1e9, tokens=1e11, max_epochs=4))  # math: 2 epochs


def test_exports_round_trip():
    rec = _rec()
    prefixes = {"web": "/data/web_text_document", "math": "/data/math_text_document"}
    used = {d: w for d, w in rec.weights.items() if w > 0}
    for fmt in FORMATS:
        text = export(rec, fmt, prefixes)
        if fmt == "json":
            back = json.loads(text)
            assert back["weights"] == rec.weights and back["details"]["repetition"]["math"]["epochs"] == 2
        elif fmt == "yaml":
            assert yaml.safe_load(text)["weights"] == rec.weights
        elif fmt == "megatron":
            parts = text.split()
            assert len(parts) % 2 == 0
            pairs = dict(zip(parts[1::2], map(float, parts[0::2]), strict=True))
            assert pairs == pytest.approx({"/data/web_text_document": 0.5, "code": 0.3,
                                           "/data/math_text_document": 0.2})
            assert sum(pairs.values()) == pytest.approx(1, abs=1e-9)
        elif fmt == "hf":
            tree = ast.parse(text)
            values = {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body
                      if isinstance(n, ast.Assign) and n.targets[0].id in ("domains", "sources", "probabilities")}
            assert dict(zip(values["domains"], values["probabilities"], strict=True)) == pytest.approx(used)
            assert values["sources"][0] == "/data/web_text_document"
            assert any(isinstance(n, ast.Call) and getattr(n.func, "id", "") == "interleave_datasets"
                       for n in ast.walk(tree))
        elif fmt == "olmo":
            cfg = yaml.safe_load(text)
            src = {s["source_name"]: s for s in cfg["source_configs"]}
            assert {d: s["target_ratio"] for d, s in src.items()} == pytest.approx(used)
            assert np.isclose(sum(s["target_ratio"] for s in src.values()), 1.0)
            assert src["math"]["paths"] == ["/data/math_text_document"] and src["math"]["max_repetitions"] == 4
            assert cfg["requested_tokens"] == 10**11
        elif fmt == "torchtitan":
            cfg = tomllib.loads(text)["mixture"]
            assert {d["name"]: d["weight"] for d in cfg["datasets"]} == pytest.approx(used)
            assert cfg["method"] == "regmix" and cfg["datasets"][1]["path"] == "code"
    with pytest.raises(InputError, match="unknown domain"):
        export(rec, "megatron", {"nope": "x"})
    with pytest.raises(InputError, match="unknown format"):
        export(rec, "csv")


# ------------------------------------------------------------------------------------------ driver and CLI

COUNTS = {d: 1e11 for d in DEMO_DOMAINS} | {"python": 1e10}  # python: cap 4·1e10/1e12 = 0.04 for moe-7b


def make_job(tmp: Path) -> JobStore:
    """A job folder with synthetic results (no proxies, no Ray): more python looks better."""
    spec_path = tmp / "job.yaml"
    spec_path.write_text(f"""
name: synthetic
dataset: {ROOT / 'datasets' / 'demo.yaml'}
optimizer: {{name: regmix, n_candidates: 5000, top_k: 16, predictor: linear, n_bootstrap: 0,
             max_epochs: null}}
budget: {{runs: 16}}
target: {{kind: dense, params: 1.0e9, tokens: 1.0e12, max_epochs: 4}}
""")
    spec = SearchSpec.from_yaml(spec_path)
    store = JobStore.create(tmp / "work", spec)
    store.set_meta("domains", DEMO_DOMAINS)
    store.set_meta("token_counts", COUNTS)
    rng = np.random.default_rng(0)
    W = rng.dirichlet(np.ones(len(DEMO_DOMAINS)) * 0.5, size=16)
    store.add_proposals([PendingRun(f"r{i:04d}", i, 0, i, dict(zip(DEMO_DOMAINS, map(float, w), strict=True)),
                                    None, "regmix") for i, w in enumerate(W)])
    for i, w in enumerate(W):
        losses = {f"loss_{d}": float(3.0 - 1.0 * w[0] + 0.2 * w[j]) for j, d in enumerate(DEMO_DOMAINS)}
        store.add_result(f"r{i:04d}", "ok", losses, {}, None)
    return store


def test_driver_recommend_applies_the_spec_target(tmp_path):
    store = make_job(tmp_path)
    rec = Search(store.spec, workdir=tmp_path / "work", store=store).recommend()
    assert rec.weights["python"] <= 0.04 + 1e-9 and rec.details["rebalanced"]
    saved = json.loads((store.path / "recommendation.json").read_text())
    assert saved["weights"] == rec.weights and saved["details"]["original_weights"]["python"] > 0.04


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mixopt.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)


@pytest.mark.slow
def test_cli_recommend_megatron_with_moe_target(tmp_path):
    store = make_job(tmp_path)
    work = str(tmp_path / "work")
    r = run_cli("recommend", store.job_id, "--workdir", work, "--target", str(TARGETS / "moe-7b.yaml"),
                "--format", "megatron", "--prefix", "python=/data/python_text_document")
    assert r.returncode == 0, r.stderr
    parts = r.stdout.split()
    weights = dict(zip(parts[1::2], map(float, parts[0::2]), strict=True))
    assert sum(weights.values()) == pytest.approx(1, abs=1e-9)
    assert set(weights) <= {"/data/python_text_document", *DEMO_DOMAINS[1:]}
    assert weights["/data/python_text_document"] <= 0.04 + 1e-9
    assert "re-balanced" in r.stderr and "python would repeat" in r.stderr
    assert "transfer rule same_tokens" in r.stderr and "data efficiency" in r.stderr
    out = tmp_path / "mix.yaml"
    r = run_cli("recommend", store.job_id, "--workdir", work, "--format", "olmo", "--out", str(out))
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(out.read_text())
    assert np.isclose(sum(s["target_ratio"] for s in cfg["source_configs"]), 1.0)
    r = run_cli("recommend", store.job_id, "--workdir", work, "--format", "csv")
    assert r.returncode == 2 and "unknown format 'csv'" in r.stderr
    r = run_cli("recommend", store.job_id, "--workdir", work, "--prefix", "nope")
    assert r.returncode == 2 and "expected KEY=VALUE" in r.stderr


def test_an_infeasible_target_is_explained_once_in_terms_of_the_binding_cap():
    """The search's note and the target step's note name the same cap (the target's 4 epochs, not RegMix's 15)."""
    from mixopt.optimizers._surrogate import CapSettings, resolve_caps

    df = pd.DataFrame({"w_a": [0.5], "w_b": [0.5], "loss_a": [1.0], "loss_b": [1.0], "run_id": ["r0"],
                       "status": ["ok"]})
    history = RunTable(df, token_counts={"a": 100, "b": 300})
    target = TargetSpec(tokens=10_000.0)
    caps, note = resolve_caps(CapSettings(), history, np.array([0.25, 0.75]), target)
    assert caps is None and "target.max_epochs" in note and "1.6e+03" in note and "15 epochs" not in note
    _, own = resolve_caps(CapSettings(), history, np.array([0.25, 0.75]), None)
    assert own is None  # without a target the corpus itself is the budget: feasible


def test_recommend_what_ifs_leave_the_jobs_recommendation_byte_identical(tmp_path):
    """The job's recommendation.json is written once by the search; `recommend` with another optimizer, other
    settings, another target or an export prints (or writes the file the user names) and never touches it."""
    from mixopt import cli

    store = make_job(tmp_path)
    Search(store.spec, workdir=tmp_path / "work", store=store).recommend()
    saved = store.path / "recommendation.json"
    before = saved.read_bytes()
    base = dict(job=store.job_id, workdir=tmp_path / "work", optimizer=None, as_json=False, fmt=None, target=None,
                prefix=None, out=None, setting=None)
    for what_if in ({}, {"optimizer": "random"}, {"setting": ["top_k=4"]}, {"target": TARGETS / "moe-7b.yaml"},
                    {"fmt": "megatron"}, {"as_json": True}, {"fmt": "yaml", "out": tmp_path / "mix.yaml"}):
        cli.recommend(**(base | what_if))
        assert saved.read_bytes() == before, what_if
    assert (tmp_path / "mix.yaml").is_file()
    with pytest.raises(InputError, match=r"--out .*recommendation.json: that is the job's own"):
        cli.recommend(**(base | {"fmt": "json", "out": saved}))
    assert saved.read_bytes() == before
