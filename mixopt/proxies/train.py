"""Train one proxy on one mixture and measure validation loss per domain.

A run that produces a non-finite loss stops at once and is reported as failed with the step: its metrics must
never reach a predictor.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from mixopt.data.sampler import MixtureSampler, validation_windows
from mixopt.proxies.model import ProxyLM
from mixopt.spec import ProxySpec


@dataclass
class ProxyResult:
    status: str  # "ok" or "failed"
    losses: dict[str, float] = field(default_factory=dict)
    train_loss: float | None = None
    steps: int = 0
    tokens: int = 0
    params: int = 0
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    error: str | None = None
    epochs: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def lr_at(step: int, spec: ProxySpec) -> float:
    """Linear warmup, then cosine decay to 10 % of the peak."""
    warm = max(1, int(spec.warmup_frac * spec.steps))
    if step < warm:
        return spec.lr * (step + 1) / warm
    t = (step - warm) / max(1, spec.steps - warm)
    return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def evaluate(model: ProxyLM, val: dict[str, np.ndarray], spec: ProxySpec) -> dict[str, float]:
    model.eval()
    out = {}
    for d, arr in val.items():
        w = validation_windows(arr, spec.seq_len, spec.eval_windows)
        out[d] = float(model.loss(w[:, :-1], w[:, 1:]))
    model.train()
    return out


def train_proxy(spec: ProxySpec, weights: dict[str, float], train: dict[str, np.ndarray],
                val: dict[str, np.ndarray], vocab_size: int, seed: int, threads: int | None = None
                ) -> ProxyResult:
    t0 = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = ProxyLM(spec, vocab_size)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": spec.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=spec.lr, betas=(0.9, 0.95))
    sampler = MixtureSampler(train, weights, spec.seq_len, spec.batch_size, seed)
    result = ProxyResult(status="ok", params=model.n_params())
    loss_val = float("nan")
    for step in range(spec.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, spec)
        x, y = sampler.batch()
        loss = model.loss(x, y)
        loss_val = loss.item()
        if not math.isfinite(loss_val):
            result.status, result.error, result.steps = "failed", f"diverged: loss {loss_val} at step {step}", step
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
        opt.step()
        result.steps = step + 1
    result.tokens = result.steps * spec.batch_size * spec.seq_len
    result.train_loss = loss_val if math.isfinite(loss_val) else None
    result.epochs = sampler.epochs
    if result.status == "ok":
        result.losses = evaluate(model, val, spec)
        bad = [d for d, v in result.losses.items() if not math.isfinite(v)]
        if bad:
            result.status, result.error = "failed", f"non-finite validation loss on {bad}"
            result.losses = {}
    result.seconds = time.perf_counter() - t0
    result.tokens_per_s = result.tokens / result.seconds if result.seconds > 0 else 0.0
    return result
