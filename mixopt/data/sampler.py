"""Training batches whose domain proportions follow a mixture; fixed validation windows per domain."""

from __future__ import annotations

import numpy as np
import torch


class MixtureSampler:
    """Each sequence of a batch comes from a domain drawn with probability `weights[domain]`.

    Domains with weight 0 are never read. Deterministic per seed. `tokens_read` counts what was consumed,
    so callers can report epochs per domain.
    """

    def __init__(self, train: dict[str, np.ndarray], weights: dict[str, float], seq_len: int,
                 batch_size: int, seed: int) -> None:
        self.domains = [d for d in train if weights.get(d, 0.0) > 0]
        if not self.domains:
            raise ValueError("the mixture puts no weight on any domain")
        p = np.array([weights[d] for d in self.domains], dtype=float)
        self.p = p / p.sum()
        self.arrays = [train[d] for d in self.domains]
        for d, a in zip(self.domains, self.arrays, strict=True):
            if len(a) <= seq_len + 1:
                raise ValueError(f"domain {d} has {len(a)} tokens, fewer than one sequence of {seq_len + 1}")
        self.seq_len, self.batch_size = seq_len, batch_size
        self.rng = np.random.default_rng(seed)
        self.tokens_read = dict.fromkeys(self.domains, 0)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.seq_len
        which = self.rng.choice(len(self.domains), size=self.batch_size, p=self.p)
        rows = np.empty((self.batch_size, T + 1), dtype=np.int64)
        for i, k in enumerate(which):
            a = self.arrays[k]
            start = int(self.rng.integers(0, len(a) - T - 1))
            rows[i] = a[start:start + T + 1]
            self.tokens_read[self.domains[k]] += T
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]


def validation_windows(val: np.ndarray, seq_len: int, max_windows: int) -> torch.Tensor:
    """Evenly spaced, non-overlapping windows: the same tokens for every proxy, so losses compare."""
    n = (len(val) - 1) // seq_len
    if n < 1:
        raise ValueError(f"validation split has {len(val)} tokens, fewer than one window of {seq_len + 1}")
    idx = np.linspace(0, n - 1, num=min(n, max_windows)).round().astype(int)
    rows = np.stack([np.asarray(val[i * seq_len:i * seq_len + seq_len + 1], dtype=np.int64) for i in idx])
    return torch.from_numpy(rows)
