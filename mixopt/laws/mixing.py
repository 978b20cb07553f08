"""The data mixing law (Ye et al., arXiv 2403.16952; METHODS.md §7): L_i(r) = c_i + k_i·exp(Σ_j t_ij r_j).

One law per validation domain i; the objective is their aggregate Σ_i s_i L_i with known validation shares s_i
(or the mean).

Fitting uses variable projection: for fixed t_i the law is linear in (c_i, k_i), whose least-squares values
(kept non-negative) have a closed form, so only t_i is optimised. Every validation domain, every start and
every cross-validation fold is one row of a batch that a single L-BFGS run in PyTorch optimises together (the
problems are independent, so their sum has a block-diagonal Hessian). The paper fits all parameters jointly
from thousands of random starts; this reaches the same optima far faster and deterministically
(tests/test_laws.py recovers planted parameters; benchmarks/laws_mixinglaws.py reproduces the paper's
leave-one-out errors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class MixingLaw:
    c: np.ndarray  # (m,) per validation domain
    k: np.ndarray  # (m,)
    t: np.ndarray  # (m, K)
    names: list[str]

    def predict(self, R: np.ndarray) -> np.ndarray:
        """Losses (n, m) of each validation domain for mixtures R (n, K)."""
        R = np.atleast_2d(np.asarray(R, dtype=float))
        return self.c[None, :] + self.k[None, :] * np.exp(np.clip(R @ self.t.T, -50, 50))

    def aggregate(self, R: np.ndarray, shares: np.ndarray | None = None) -> np.ndarray:
        L = self.predict(R)
        s = np.full(L.shape[1], 1 / L.shape[1]) if shares is None else np.asarray(shares, dtype=float)
        return L @ s


def _projected(t: torch.Tensor, R: torch.Tensor, Y: torch.Tensor, M: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each problem b: basis exp(R t_b), the best c_b, k_b ≥ 0 on its rows M_b, and its residual sum."""
    B = torch.exp(torch.clamp(t @ R.T, -50, 50))  # (P, n)
    w = M / M.sum(dim=1, keepdim=True)
    mb, my = (w * B).sum(1), (w * Y).sum(1)
    var = (w * (B - mb[:, None]) ** 2).sum(1)
    cov = (w * (B - mb[:, None]) * (Y - my[:, None])).sum(1)
    k = torch.clamp(cov / var.clamp_min(1e-18), min=0.0)
    c = my - k * mb
    # c < 0: refit through the origin, c = 0, k = <B, Y>/<B, B> (still the constrained optimum)
    k0 = (w * B * Y).sum(1) / (w * B * B).sum(1).clamp_min(1e-18)
    neg = c < 0
    k = torch.where(neg, k0.clamp_min(0.0), k)
    c = torch.where(neg, torch.zeros_like(c), c)
    rss = (M * (Y - c[:, None] - k[:, None] * B) ** 2).sum(1)
    return c, k, rss


def fit_mixing_laws(R: np.ndarray, L: np.ndarray, masks: np.ndarray | None = None, iters: int = 300
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit many independent laws at once: column i of L on the rows `masks[f]` selects, for every fold f.

    Returns c (F, m), k (F, m), t (F, m, K).
    """
    R = np.asarray(R, dtype=float)
    L = np.asarray(L, dtype=float)
    n, K = R.shape
    m = L.shape[1]
    masks = np.ones((1, n), dtype=bool) if masks is None else np.asarray(masks, dtype=bool)
    F = len(masks)
    # Starts: no effect, every domain a little, and each domain alone lowering the loss (t_jj ≪ 0).
    starts = np.stack([np.zeros(K), np.full(K, -1.0)] + [-4.0 * np.eye(K)[j] for j in range(K)])
    S = len(starts)
    # problem index p = ((f * m) + i) * S + s
    Rt = torch.as_tensor(R, dtype=torch.float64)
    Y = torch.as_tensor(np.repeat(np.tile(L.T, (F, 1)), S, axis=0), dtype=torch.float64)
    Mk = torch.as_tensor(np.repeat(np.repeat(masks, m, axis=0), S, axis=0), dtype=torch.float64)
    t = torch.as_tensor(np.tile(starts, (F * m, 1)), dtype=torch.float64).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([t], lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _projected(t, Rt, Y, Mk)[2].sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        c, k, rss = _projected(t, Rt, Y, Mk)
    best = rss.reshape(F * m, S).argmin(dim=1)
    idx = torch.arange(F * m) * S + best
    return (c[idx].reshape(F, m).numpy(), k[idx].reshape(F, m).numpy(),
            t.detach()[idx].reshape(F, m, K).numpy())


def fit_mixing_law(R: np.ndarray, L: np.ndarray, names: list[str] | None = None) -> MixingLaw:
    """Fit one law per column of L (n mixtures × m validation domains) from mixtures R (n × K)."""
    R = np.asarray(R, dtype=float)
    L = np.asarray(L, dtype=float)
    if L.ndim == 1:
        L = L[:, None]
    if len(R) != len(L):
        raise ValueError(f"{len(R)} mixtures but {len(L)} rows of losses")
    if len(R) < R.shape[1] + 2:
        raise ValueError(f"a mixing law over {R.shape[1]} domains needs at least {R.shape[1] + 2} runs, "
                         f"got {len(R)}")
    c, k, t = fit_mixing_laws(R, L)
    return MixingLaw(c=c[0], k=k[0], t=t[0], names=names or [f"loss_{i}" for i in range(L.shape[1])])
