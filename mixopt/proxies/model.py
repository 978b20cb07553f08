"""Decoder-only proxy LMs — dense or mixture-of-experts — held as a stack of K independent models.

Every parameter has a leading dimension K: slice k is proxy k, with its own initialisation (from its own seed),
its own data and its own optimizer state. One forward pass runs all K with batched matmuls, which is what makes
many tiny proxies cheap (on a GPU one 1M-parameter model uses a sliver of the chip; on a CPU the per-step Python
overhead is shared). A single proxy is simply K = 1, so there is one code path and "batched equals sequential"
holds by construction up to floating-point summation order.

The architecture is Llama-style (RMSNorm, rotary positions, SwiGLU, causal scaled-dot-product attention, tied
embeddings) so a proxy belongs to the family of the dense targets it stands in for. The MoE variant replaces
the SwiGLU block by a top-k routed set of SwiGLU experts, optionally with always-on shared experts
(DeepSeekMoE style) and a Switch-style load-balancing loss; see `MoE` for capacity and dropping.

Hand-rolled rather than `torch.func.vmap` over an `nn.Module`: explicit stacked weights keep the MoE dispatch
one grouped matmul across all K proxies and all experts, which vmap cannot express without a per-proxy loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mixopt.spec import ProxySpec


@dataclass(frozen=True)
class ModelSize:
    """Parameter counts and training FLOPs of one proxy (not of the K-stack)."""

    total: int  # every parameter, embeddings included
    active: int  # parameters used per token (MoE: shared + top-k experts), embeddings included
    embedding: int
    flops_per_token: float  # training (forward + backward) FLOPs per token

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding

    @property
    def active_non_embedding(self) -> int:
        return self.active - self.embedding


def model_size(spec: ProxySpec, vocab_size: int) -> ModelSize:
    """Counts from the spec alone, so the zoo can be listed without building models.

    FLOPs follow the usual accounting: 6 per active weight per token (forward 2, backward 4) for every matmul
    weight including the tied output projection, plus 12·layers·context·d_model for attention scores and their
    application (full square, as PaLM counts it — the causal half is not subtracted).
    """
    d, L, V = spec.d_model, spec.n_layer, vocab_size
    attn = 4 * d * d
    norms = 2 * d
    emb = V * d
    if spec.kind == "moe":
        h = spec.expert_hidden
        expert = 3 * d * h
        router = d * spec.n_experts
        per_layer_total = attn + norms + router + (spec.n_experts + spec.n_shared_experts) * expert
        per_layer_active = attn + norms + router + (spec.top_k + spec.n_shared_experts) * expert
    else:
        per_layer_total = per_layer_active = attn + norms + 3 * d * spec.ffn_hidden
    total = emb + L * per_layer_total + d
    assert total == spec.param_count(V)  # the spec's own count (tokens_per_param budgets) must agree
    active = emb + L * per_layer_active + d
    matmul_weights = active - L * norms - d  # norms are elementwise; the embedding counts once, as the head
    flops = 6.0 * matmul_weights + 12.0 * L * spec.seq_len * d
    return ModelSize(total=total, active=active, embedding=emb, flops_per_token=flops)


def training_memory_bytes(spec: ProxySpec, vocab_size: int) -> float:
    """A rough upper estimate of what one task training `proxies_per_task` proxies of `spec` holds in memory.

    Per proxy: weights, gradients and AdamW's two moments in float32 (16 bytes per parameter), plus the
    activations kept for the backward pass — about 34·d_model + 5·heads·context floats per token and layer (the
    usual transformer accounting) and the logits with their softmax and gradient (3·vocab floats per token).
    Used to refuse a proxy that cannot fit before anything trains, not to size tasks."""
    size = model_size(spec, vocab_size)
    tokens = spec.batch_size * spec.seq_len
    hidden = spec.d_model if spec.kind != "moe" else spec.d_model * max(1, spec.top_k)
    act = tokens * (spec.n_layer * (34 * hidden + 5 * spec.n_head * spec.seq_len) + 3 * vocab_size) * 4
    return float(max(1, spec.proxies_per_task) * (16 * size.total + act))


# ------------------------------------------------------------------------------------------------ pieces


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x: [K, ..., D], weight: [K, D]."""
    shape = (weight.shape[0],) + (1,) * (x.dim() - 2) + (weight.shape[1],)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.view(shape)


