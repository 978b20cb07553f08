"""The proxy trainer: real training on the demo corpus, batched == sequential, MoE, schedules, commands."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from mixopt.proxies import ProxyLM, model_size, train_proxies, train_proxy
from mixopt.proxies.command import run_command_proxy
from mixopt.proxies.train import lr_at
from mixopt.schedules import SCHEDULES, Feedback
from mixopt.spec import ProxySpec

TINY = dict(n_layer=1, d_model=32, n_head=2, seq_len=64, batch_size=8, eval_windows=4)
MOE = dict(TINY, kind="moe", n_experts=4, top_k=2, n_shared_experts=1, expert_d_ff=32)


def test_loss_falls_and_is_reported_per_domain(prepared):
    train, val = prepared.load("train"), prepared.load("val")
    w = {"python": 0.7, "prose": 0.3}
    short = train_proxy(ProxySpec(**TINY, tokens=8 * 64 * 2), w, train, val, prepared.vocab_size, seed=0)
    longer = train_proxy(ProxySpec(**TINY, tokens=8 * 64 * 60), w, train, val, prepared.vocab_size, seed=0)
    assert short.status == longer.status == "ok"
    assert set(longer.losses) == set(prepared.domains)
    assert all(math.isfinite(v) for v in longer.losses.values())
    assert longer.losses["python"] < short.losses["python"] - 0.3
    assert longer.losses["python"] < longer.losses["c_headers"]  # trained on python, never on headers
    assert longer.tokens == 8 * 64 * 60 and longer.epochs.keys() == {"python", "prose"}
    assert longer.mean_weights == pytest.approx(w)
    assert longer.flops == pytest.approx(model_size(ProxySpec(**TINY), prepared.vocab_size).flops_per_token
                                         * longer.tokens)


def test_same_seed_same_losses(prepared):
    train, val = prepared.load("train"), prepared.load("val")
    spec = ProxySpec(**TINY, tokens=8 * 64 * 5)
    a = train_proxy(spec, {"prose": 1.0}, train, val, prepared.vocab_size, seed=7)
    b = train_proxy(spec, {"prose": 1.0}, train, val, prepared.vocab_size, seed=7)
    c = train_proxy(spec, {"prose": 1.0}, train, val, prepared.vocab_size, seed=8)
    assert a.losses == b.losses and a.losses != c.losses


@pytest.mark.parametrize("arch", [TINY, MOE, dict(TINY, chunk_tokens=8 * 64 * 2)], ids=["dense", "moe", "chunked"])
def test_batched_training_equals_separate_runs(prepared, arch):
    train, val = prepared.load("train"), prepared.load("val")
    spec = ProxySpec(**arch, tokens=8 * 64 * 12)
    mixtures = [{"python": 1.0}, {"prose": 0.5, "licenses": 0.5}, {"cpp": 0.2, "data": 0.8}]
    seeds = [3, 4, 5]
    together = train_proxies(spec, mixtures, seeds, train, val, prepared.vocab_size)
    alone = [train_proxy(spec, m, train, val, prepared.vocab_size, seed=s)
             for m, s in zip(mixtures, seeds, strict=True)]
    for t, a in zip(together, alone, strict=True):
        assert t.status == a.status == "ok" and t.batched == 3 and a.batched == 1
        for d in a.losses:
            assert t.losses[d] == pytest.approx(a.losses[d], abs=1e-5)
        assert t.train_loss == pytest.approx(a.train_loss, abs=1e-5)
        assert t.epochs == a.epochs
    assert len({round(r.losses["python"], 4) for r in together}) == 3  # three different models


@pytest.mark.parametrize("arch", [TINY, MOE], ids=["dense", "moe"])
def test_shapes_gradients_and_isolation_of_stacked_proxies(arch):
    spec = ProxySpec(**arch, tokens=10_000)
    m = ProxyLM(spec, 257, seeds=[0, 1])
    x = torch.randint(0, 257, (2, 3, 64))
    logits, aux = m(x)
    assert logits.shape == (2, 3, 64, 257) and aux.shape == (2,)
    ce, aux = m.losses(x, x)
    (ce.mean(1) + 0.01 * aux).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    size = model_size(spec, 257)
    assert m.n_params() == size.total
    assert (size.active < size.total) == (spec.kind == "moe")
    # A proxy whose parameters are NaN (diverged) cannot touch its neighbour's loss or gradients.
    ref = ce[0].detach().clone()
    g0 = [p.grad[0].clone() for p in m.parameters()]
    with torch.no_grad():
        for p in m.parameters():
            p[1].fill_(float("nan"))
    m.zero_grad()
    ce, aux = m.losses(x, x)
    assert torch.isnan(ce[1]).all() and torch.equal(ce[0].detach(), ref)
    torch.where(torch.tensor([True, False]), ce.mean(1) + 0.01 * aux, torch.zeros(2)).sum().backward()
    for p, g in zip(m.parameters(), g0, strict=True):
        assert torch.allclose(p.grad[0], g, atol=1e-6)


def test_moe_router_balances_with_the_auxiliary_loss(prepared):
    train, val = prepared.load("train"), prepared.load("val")
    base = dict(MOE, n_experts=8, n_shared_experts=0, tokens=8 * 64 * 80, lr=1e-2)
    runs = {coef: train_proxy(ProxySpec(**base, aux_loss_coef=coef), {"python": 0.5, "prose": 0.5}, train, val,
                              prepared.vocab_size, seed=0) for coef in (0.0, 1.0)}
    spread = {c: max(r.expert_load) - min(r.expert_load) for c, r in runs.items()}
    assert all(r.status == "ok" for r in runs.values())
    assert sum(runs[1.0].expert_load) == pytest.approx(1.0)
    assert max(runs[1.0].expert_load) < 1.5 / 8  # near-uniform routing (1/8 each)
    assert spread[1.0] < spread[0.0]


def test_capacity_factor_drops_tokens_and_dropless_does_not():
    from mixopt.proxies.model import MoE

    torch.manual_seed(0)
    x = torch.randn(2, 64, 16)
    for cf, dropped in ((None, False), (0.5, True)):
        layer = MoE(2, 16, 8, n_experts=4, top_k=1, n_shared=0, capacity_factor=cf)
        for p in layer.parameters():
            torch.nn.init.normal_(p, std=0.5)
        y, _ = layer(x)
        assert y.shape == x.shape
        assert ((y.abs().sum(-1) == 0).any().item()) == dropped  # a dropped token gets no expert output
        if cf:
            assert (layer.last_dropped >= 0.5 - 1e-6).all()  # capacity = half the tokens per expert on average


def test_divergence_is_a_failed_run_with_the_step(prepared):
    train, val = prepared.load("train"), prepared.load("val")
    spec = ProxySpec(**TINY, tokens=8 * 64 * 40, lr=1e12, warmup_frac=0.0, grad_clip=1e30)
    r = train_proxy(spec, {"python": 1.0}, train, val, prepared.vocab_size, seed=0)
    assert r.status == "failed" and "diverged" in r.error and r.losses == {}
    assert r.failed_step is not None and r.failed_step < 40 and r.steps == r.failed_step


def test_learning_rate_schedules():
    cos = ProxySpec(**TINY, tokens=8 * 64 * 100, lr=1.0, warmup_frac=0.1, min_lr_frac=0.1)
    const = cos.model_copy(update={"lr_schedule": "constant"})
    assert lr_at(0, cos) == pytest.approx(0.1) and lr_at(9, cos) == pytest.approx(1.0)
    assert lr_at(99, cos) == pytest.approx(0.1, abs=1e-3) and lr_at(99, const) == 1.0
    assert lr_at(50, cos) < lr_at(20, cos)


def test_piecewise_schedule_switches_the_mixture(prepared):
    train, val = prepared.load("train"), prepared.load("val")
    spec = ProxySpec(**TINY, tokens=8 * 64 * 20)
    sched = {"name": "piecewise", "stages": [{"until": 0.25, "weights": {"python": 1.0}},
                                             {"until": 1.0, "weights": {"prose": 1.0}}]}
    r = train_proxy(spec, {"python": 1.0}, train, val, prepared.vocab_size, seed=0, schedule=sched)
    assert [p["step"] for p in r.trajectory] == [0, 5]
    assert r.mean_weights == pytest.approx({"python": 0.25, "prose": 0.75})
    assert set(r.epochs) == {"python", "prose"}
    with pytest.raises(ValueError, match="unknown mixing schedule"):
        train_proxy(spec, {"python": 1.0}, train, val, prepared.vocab_size, seed=0, schedule={"name": "nope"})


class Recorder:
    """A schedule that moves all weight to whichever domain had the highest training loss."""

    seen: list[Feedback] = []

    def __init__(self, weights, every=4):
        self.every = every
        self.w = weights

    def start(self, domains, total_steps):
        return self.w

    def update(self, fb):
        Recorder.seen.append(fb)
        val = fb.evaluate()
        assert set(val) == {"python", "prose", "c_headers", "cpp", "licenses", "package_docs", "data"}
        worst = max(fb.train_losses, key=fb.train_losses.get)
        return {worst: 1.0, "licenses": 1.0}


def test_a_schedule_sees_per_domain_losses_every_n_steps(prepared, monkeypatch):
    monkeypatch.setitem(SCHEDULES, "recorder", f"{__name__}:Recorder")
    Recorder.seen = []
    train, val = prepared.load("train"), prepared.load("val")
    spec = ProxySpec(**TINY, tokens=8 * 64 * 13)
    r = train_proxy(spec, {"python": 0.5, "prose": 0.5}, train, val, prepared.vocab_size, seed=0,
                    schedule={"name": "recorder", "every": 4})
    assert [fb.step for fb in Recorder.seen] == [4, 8, 12]
    assert set(Recorder.seen[0].train_losses) <= {"python", "prose"}
    assert Recorder.seen[1].weights == r.trajectory[1]["weights"]
    assert all(abs(sum(p["weights"].values()) - 1) < 1e-9 for p in r.trajectory)
    assert r.status == "ok"


def test_eval_every_records_a_curve(prepared):
    train, val = prepared.load("train"), prepared.load("val")
    spec = ProxySpec(**TINY, tokens=8 * 64 * 9, eval_every=3)
    r = train_proxy(spec, {"python": 1.0}, train, val, prepared.vocab_size, seed=0)
    assert [c["step"] for c in r.curve] == [3, 6] and set(r.curve[0]["losses"]) == set(prepared.domains)


def test_continual_pretraining_starts_every_run_from_one_cached_base(prepared, tmp_path):
    train, val = prepared.load("train"), prepared.load("val")
    base = {"weights": {"python": 1.0}, "tokens": 8 * 64 * 30, "seed": 3, "cache_dir": str(tmp_path / "bases")}
    spec = ProxySpec(**TINY, tokens=8 * 64 * 12, eval_every=4, warmup_frac=0.25, lr=1e-2, base=base)
    mixtures = [{"python": 1.0}, {"python": 0.5, "licenses": 0.5}]
    a, b = train_proxies(spec, mixtures, [11, 12], train, val, prepared.vocab_size)
    cached = list((tmp_path / "bases").glob("*.pt"))
    assert len(cached) == 1  # trained once, shared by both runs
    # The curve starts at the base's losses: identical for both runs whatever their seeds, and the base, trained
    # on python only, already knows python far better than a fresh proxy does.
    assert a.curve[0]["tokens"] == 0 and a.curve[0]["losses"] == b.curve[0]["losses"]
    fresh = train_proxy(ProxySpec(**TINY, tokens=8 * 64 * 4), mixtures[0], train, val, prepared.vocab_size, 11)
    assert a.curve[0]["losses"]["python"] < fresh.losses["python"] - 0.5
    # Continued pretraining on licences moves that loss down far more (over twice as far from the base's) than
    # continuing on python does.
    start = a.curve[0]["losses"]["licenses"]
    assert start - b.losses["licenses"] > 2 * (start - a.losses["licenses"]) > 0
    assert a.tokens == 8 * 64 * 12  # tokens count the continued run only
    # A second call loads the cache (same numbers) instead of training the base again.
    again = train_proxy(spec, mixtures[1], train, val, prepared.vocab_size, seed=12)
    # (b trained in a batch of two, `again` alone: equal up to the float order of a 2-thread reduction, ~1e-7)
    assert again.losses == pytest.approx(b.losses, abs=1e-5) and len(list((tmp_path / "bases").glob("*.pt"))) == 1
    # Another base mixture is another checkpoint.
    other = spec.model_copy(update={"base": spec.base.model_copy(update={"weights": {"prose": 1.0}})})
    c = train_proxy(other, mixtures[0], train, val, prepared.vocab_size, seed=11)
    assert len(list((tmp_path / "bases").glob("*.pt"))) == 2 and c.curve[0]["losses"] != a.curve[0]["losses"]


def test_moe_proxies_continue_from_a_base_too(prepared, tmp_path):
    train, val = prepared.load("train"), prepared.load("val")
    base = {"weights": {"python": 1.0}, "tokens": 8 * 64 * 10, "cache_dir": str(tmp_path)}
    spec = ProxySpec(**MOE, tokens=8 * 64 * 4, eval_every=2, base=base)
    res = train_proxies(spec, [{"python": 1.0}, {"prose": 1.0}, {"python": 0.5, "prose": 0.5}], [1, 2, 3], train, val,
                        prepared.vocab_size)
    assert [r.status for r in res] == ["ok"] * 3 and res[0].curve[0]["losses"] == res[2].curve[0]["losses"]
    assert res[1].losses["prose"] < res[0].losses["prose"]


# ------------------------------------------------------------------------------------- external commands

SCRIPT = """
import json, sys, time
mode, mixture, out = sys.argv[1], sys.argv[2], sys.argv[3]
m = json.load(open(mixture))
if mode == "ok":
    json.dump({"losses": {d: 3.0 - w for d, w in m["weights"].items()}, "seed": m["seed"]}, open(out, "w"))
