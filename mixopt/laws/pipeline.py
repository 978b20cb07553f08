"""The nested pipeline of the data mixing laws (docs/methods.md §7b): step law → size law → mixing law.

Input: proxy runs, one row per checkpoint — mixture r, non-embedding parameters N, training tokens D, and the
validation losses. Output: every mixture's predicted losses at the target (N*, D*), from which a mixing law is
fitted and optimised.

1. Step level. A checkpoint measured at D* itself is used as it is: runs of one mixture at different sizes see
   the same data in the same order, and a checkpoint's deviation from its run's step law is shared across
   sizes (correlation 0.57–0.86 on the released runs; 5Mix mixture 23 at step 20000 is a visible bump in the
   proxies and in the 1B run), so the target shares it and smoothing it away discards signal
   (benchmarks/laws_mixinglaws.py). Where D* was not measured, each run's step law — L_i(D) = c_i + k_i·D^−β
   with β tied across the validation domains of the run — is fitted on its checkpoints and evaluated at D*.
2. Size level. Per validation domain, L(N) = c_m + k_m·N^−α with α shared across mixtures m, fitted with a Huber
   loss (δ = 0.02: a few times the checkpoint-to-checkpoint noise, so one glitchy checkpoint does not bend the
   curve), evaluated at N*.
3. Mixing level. `fit_mixing_law` on the predicted losses (the caller's step: the optimiser needs the law, the
   benchmark needs the per-mixture predictions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mixopt.laws.scaling import PowerLaw, fit_power_law

MATCH_TOL = 1e-3  # two weight vectors are the same mixture when no weight differs by more than this


@dataclass
class NestedPrediction:
    mixtures: np.ndarray  # (M, K)
    losses: np.ndarray  # (M, m) predicted at the target
    sizes: np.ndarray  # the proxy sizes used, ascending
    at_sizes: np.ndarray  # (M, len(sizes), m) the step-level losses at D* (NaN: not run at that size)
    size_laws: list[PowerLaw] = field(default_factory=list)  # one per validation domain (empty: one size only)
    step_laws: int = 0  # how many runs needed a step law (D* not measured)
    notes: list[str] = field(default_factory=list)


def mixture_keys(W: np.ndarray, tol: float = MATCH_TOL) -> tuple[np.ndarray, np.ndarray]:
    """Distinct mixtures (first occurrence order) and, per row, the index of its mixture."""
    W = np.asarray(W, dtype=float)
    keys: list[np.ndarray] = []
    idx = np.empty(len(W), dtype=int)
    for n, w in enumerate(W):
        for j, k in enumerate(keys):
            if np.abs(k - w).max() <= tol:
                idx[n] = j
                break
        else:
            keys.append(w)
            idx[n] = len(keys) - 1
    return (np.array(keys) if keys else np.zeros((0, W.shape[1] if W.ndim == 2 else 0))), idx


def _at_tokens(tokens: np.ndarray, L: np.ndarray, target: float, min_checkpoints: int, delta: float | None,
               smooth: bool, window: tuple[float, float] | None) -> tuple[np.ndarray | None, bool]:
    """One run's losses at `target` tokens: the measured checkpoint, else its step law. (None: cannot.)"""
    same = np.isclose(tokens, target, rtol=1e-6)
    if same.any() and not smooth:
        return L[same].mean(axis=0), False
    if window is not None:
        inside = (tokens >= window[0]) & (tokens <= window[1])
        tokens, L = tokens[inside], L[inside]
    if len(np.unique(tokens)) < min_checkpoints:
        return None, False
    order = np.argsort(tokens)
    law = fit_power_law(tokens[order], L[order].T, delta=delta)
    return law.predict(target), True


def nested_predict(W: np.ndarray, params: np.ndarray, tokens: np.ndarray, L: np.ndarray, target_params: float | None,
                   target_tokens: float | None, size_delta: float | None = 0.02, step_delta: float | None = None,
                   min_checkpoints: int = 3, min_sizes: int = 2, smooth_steps: bool = False,
                   step_window: tuple[float, float] | None = None) -> NestedPrediction:
    """Predict every mixture's validation losses at (target_params, target_tokens) from proxy checkpoints.

    `target_tokens=None`: each run's last checkpoint is used (runs of one size should then share a budget);
    `target_params=None`: no size law (the proxies must then be of one size). `smooth_steps`: use the step law
    even where the target tokens were measured (the paper's pipeline; see the module notes);
    `step_window`: the token range the step laws are fitted on (the paper: steps 10k–30k).
    """
    W = np.asarray(W, dtype=float)
    L = np.asarray(L, dtype=float)
    params = np.asarray(params, dtype=float)
    tokens = np.asarray(tokens, dtype=float)
    if L.ndim == 1:
        L = L[:, None]
    if not (len(W) == len(params) == len(tokens) == len(L)):
        raise ValueError("mixtures, parameters, tokens and losses must have one row per checkpoint")
    keys, idx = mixture_keys(W)
    sizes = np.unique(params)
    if target_params is None and len(sizes) > 1:
        raise ValueError(f"proxies of {len(sizes)} sizes but no target size: give the target's parameters")
    at = np.full((len(keys), len(sizes), L.shape[1]), np.nan)
    out = NestedPrediction(mixtures=keys, losses=np.zeros((0, L.shape[1])), sizes=sizes, at_sizes=at)
    skipped = 0
    for j in range(len(keys)):
        for s, n in enumerate(sizes):
            rows = (idx == j) & (params == n)
            if not rows.any():
                continue
            goal = target_tokens if target_tokens is not None else tokens[rows].max()
            v, used = _at_tokens(tokens[rows], L[rows], goal, min_checkpoints, step_delta, smooth_steps,
                                 step_window)
            if v is None:
                skipped += 1
                continue
            at[j, s] = v
            out.step_laws += int(used)
    if skipped:
        out.notes.append(f"{skipped} run(s) neither measured at the target tokens nor with {min_checkpoints} "
                         "checkpoints for a step law: left out")
    if out.step_laws:
        out.notes.append(f"{out.step_laws} run(s) extrapolated to the target tokens with a step law")
    if len(sizes) == 1:
        keep = np.isfinite(at[:, 0, 0])
        if target_params is not None and not np.isclose(sizes[0], target_params, rtol=1e-6):
            out.notes.append(f"proxies of one size ({sizes[0]:.3g} parameters) only: no size law; losses are "
                             f"those of the proxies, not of {target_params:.3g} parameters")
        out.mixtures, out.losses = keys[keep], at[keep, 0]
        return out
    enough = np.isfinite(at[:, :, 0]).sum(axis=1) >= min_sizes
    if enough.sum() < 1:
        raise ValueError(f"no mixture was run at {min_sizes} or more sizes: a size law cannot be fitted")
    if (~enough).any():
        out.notes.append(f"{int((~enough).sum())} mixture(s) run at fewer than {min_sizes} sizes: left out")
    out.size_laws = [fit_power_law(sizes, at[enough, :, i], delta=size_delta) for i in range(L.shape[1])]
    out.mixtures = keys[enough]
    out.losses = np.stack([law.predict(float(target_params)) for law in out.size_laws], axis=1)
    return out
