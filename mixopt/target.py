"""From proxies to the real run: repetition limits, data-constrained effective tokens, MoE dense equivalents.

A recommended mixture is only valid for the run it is for. A domain of n_k tokens given weight w_k in a run of D
tokens is repeated w_k·D/n_k times; beyond a few epochs repeated tokens are worth less than fresh ones
(Muennighoff et al., docs/methods.md §8c), and beyond the cap they are not allowed at all. `apply_target` checks
every optimizer's recommendation against the target the same way, re-balances it when a cap is exceeded, and
reports the effective tokens; optimizers stay unaware of targets beyond what they already use.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from mixopt.errors import InputError
from mixopt.recommendation import Recommendation
from mixopt.simplex import repetition_caps
from mixopt.spec import LeverageSpec, TargetSpec

# ----------------------------------------------------------------------------------- data-constrained scaling
# Fitted constants of the data-constrained scaling law (datablations README; docs/methods.md §8c).
DC_A = math.exp(6.255414)
DC_B = math.exp(7.3049974)
DC_E = math.exp(0.6254804)
DC_ALPHA = DC_BETA = 0.3526596
R_D_STAR = 15.387756  # repeated data: half-life of a repeated token's value, in epochs
R_N_STAR = 5.309743  # excess parameters: the same for parameters beyond the compute-optimal size
# Compute-optimal ratio of the fitted law: N_opt = G·(C/6)^(β/(α+β)).
DC_G = ((DC_ALPHA * DC_A) / (DC_BETA * DC_B)) ** (1 / (DC_ALPHA + DC_BETA))


def optimal_params(unique_tokens: float) -> float:
    """Compute-optimal N for a budget of D tokens under the fitted law (datablations' D_to_N)."""
    return (unique_tokens * DC_G) ** (DC_BETA / DC_ALPHA) * DC_G


def effective_data(unique: float, total: float, r_star: float = R_D_STAR) -> float:
    """D' = U + U·R*·(1 − e^(−R/R*)), R = max(D/U − 1, 0): repeated tokens decay in value, fresh ones do not."""
    if unique <= 0:
        return 0.0
    repeats = max(total / unique - 1.0, 0.0)
    return unique + unique * r_star * (1.0 - math.exp(-repeats / r_star))


def scaling_law(params: float, tokens: float, unique_tokens: float) -> float:
    """Loss of N parameters trained on D tokens drawn from U unique tokens (Muennighoff et al.'s fitted law).

    Argument order N, D, U_D: the order that reproduces the paper's check values (docs/methods.md §8c).
    """
    if not 0 < unique_tokens <= tokens:
        raise ValueError(f"unique tokens ({unique_tokens:.3g}) must be positive and at most tokens ({tokens:.3g})")
    u_n = min(params, optimal_params(unique_tokens))
    n_eff = effective_data(u_n, params, R_N_STAR)
    d_eff = effective_data(unique_tokens, tokens, R_D_STAR)
    return DC_E + DC_A / n_eff ** DC_ALPHA + DC_B / d_eff ** DC_BETA


def epochs(weights: np.ndarray, token_counts: np.ndarray, target_tokens: float) -> np.ndarray:
    """Passes over each domain's data in the target run: w_k·D/n_k (inf for an empty domain with weight)."""
    w = np.asarray(weights, dtype=float)
    n = np.asarray(token_counts, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.where(n > 0, w * target_tokens / np.where(n > 0, n, 1.0), np.where(w > 0, np.inf, 0.0))
    return e


def effective_tokens(weights: np.ndarray, token_counts: np.ndarray, target_tokens: float) -> np.ndarray:
    """Per-domain D'_k: the tokens seen while fresh, then repeated tokens at a decaying value (§8c)."""
    w = np.asarray(weights, dtype=float)
    n = np.asarray(token_counts, dtype=float)
    seen = w * target_tokens
    return np.array([effective_data(nk, sk) if sk > nk else sk for nk, sk in zip(n, seen, strict=True)])


# ----------------------------------------------------------------------------------- caps


def rebalance(weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Enforce per-domain caps by water-filling: clip what is over, hand the excess to the uncapped domains.

    The excess goes to the domains still below their cap in proportion to their weights, so the optimizer's
    relative preferences among them survive; a domain it gave no weight gets some only when nothing else can
    take it (then in proportion to the room left). A mixture already within its caps comes back unchanged.
    """
    w = np.clip(np.asarray(weights, dtype=float), 0, None)
    c = np.clip(np.asarray(caps, dtype=float), 0, 1)
    if w.shape != c.shape or w.ndim != 1 or w.sum() <= 0:
        raise ValueError("weights and caps must be 1-D of the same length, with positive total weight")
    if c.sum() < 1 - 1e-12:
        raise InputError("target", f"the per-domain caps sum to {c.sum():.4g} < 1: no mixture can respect them",
                         "raise max_epochs, lower the target tokens or add data")
    if abs(w.sum() - 1.0) > 1e-12:
        w = w / w.sum()
    if (w <= c + 1e-12).all():
        return w
    fixed = np.zeros(len(w), dtype=bool)
    for _ in range(len(w)):
        over = ~fixed & (w > c)
        if not over.any():
            break
        fixed |= over
        w[fixed] = c[fixed]
        excess = 1.0 - w.sum()
        free = ~fixed
        share = w[free]
        if share.sum() <= 0:  # only domains the optimizer left at 0 can take it: by their room
            share = c[free] - w[free]
        w[free] += excess * (share / share.sum())
    w = np.minimum(w, c)
    gap, room = 1.0 - w.sum(), c - w  # floating-point dust; put it where there is room
    if gap > 0 and room.sum() > 0:
        w += gap * (room / room.sum())
    return w


def domain_caps(domains: list[str], token_counts: Mapping[str, float], target: TargetSpec) -> np.ndarray:
    unknown = sorted(set(target.max_epochs_per_domain) - set(domains))
    if unknown:
        raise InputError("target.max_epochs_per_domain", f"unknown domain(s) {unknown}",
                         f"use the run table's domains: {', '.join(domains)}")
    assert target.tokens is not None
    counts = np.array([float(token_counts[d]) for d in domains])
    max_epochs = np.array([target.domain_max_epochs(d) for d in domains])
    return repetition_caps(counts, target.tokens, max_epochs)


# ----------------------------------------------------------------------------------- MoE


def efficiency_leverage(activation_ratio: float, granularity: float, compute: float,
                        law: LeverageSpec | None = None) -> float:
    """EL = C_dense / C_MoE at equal loss, from the law of docs/methods.md §8d with configurable constants."""
    law = law or LeverageSpec()
    if not 0 < activation_ratio <= 1 or granularity <= 0 or compute <= 0:
        raise ValueError("activation ratio must be in (0, 1], granularity and compute positive")
    r = 1.0 / activation_ratio
    r_hat = 1.0 if r <= 1 else 1.0 + 1.0 / (1.0 / (r - 1.0) + 1.0 / (law.r_max - 1.0))
    lg = math.log(granularity)
    exponent = law.a + law.d * math.log(compute) + law.gamma * lg * lg + law.beta * lg
    return r_hat ** exponent


def dense_equivalent(target: TargetSpec) -> dict[str, Any]:
    """The dense size an MoE target stands for, and how it was derived (which transfer rule, which EL)."""
    if target.kind == "dense":
        return {"params": target.params, "rule": "dense target: its own size"}
    assert target.active_params is not None and target.activation_ratio is not None
    law = target.leverage
    if target.tokens is None:
        raise InputError("target.tokens", "a moe target needs its training tokens for the dense equivalent",
                         "add tokens: (the training tokens D of the target run)")
    compute = 6.0 * target.active_params * target.tokens
    g = target.granularity if target.granularity is not None else law.g_opt
    el = efficiency_leverage(target.activation_ratio, g, compute, law)
    c_eq = el * compute
    if law.transfer == "same_tokens":
        n_eq = el * target.active_params
        rule = "same_tokens: N_eq = EL·N_active (a dense model on the same D tokens)"
    else:
        n_eq = compute_optimal_params(c_eq)
        rule = "chinchilla: N_eq from the compute-optimal split of C_eq = EL·6·N_active·D (docs/methods.md §8d)"
    return {"params": n_eq, "rule": rule, "efficiency_leverage": el, "compute": compute, "compute_eq": c_eq,
            "activation_ratio": target.activation_ratio, "granularity": g,
            "granularity_assumed": target.granularity is None}


def compute_optimal_params(compute: float) -> float:
    """N_opt for a compute budget C = 6·N·D under the fitted law (α = β, so N_opt = G·√(C/6))."""
    return DC_G * (compute / 6.0) ** (DC_BETA / (DC_ALPHA + DC_BETA))


# ----------------------------------------------------------------------------------- the one entry point


def apply_target(rec: Recommendation, token_counts: Mapping[str, float] | None,
                 target: TargetSpec | None) -> Recommendation:
    """Make a recommendation valid for its target run: caps, effective tokens, MoE dense equivalent.

    Returns a new Recommendation; the optimizer's own mixture is kept in `details["original_weights"]` when it
    had to be re-balanced, so nobody mistakes the re-balanced mixture for what the predictor scored.
    """
    if target is None:
        return rec
    rec = dataclasses.replace(rec, weights=dict(rec.weights), notes=list(rec.notes), details=dict(rec.details))
    info: dict[str, Any] = {"kind": target.kind, "params": target.params, "tokens": target.tokens,
                            "seq_len": target.seq_len, "max_epochs": target.max_epochs}
    if target.name:
        info["name"] = target.name
    if target.kind == "moe":
        eq = dense_equivalent(target)
        info["dense_equivalent"] = eq
        rec.notes.append(f"moe target: dense-equivalent size {eq['params']:.3g} parameters (efficiency leverage "
                         f"{eq['efficiency_leverage']:.2f}, activation ratio {eq['activation_ratio']:.3f}, "
                         f"granularity {eq['granularity']:g}{' assumed' if eq['granularity_assumed'] else ''}); "
                         f"transfer rule {eq['rule']}")
    rec.details["target"] = info
    if target.tokens is None or not token_counts:
        rec.notes.append("repetition not checked: "
                         + ("the target has no tokens" if target.tokens is None else "domain token counts unknown"))
        return rec
    domains = list(rec.weights)
    missing = [d for d in domains if d not in token_counts]
    if missing:
        raise InputError("token counts", f"missing for domain(s) {missing}", "give a count for every domain")
    counts = np.array([float(token_counts[d]) for d in domains])
    caps = domain_caps(domains, token_counts, target)
    w = np.array([rec.weights[d] for d in domains])
    w = w / w.sum()
    ep = epochs(w, counts, target.tokens)
    over = [d for d, wk, ck in zip(domains, w, caps, strict=True) if wk > ck + 1e-9]
    if over:
        if caps.sum() < 1 - 1e-12:
            # The corpus cannot supply D tokens within the caps, whatever the mixture. The least bad mixture
            # repeats every domain by the same multiple of its cap (w ∝ cap): it minimises the worst overrun.
            new, label = caps / caps.sum(), "overrun-balanced"
            rec.details["caps_infeasible"] = True
            supply = float((counts * np.array([target.domain_max_epochs(d) for d in domains])).sum())
            rec.notes.append(
                f"warning: the corpus holds {counts.sum():.3g} tokens, at most {supply:.3g} within the epoch caps, "
                f"but the target trains on {target.tokens:.3g}: no mixture respects the caps. Every domain is set "
                f"to overrun its cap by the same factor ({1 / caps.sum():.3g}×); train on fewer tokens, raise "
                "max_epochs or add data")
        else:
            new, label = rebalance(w, caps), "re-balanced"
            rec.notes.append("warning: " + ", ".join(
                f"{d} would repeat {ep[domains.index(d)]:.2f}× (cap {target.domain_max_epochs(d):g})" for d in over)
                + " in the target run; re-balanced by moving the excess to the other domains in proportion to "
                "their weights")
        rec.details["original_weights"] = dict(zip(domains, map(float, w), strict=True))
        rec.notes.append("original mixture: " + _fmt_mix(domains, w) + f" → {label}: " + _fmt_mix(domains, new))
        if rec.predicted is not None:
            rec.notes.append("the predicted objective is the optimizer's, for the original mixture")
        w = new
        ep = epochs(w, counts, target.tokens)
    rec.weights = dict(zip(domains, map(float, w), strict=True))
    eff = effective_tokens(w, counts, target.tokens)
    ratio = float(eff.sum() / target.tokens)
    rec.details["rebalanced"] = bool(over)
    rec.details["repetition"] = {
        d: {"tokens": float(n), "epochs": float(e), "max_epochs": target.domain_max_epochs(d), "cap": float(c),
            "effective_tokens": float(x)}
        for d, n, e, c, x in zip(domains, counts, ep, caps, eff, strict=True)}
    rec.details["effective_tokens"] = float(eff.sum())
    rec.details["data_efficiency"] = ratio
    rec.notes.append("epochs per domain in the target run: " + ", ".join(
        f"{d} {e:.2f}" for d, e in zip(domains, ep, strict=True)))
    rec.notes.append(f"effective tokens {eff.sum():.3g} of {target.tokens:.3g} (data efficiency {ratio:.3f})")
    n_law = info["dense_equivalent"]["params"] if target.kind == "moe" else target.params
    unique = min(float(np.minimum(counts, w * target.tokens).sum()), float(target.tokens))
    if n_law is not None and unique > 0:
        info["data_constrained_loss"] = scaling_law(float(n_law), float(target.tokens), unique)
        info["unique_tokens"] = unique
    return rec


def _fmt_mix(domains: list[str], w: np.ndarray) -> str:
    return "{" + ", ".join(f"{d}: {x:.4f}" for d, x in zip(domains, w, strict=True)) + "}"


__all__ = ["apply_target", "compute_optimal_params", "dense_equivalent", "domain_caps", "effective_data",
           "effective_tokens", "efficiency_leverage", "epochs", "optimal_params", "rebalance", "scaling_law"]
