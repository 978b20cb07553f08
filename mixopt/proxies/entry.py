"""Training proxies from a spec: build the batched model, fresh or from its continual-pretraining base, and train.

This is what a Ray worker calls. It sits above both the training loop (`train`) and the base checkpoints
(`continual`), which needs the loop to pretrain a base; so neither of those imports the other's caller.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mixopt.proxies.continual import base_state, load_base
from mixopt.proxies.model import ProxyLM
from mixopt.proxies.train import Progress, ProxyResult, pick_device, train_model
from mixopt.spec import ProxySpec


def train_proxies(spec: ProxySpec, mixtures: list[dict[str, float]], seeds: list[int],
                  train: dict[str, np.ndarray], val: dict[str, np.ndarray], vocab_size: int,
                  threads: int | None = None, schedules: list[dict[str, Any] | None] | None = None,
                  on_step: Progress | None = None) -> list[ProxyResult]:
    """Train len(mixtures) proxies together; one result per mixture, in order.

    With `spec.base` (continual pretraining) every proxy starts from the cached base checkpoint (trained here
    first if no earlier run left it) instead of its seed's initialisation."""
    if len(mixtures) != len(seeds):
        raise ValueError(f"{len(mixtures)} mixtures but {len(seeds)} seeds")
    if threads:
        torch.set_num_threads(threads)
    device = pick_device(spec)
    model = ProxyLM(spec, vocab_size, seeds=seeds).to(device)
    if spec.base is not None:
        load_base(model, base_state(spec, train, val, vocab_size))
    return train_model(model, spec, mixtures, seeds, train, val, vocab_size, schedules, on_step)


def train_proxy(spec: ProxySpec, weights: dict[str, float], train: dict[str, np.ndarray],
                val: dict[str, np.ndarray], vocab_size: int, seed: int, threads: int | None = None,
                schedule: dict[str, Any] | None = None, on_step: Progress | None = None) -> ProxyResult:
    """One proxy on one mixture (the K = 1 case of `train_proxies`)."""
    return train_proxies(spec, [weights], [seed], train, val, vocab_size, threads,
                         schedules=[schedule], on_step=on_step)[0]