def rotary_tables(seq_len: int, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Rotation of each (even, odd) pair of a head as unit complex numbers [seq_len, head_dim/2]."""
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    ang = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv)
    return torch.polar(torch.ones_like(ang), ang)


def apply_rotary(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotary positions as one complex multiply — measured 2.4× faster here than the rotate-half form's
    cat/neg/mul/add chain. Complex tensors have no bf16 type, hence the float32 round trip."""
    T = x.shape[-2]
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs[:T]).flatten(-2).type_as(x)


ALL = slice(None)


def _param(K: int, *shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(K, *shape))


class MoE(nn.Module):
    """Top-k routed SwiGLU experts for K stacked proxies, with optional shared experts.

    Routing: softmax over experts, the top-k experts per token, their probabilities renormalised to sum to one
    (Mixtral-style). Dispatch groups every (proxy, expert) pair's tokens into one padded buffer
    [K·E, C, D] and runs all experts of all proxies as two batched matmuls.

    Capacity: with `capacity_factor: null` (the default) the layer is dropless — C is the largest load of any
    expert in the batch, so no token is ever dropped and the padding costs (max load ÷ mean load − 1) of the
    expert FLOPs; the balancing loss keeps that ratio small. With a capacity factor f, C = ceil(f · tokens ·
    top_k / E) and a token's assignment beyond an expert's capacity is dropped (in token order), the token then
    passing through the residual (and shared experts) only — GShard/Switch behaviour.

    Balancing: the Switch-Transformer auxiliary loss E · Σ_e f_e · P_e per proxy (f_e the fraction of routed
    assignments to e, P_e the mean router probability of e), which is 1 when perfectly balanced.
    """

    def __init__(self, K: int, d: int, hidden: int, n_experts: int, top_k: int, n_shared: int,
                 capacity_factor: float | None) -> None:
        super().__init__()
        self.K, self.E, self.top_k, self.hidden = K, n_experts, top_k, hidden
        self.capacity_factor = capacity_factor
        self.router = _param(K, d, n_experts)
        self.w_in = _param(K, n_experts, d, 2 * hidden)
        self.w_out = _param(K, n_experts, hidden, d)
        self.n_shared = n_shared
        if n_shared:
            self.shared_in = _param(K, d, 2 * hidden * n_shared)
            self.shared_out = _param(K, hidden * n_shared, d)
        self.last_load: torch.Tensor | None = None  # [K, E] share of assignments per expert, last training batch
        self.last_dropped: torch.Tensor | None = None  # [K] fraction of assignments dropped
        self.load_sum: torch.Tensor | None = None  # [K, E] summed over training batches
        self.load_batches: torch.Tensor | None = None  # [K] training batches seen per proxy

    def mean_load(self) -> torch.Tensor | None:
        """Share of routed assignments per expert over all training batches so far [K, E]."""
        return None if self.load_sum is None else self.load_sum / self.load_batches.clamp(min=1).unsqueeze(1)

    def forward(self, x: torch.Tensor, ks: slice = ALL) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [K', N, D] for the proxies `ks` of the stack."""
        K, N, D = x.shape
        E, k = self.E, self.top_k
        probs = torch.softmax(torch.bmm(x, self.router[ks]), dim=-1)  # [K, N, E]
        gate, expert = probs.topk(k, dim=-1)  # [K, N, k]
        gate = gate / gate.sum(-1, keepdim=True)
        # Group assignments by (proxy, expert); position of each within its group, in token order.
        group = (torch.arange(K, device=x.device).view(K, 1) * E + expert.reshape(K, N * k)).reshape(-1)
        sizes = torch.bincount(group, minlength=K * E)
        frac = sizes.view(K, E).to(probs.dtype) / (N * k)
        aux = E * (frac * probs.mean(1)).sum(-1)  # [K]
        order = torch.argsort(group, stable=True)
        g_sorted = group[order]
        starts = torch.cumsum(sizes, 0) - sizes
        pos = torch.arange(group.numel(), device=x.device) - starts[g_sorted]
        if self.capacity_factor is None:
            cap = int(sizes.max())
        else:
            cap = max(1, math.ceil(self.capacity_factor * N * k / E))
        keep = pos < cap
        # Assignments are laid out [K, N, k] (proxy-major), so assignment i belongs to flat token i // k.
        token = (order // k)[keep]
        slot = g_sorted[keep] * cap + pos[keep]  # row of the padded [K·E·C] buffer
        # index_select / index_copy / index_add rather than advanced indexing: their backward passes are the
        # same three ops, where advanced-index assignment falls back to a sort-based scatter (measured slower).
        x_flat = x.reshape(K * N, D)
        buf = x.new_zeros(K * E * cap, D).index_copy(0, slot, x_flat.index_select(0, token))
        h = torch.bmm(buf.view(K * E, cap, D), self.w_in[ks].reshape(K * E, D, 2 * self.hidden))
        a, b = h.chunk(2, dim=-1)
        out = torch.bmm(F.silu(a) * b, self.w_out[ks].reshape(K * E, self.hidden, D))  # [K·E, C, D]
        w = gate.reshape(-1)[order][keep].unsqueeze(-1).to(out.dtype)
        y = x_flat.new_zeros(K * N, D).index_add(0, token, (out.reshape(-1, D).index_select(0, slot) * w).to(x.dtype))
        y = y.view(K, N, D)
        if self.n_shared:
            hs = torch.bmm(x, self.shared_in[ks])
            a, b = hs.chunk(2, dim=-1)
            y = y + torch.bmm(F.silu(a) * b, self.shared_out[ks])
        if self.training:  # diagnostics describe the training stream, not the last evaluation batch
            self.last_load = frac.detach()
            if self.load_sum is None:
                self.load_sum = frac.new_zeros(self.K, E)
                self.load_batches = frac.new_zeros(self.K)
            self.load_sum[ks] += self.last_load
            self.load_batches[ks] += 1
            self.last_dropped = (1 - keep.view(K, -1).float().mean(-1)).detach() if self.capacity_factor else None
        return y, aux


class Block(nn.Module):
    def __init__(self, spec: ProxySpec, K: int) -> None:
        super().__init__()
        d = spec.d_model
        self.n_head = spec.n_head
        self.norm1 = nn.Parameter(torch.ones(K, d))
        self.norm2 = nn.Parameter(torch.ones(K, d))
        self.qkv = _param(K, d, 3 * d)
        self.attn_out = _param(K, d, d)
        self.moe: MoE | None = None
        if spec.kind == "moe":
            self.moe = MoE(K, d, spec.expert_hidden, spec.n_experts, spec.top_k, spec.n_shared_experts,
                           spec.capacity_factor)
        else:
            self.mlp_in = _param(K, d, 2 * spec.ffn_hidden)
            self.mlp_out = _param(K, spec.ffn_hidden, d)

    def forward(self, x: torch.Tensor, freqs: torch.Tensor, ks: slice = ALL) -> tuple[torch.Tensor, torch.Tensor]:
        K, B, T, D = x.shape
        H = self.n_head
        h = rms_norm(x, self.norm1[ks]).view(K, B * T, D)
        q, k, v = torch.bmm(h, self.qkv[ks]).view(K * B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, freqs), apply_rotary(k, freqs)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [K·B, H, T, hd]
        att = att.transpose(1, 2).reshape(K, B * T, D)
        x = x + torch.bmm(att, self.attn_out[ks]).view(K, B, T, D)
        h = rms_norm(x, self.norm2[ks]).view(K, B * T, D)
        if self.moe is not None:
            y, aux = self.moe(h, ks)
        else:
            a, b = torch.bmm(h, self.mlp_in[ks]).chunk(2, dim=-1)
            y, aux = torch.bmm(F.silu(a) * b, self.mlp_out[ks]), x.new_zeros(K)
        return x + y.view(K, B, T, D), aux


class ProxyLM(nn.Module):
    """K independent proxies of one architecture. `seeds[k]` initialises proxy k exactly as a lone model."""

    def __init__(self, spec: ProxySpec, vocab_size: int, seeds: list[int] | None = None) -> None:
        super().__init__()
        seeds = list(seeds) if seeds is not None else [0]
        K = self.K = len(seeds)
        self.spec, self.vocab_size = spec, vocab_size
        self.embed = _param(K, vocab_size, spec.d_model)
        self.blocks = nn.ModuleList(Block(spec, K) for _ in range(spec.n_layer))
        self.norm = nn.Parameter(torch.ones(K, spec.d_model))
        self.register_buffer("freqs", rotary_tables(spec.seq_len, spec.d_model // spec.n_head), persistent=False)
        self._init(seeds)

    @torch.no_grad()
    def _init(self, seeds: list[int]) -> None:
        """Normal(0, 0.02) weights, residual projections scaled by 1/√(2·layers) (GPT-2), norms at one.

        Each proxy draws from its own generator in a fixed parameter order, so slice k of a K-stack equals a
        lone model built with seeds[k].
        """
        resid_std = 0.02 / math.sqrt(2 * self.spec.n_layer)
        for k, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(int(seed))
            for name, p in self.named_parameters():
                if p.dim() == 2 and "norm" in name:
                    continue  # norms stay at one
                std = resid_std if name.endswith(("attn_out", "mlp_out", "w_out", "shared_out")) else 0.02
                p[k].copy_(torch.randn(p.shape[1:], generator=g) * std)

    def forward(self, idx: torch.Tensor, ks: slice = ALL) -> tuple[torch.Tensor, torch.Tensor]:
        """idx: [K', B, T] token ids of the proxies `ks` (default all K) → logits [K', B, T, V] and the summed
        MoE balancing loss per proxy [K']. A slice of the stack computes exactly what the whole stack would for
        those proxies, so a step may run the stack in chunks to bound activation memory."""
        K, B, T = idx.shape
        # One embedding lookup into the K tables laid end to end: its backward is a dense scatter-add, ~3× faster
        # here than the sort-based backward of advanced indexing.
        offset = (torch.arange(K, device=idx.device) * self.vocab_size).view(K, 1, 1)
        emb = self.embed[ks]
        x = F.embedding(idx + offset, emb.reshape(K * self.vocab_size, -1))
        aux = x.new_zeros(K)
        for block in self.blocks:
            x, a = block(x, self.freqs, ks)
            aux = aux + a
        h = rms_norm(x, self.norm[ks]).view(K, B * T, -1)
        logits = torch.bmm(h, emb.transpose(1, 2))  # tied output embedding
        return logits.view(K, B, T, -1), aux

    def losses(self, idx: torch.Tensor, targets: torch.Tensor, ks: slice = ALL) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean next-token cross-entropy per proxy and sequence [K, B], and the balancing loss per proxy [K].

        Per sequence rather than per proxy, so that a mixed batch also yields per-domain training losses (what
        online mixing schedules feed on) at no extra cost.
        """
        logits, aux = self(idx, ks)
        K, B, T = idx.shape
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none")
        return ce.view(K, B, T).mean(-1), aux

    def n_params(self) -> int:
        """Parameters of one proxy."""
        return sum(p.numel() for p in self.parameters()) // self.K

    def moe_layers(self) -> list[MoE]:
        return [b.moe for b in self.blocks if b.moe is not None]