elif mode == "fail":
    print("CUDA out of memory (pretend)", file=sys.stderr); sys.exit(3)
elif mode == "slow":
    time.sleep(30)
elif mode == "garbage":
    open(out, "w").write("{not json")
elif mode == "nan":
    json.dump({"loss_a": float("nan")}, open(out, "w"))
"""


@pytest.mark.parametrize("mode,status,needle", [
    ("ok", "ok", None), ("fail", "failed", "exit code 3"), ("slow", "failed", "timed out"),
    ("garbage", "failed", "not JSON"), ("nan", "failed", "diverged"), ("silent", "failed", "no metrics file")])
def test_external_command_proxy(tmp_path, mode, status, needle):
    script = tmp_path / "trainer.py"
    script.write_text(SCRIPT)
    spec = ProxySpec(kind="command", timeout_s=2, tokens=1000,
                     command=[sys.executable, str(script), mode, "{mixture_json}", "{metrics_json}"])
    r = run_command_proxy(spec, {"a": 0.25, "b": 0.75}, seed=11, domains=["a", "b"], run_dir=tmp_path / "run")
    assert r.status == status
    written = json.loads((tmp_path / "run" / "mixture.json").read_text())
    assert written["weights"] == {"a": 0.25, "b": 0.75} and written["seed"] == 11
    if status == "ok":
        assert r.losses == {"a": 2.75, "b": 2.25}
    else:
        assert needle in r.error and r.losses == {}
    if mode == "fail":
        assert "out of memory" in r.error


def test_spec_validation_for_new_kinds():
    with pytest.raises(ValueError, match="needs `command`"):
        ProxySpec(kind="command")
    with pytest.raises(ValueError, match="top_k"):
        ProxySpec(**dict(MOE, top_k=5), tokens=10_000)
    with pytest.raises(ValueError, match="only used with kind: command"):
        ProxySpec(command=["x"])
