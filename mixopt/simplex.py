"""The probability simplex: sampling mixtures around a token prior, under per-domain caps.

Sampling follows RegMix's generator (docs/methods.md §1a): a tempered token prior, a Dirichlet concentration drawn
per sample from log-spaced strengths (small strengths give near one-hot mixtures, large ones mixtures close to
the prior), rejection of weights above per-domain caps, a minimum weight, rounding and de-duplication.
Everything is vectorised: a million candidates is one NumPy call, not a Python loop.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class SamplerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    temperature: float = Field(default=0.5, gt=0, description="prior**temperature; <1 flattens the prior")
    min_strength: float = Field(default=0.1, gt=0)
    max_strength: float = Field(default=5.0, gt=0)
    n_strengths: int = Field(default=15, ge=1)
    min_weight: float = Field(default=2e-4, ge=0, description="weights below this are set to 0")
    round_to: float = Field(default=2e-4, ge=0, description="round weights to multiples of this (0: off)")


def normalise(W: np.ndarray) -> np.ndarray:
    W = np.clip(np.asarray(W, dtype=float), 0, None)
    return W / W.sum(axis=-1, keepdims=True)


def dirichlet(alpha: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Dirichlet draws that never come back as NaN: tiny concentrations can underflow every gamma to 0."""
    out = rng.dirichlet(np.maximum(np.asarray(alpha, dtype=float), 1e-12), size=n)
    bad = ~np.isfinite(out).all(axis=1) | (out.sum(axis=1) <= 0)
    if bad.any():  # fall back to a one-hot on the largest alpha·u: the limit of a vanishing concentration
        k = np.argmax(rng.random((int(bad.sum()), len(alpha))) * alpha, axis=1)
        out[bad] = np.eye(len(alpha))[k]
    return out


def sample_mixtures(prior: np.ndarray, n: int, rng: np.random.Generator,
                    settings: SamplerSettings | None = None, caps: np.ndarray | None = None,
                    max_tries: int = 100) -> np.ndarray:
    """`n` distinct mixtures from RegMix's generator; caps (per-domain maxima) are enforced by rejection."""
    s = settings or SamplerSettings()
    p = normalise(prior)
    pt = normalise(p ** s.temperature)
    strengths = np.logspace(np.log10(s.min_strength), np.log10(s.max_strength), s.n_strengths)
    kept: list[np.ndarray] = []
    have = 0
    for _ in range(max_tries):
        m = max(4 * (n - have), 64)
        conc = strengths[rng.integers(0, len(strengths), size=m)]
        gam = rng.gamma(np.maximum(pt[None, :] * conc[:, None], 1e-12))
        ok = gam.sum(axis=1) > 0
        W = gam[ok] / gam[ok].sum(axis=1, keepdims=True)
        if caps is not None:
            W = W[(W <= caps[None, :] + 1e-12).all(axis=1)]
        W = clean_mixtures(W, s)
        if len(W):
            kept.append(W)
            have = len(_dedup(np.concatenate(kept)))
        if have >= n:
            break
    if not kept:
        raise ValueError("no mixture satisfies the per-domain caps; relax max epochs or the target tokens")
    W = _dedup(np.concatenate(kept))
    if caps is not None:  # rounding can nudge a weight over its cap by < round_to
        W = W[(W <= caps[None, :] + s.round_to + 1e-9).all(axis=1)]
    if len(W) < n:
        raise ValueError(f"only {len(W)} distinct mixtures satisfy the caps; {n} were asked for")
    return W[rng.permutation(len(W))[:n]]


def clean_mixtures(W: np.ndarray, s: SamplerSettings) -> np.ndarray:
    """RegMix's tidying: weights under `min_weight` set to 0, rounding to `round_to`, rows renormalised."""
    W = np.where(W < s.min_weight, 0.0, W)
    W = W[W.sum(axis=1) > 0]
    W = W / W.sum(axis=1, keepdims=True)
    if s.round_to > 0:
        W = np.round(W / s.round_to) * s.round_to
        W = W[W.sum(axis=1) > 0]
        W = W / W.sum(axis=1, keepdims=True)
    return W


def _dedup(W: np.ndarray) -> np.ndarray:
    _, idx = np.unique(np.round(W, 8), axis=0, return_index=True)
    return W[np.sort(idx)]


def repetition_caps(token_counts: np.ndarray, target_tokens: float, max_epochs: float) -> np.ndarray:
    """Largest weight per domain such that a target run of `target_tokens` repeats it ≤ `max_epochs` times."""
    return np.minimum(1.0, max_epochs * np.asarray(token_counts, dtype=float) / float(target_tokens))


def kl_to_prior(W: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """KL(w ‖ prior) in nats for each row of W (0·log 0 = 0).

    The regulariser of every surrogate optimum: mixtures far from the prior are where a surrogate fitted on few
    small runs is least trustworthy and where seed noise is largest, so their predicted gains are discounted.
    A prior share of 0 is floored at 1e-12, which makes any weight there very expensive rather than infinite.
    """
    W = np.atleast_2d(np.asarray(W, dtype=float))
    q = np.maximum(np.asarray(prior, dtype=float), 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(W > 0, W * (np.log(np.maximum(W, 1e-300)) - np.log(q)[None, :]), 0.0)
    return terms.sum(axis=1)


def distance_to_prior(w: np.ndarray, prior: np.ndarray) -> dict[str, float]:
    """How far a recommendation moved from the prior: KL(w ‖ prior) and the L1 distance (0–2)."""
    w, q = np.asarray(w, dtype=float), np.asarray(prior, dtype=float)
    return {"kl": float(kl_to_prior(w, q)[0]), "l1": float(np.abs(w - q).sum())}
