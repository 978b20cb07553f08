"""Training batches whose domain proportions follow a mixture; fixed validation windows per domain."""

from __future__ import annotations

import numpy as np
import torch

from mixopt.errors import InputError


class MixtureSampler:
    """Each sequence of a batch comes from a domain drawn with probability `weights[domain]`.

    Domains with weight 0 are never read (not even touched: memory-mapped arrays stay on disk). Deterministic
    per seed. `tokens_read` counts what was consumed and `epochs` turns it into passes over each domain, so
    callers can report repetition.
    """

    def __init__(self, train: dict[str, np.ndarray], weights: dict[str, float], seq_len: int,
                 batch_size: int, seed: int) -> None:
        unknown = sorted(set(weights) - set(train))
        if unknown:
            raise InputError("mixture", f"weights name domain(s) {unknown} the prepared data lacks "
                             f"(it has {list(train)})", "use the dataset's domain names")
        self.domains = [d for d in train if weights.get(d, 0.0) > 0]
        if not self.domains:
            raise InputError("mixture", "the mixture puts no weight on any domain", "give some domain a weight")
        p = np.array([weights[d] for d in self.domains], dtype=float)
        self.p = p / p.sum()
        self.arrays = [train[d] for d in self.domains]
        for d, a in zip(self.domains, self.arrays, strict=True):
            if len(a) <= seq_len + 1:
                raise InputError(f"domain {d}", f"{len(a)} training tokens, fewer than one sequence of "
                                 f"{seq_len + 1}", "add documents to the domain or shorten seq_len")
        self.seq_len, self.batch_size = seq_len, batch_size
        self.rng = np.random.default_rng(seed)
        self.tokens_read = dict.fromkeys(self.domains, 0)
        self._offsets = np.arange(seq_len + 1)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.seq_len
        which = self.rng.choice(len(self.domains), size=self.batch_size, p=self.p)
        rows = np.empty((self.batch_size, T + 1), dtype=np.int64)
        for k in np.unique(which):
            at = np.flatnonzero(which == k)
            a = self.arrays[k]
            starts = self.rng.integers(0, len(a) - T, size=len(at))
            # One fancy index per domain: a gather of whole windows, memory-mapped or not.
            rows[at] = a[starts[:, None] + self._offsets]
            self.tokens_read[self.domains[k]] += T * len(at)
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]

    @property
    def epochs(self) -> dict[str, float]:
        """Passes over each domain's training tokens so far."""
        return {d: n / len(a) for (d, n), a in zip(self.tokens_read.items(), self.arrays, strict=True)}


def validation_windows(val: np.ndarray, seq_len: int, max_windows: int) -> torch.Tensor:
    """Evenly spaced, non-overlapping windows: the same tokens for every proxy, so losses compare."""
    n = (len(val) - 1) // seq_len
    if n < 1:
        raise ValueError(f"validation split has {len(val)} tokens, fewer than one window of {seq_len + 1}")
    idx = np.linspace(0, n - 1, num=min(n, max_windows)).round().astype(int)
    rows = np.stack([np.asarray(val[i * seq_len:i * seq_len + seq_len + 1], dtype=np.int64) for i in idx])
    return torch.from_numpy(rows)
