"""Base checkpoints for continual pretraining (`ProxySpec.base`).

Continual-pretraining laws (D-CPT, CMR) describe how a *pretrained* model's general and domain losses move
when training continues on a general/domain mixture, so every run of a CPT search must start from the same
checkpoint. The base is trained here, once per (architecture, optimiser settings, base mixture, tokens, seed,
data), by whichever Ray task needs it first; the others wait on a file lock and load it. The cache key hashes
those settings and a fingerprint of the training arrays, so a changed corpus or proxy never reuses a stale base.
A base that diverges is an error of the whole search (every run would start from it), not a failed run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from mixopt.proxies.model import ProxyLM
from mixopt.proxies.train import train_model
from mixopt.spec import ProxySpec

# Settings that do not change a run's weights (evaluation, placement, batching across proxies).
_NOT_IN_KEY = {"name", "eval_every", "eval_windows", "device", "compile", "chunk_tokens", "proxies_per_task",
               "num_cpus", "num_gpus", "timeout_s", "command"}


def cache_dir(spec: ProxySpec) -> Path:
    assert spec.base is not None
    if spec.base.cache_dir:
        return Path(spec.base.cache_dir).expanduser()
    root = os.environ.get("MIXOPT_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "mixopt") / "bases"


def base_run(spec: ProxySpec) -> ProxySpec:
    """The base's own training run: the proxy's settings for base.tokens, with the base's lr and schedule when
    given, and a 10 % warmup (the proxy's warmup_frac is the continued run's re-warming)."""
    assert spec.base is not None
    return spec.model_copy(update={"base": None, "tokens": spec.base.tokens, "eval_every": None, "warmup_frac": 0.1,
                                   "lr": spec.base.lr or spec.lr,
                                   "lr_schedule": spec.base.lr_schedule or spec.lr_schedule})


def base_key(spec: ProxySpec, train: dict[str, np.ndarray], vocab_size: int) -> str:
    """A hash of everything that determines the base's weights: its run, mixture, seed, and the data."""
    assert spec.base is not None
    run = {k: v for k, v in base_run(spec).model_dump().items() if k not in _NOT_IN_KEY}
    base = spec.base.model_dump(include={"weights", "seed"})
    data = {d: [int(len(train[d])), hashlib.sha1(np.ascontiguousarray(train[d][:4096]).tobytes()).hexdigest(),
                hashlib.sha1(np.ascontiguousarray(train[d][-4096:]).tobytes()).hexdigest()]
            for d in sorted(spec.base.weights) if d in train}
    blob = json.dumps({"run": run, "base": base, "vocab": vocab_size, "data": data}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # concurrent tasks needing the same base wait for the first to save it
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def base_state(spec: ProxySpec, train: dict[str, np.ndarray], val: dict[str, np.ndarray],
               vocab_size: int) -> dict[str, torch.Tensor]:
    """The base checkpoint's state dict (one proxy, leading dimension 1), trained now if not cached."""
    assert spec.base is not None
    missing = sorted(d for d, w in spec.base.weights.items() if w > 0 and d not in train)
    if missing:
        raise ValueError(f"base.weights names domain(s) {missing} the training data does not have")
    path = cache_dir(spec) / f"{spec.name}-{base_key(spec, train, vocab_size)}.pt"
    with _locked(path):
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True)
        total = sum(spec.base.weights.values())
        weights = {d: w / total for d, w in spec.base.weights.items()}
        plain = base_run(spec)
        model = ProxyLM(plain, vocab_size, seeds=[spec.base.seed])
        (res,) = train_model(model, plain, [weights], [spec.base.seed], train, val, vocab_size)
        if res.status != "ok":
            raise RuntimeError(f"the base checkpoint of proxy {spec.name} failed: {res.error}; lower lr or "
                               "change base.seed")
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        meta = {"proxy": spec.name, "base": spec.base.model_dump(), "losses": res.losses, "seconds": res.seconds}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
        return state


def load_base(model: ProxyLM, state: dict[str, torch.Tensor]) -> None:
    """Copy a one-proxy base into every proxy of a batched model (each parameter's leading dimension)."""
    own = model.state_dict()
    out = {}
    for name, mine in own.items():
        if name not in state:
            raise ValueError(f"base checkpoint lacks {name}: it was saved for another architecture")
        theirs = state[name].to(mine.device, mine.dtype)
        out[name] = theirs if theirs.shape == mine.shape else theirs.expand_as(mine).clone()
    model.load_state_dict(out)
