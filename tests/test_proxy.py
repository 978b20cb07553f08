"""The proxy trainer: real training on the demo corpus, deterministic, failures reported."""

from __future__ import annotations

import math

from mixopt.proxies import ProxyLM, train_proxy
from mixopt.spec import ProxySpec

TINY = dict(n_layer=1, d_model=32, n_head=2, seq_len=64, batch_size=8, eval_windows=4)


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


def test_same_seed_same_losses(prepared):
    train, val = prepared.load("train"), prepared.load("val")
    spec = ProxySpec(**TINY, tokens=8 * 64 * 5)
    a = train_proxy(spec, {"prose": 1.0}, train, val, prepared.vocab_size, seed=7)
    b = train_proxy(spec, {"prose": 1.0}, train, val, prepared.vocab_size, seed=7)
    assert a.losses == b.losses


def test_divergence_is_a_failed_run_with_the_step(prepared):
    train, val = prepared.load("train"), prepared.load("val")
    spec = ProxySpec(**TINY, tokens=8 * 64 * 40, lr=1e12, warmup_frac=0.0, grad_clip=1e30)
    r = train_proxy(spec, {"python": 1.0}, train, val, prepared.vocab_size, seed=0)
    assert r.status == "failed" and "diverged" in r.error and r.losses == {}


def test_model_shapes():
    spec = ProxySpec(**TINY, tokens=10_000)
    m = ProxyLM(spec, 257)
    import torch

    x = torch.randint(0, 257, (3, 64))
    assert m(x).shape == (3, 64, 257)
    assert 10_000 < m.n_params() < 60_000
