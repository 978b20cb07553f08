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
        self.train = train
        self.seq_len, self.batch_size = seq_len, batch_size
        self.rng = np.random.default_rng(seed)
        self.tokens_read: dict[str, int] = {}
        self._offsets = np.arange(seq_len + 1)
        self.last_domains: list[str] = []  # domain of each row of the latest batch
        self.set_weights(weights)

    def set_weights(self, weights: dict[str, float]) -> None:
        """Change the proportions from the next batch on (mixing schedules); the random stream continues."""
        unknown = sorted(set(weights) - set(self.train))
        if unknown:
            raise InputError("mixture", f"weights name domain(s) {unknown} the prepared data lacks "
                             f"(it has {list(self.train)})", "use the dataset's domain names")
        domains = [d for d in self.train if weights.get(d, 0.0) > 0]
        if not domains:
            raise InputError("mixture", "the mixture puts no weight on any domain", "give some domain a weight")
        for d in domains:
            if len(self.train[d]) <= self.seq_len + 1:
                raise InputError(f"domain {d}", f"{len(self.train[d])} training tokens, fewer than one sequence "
                                 f"of {self.seq_len + 1}", "add documents to the domain or shorten seq_len")
        p = np.array([weights[d] for d in domains], dtype=float)
        self.domains, self.p = domains, p / p.sum()
        self.arrays = [self.train[d] for d in domains]
        for d in domains:
            self.tokens_read.setdefault(d, 0)

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
        self.last_domains = [self.domains[k] for k in which]
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]

    @property
    def epochs(self) -> dict[str, float]:
        """Passes over each domain's training tokens so far."""
        return {d: n / len(self.train[d]) for d, n in self.tokens_read.items()}


def validation_windows(val: np.ndarray, seq_len: int, max_windows: int) -> torch.Tensor:
    """Evenly spaced, non-overlapping windows: the same tokens for every proxy, so losses compare."""
    n = (len(val) - 1) // seq_len
    if n < 1:
        raise ValueError(f"validation split has {len(val)} tokens, fewer than one window of {seq_len + 1}")
    idx = np.linspace(0, n - 1, num=min(n, max_windows)).round().astype(int)
    rows = np.stack([np.asarray(val[i * seq_len:i * seq_len + seq_len + 1], dtype=np.int64) for i in idx])
    return torch.from_numpy(rows)
