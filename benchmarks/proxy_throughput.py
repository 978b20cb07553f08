"""Proxy trainer throughput: tokens/s, model FLOPs utilisation, batched vs sequential, memory per proxy.

    python benchmarks/proxy_throughput.py            # CPU here (~5 min); runs unchanged on CUDA (bf16)
    python benchmarks/proxy_throughput.py --quick    # fewer sizes and K
    python benchmarks/proxy_throughput.py --json     # one JSON object at the end (mfu, speedup_batched, device)

MFU = achieved training FLOP/s (model_size accounting: 6 per active weight per token + attention) ÷ the peak
of a large matmul measured in the same run on the same threads/device (float32 1024² on CPU, bf16 4096² on
CUDA), so it says how close the trainer runs to what this hardware actually does, not to a data-sheet number.

Throughput is the steady state of the training loop (time between the end of the first and the last step),
which excludes model construction and the final evaluation; batched K proxies are compared with K sequential
runs of the same proxy at equal total tokens — i.e. with K × the time of one run — so the ratio is
batched tokens/s ÷ single-proxy tokens/s. Data comes from a random-token corpus: throughput does not depend
on the text, and the benchmark then needs nothing prepared.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mixopt.proxies import model_size, train_proxies  # noqa: E402
from mixopt.proxies.train import pick_device  # noqa: E402
from mixopt.spec import ProxySpec  # noqa: E402

VOCAB = 257  # the byte tokenizer's vocabulary


def matmul_peak(device: torch.device) -> float:
    if device.type == "cuda":
        n, dtype = 4096, torch.bfloat16
    else:
        n, dtype = 1024, torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    reps = 50 if device.type == "cuda" else 30
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def corpus(n: int = 400_000) -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    train = {d: rng.integers(0, 256, n).astype(np.uint16) for d in ("a", "b", "c")}
    val = {d: rng.integers(0, 256, 20_000).astype(np.uint16) for d in ("a", "b", "c")}
    return train, val


def steady_tps(spec: ProxySpec, K: int, steps: int, data: tuple[dict, dict], threads: int) -> tuple[float, float]:
    """Steady-state tokens/s over all K proxies, and peak device memory per proxy (bytes; CUDA only)."""
    per_step = spec.batch_size * spec.seq_len
    spec = spec.model_copy(update={"tokens": per_step * (steps + 1), "eval_windows": 1, "eval_every": None})
    stamps: list[float] = []
    device = pick_device(spec)

    def on_step(done: int, total: int) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rng = np.random.default_rng(K)
    mixtures = [dict(zip(("a", "b", "c"), rng.dirichlet(np.ones(3)).tolist(), strict=True)) for _ in range(K)]
    warm = spec.model_copy(update={"tokens": per_step * 2})
    train_proxies(warm, mixtures, list(range(K)), *data, VOCAB, threads)  # allocator, thread pool, kernels
    train_proxies(spec, mixtures, list(range(K)), *data, VOCAB, threads, on_step=on_step)
    mem = torch.cuda.max_memory_allocated() / K if device.type == "cuda" else float("nan")
    elapsed = stamps[-1] - stamps[0]
    return K * per_step * (len(stamps) - 1) / elapsed, mem


def state_bytes(spec: ProxySpec) -> int:
    """Parameters, gradients and AdamW's two moments in float32: what each proxy holds besides activations."""
    return 16 * model_size(spec, VOCAB).total


def load(name: str) -> ProxySpec:
    return ProxySpec.model_validate(yaml.safe_load((ROOT / "proxies" / f"{name}.yaml").read_text()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny and ~1M only, K in {4, 16}")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    ap.add_argument("--threads", type=int, default=2, help="torch threads on CPU (default 2)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per measurement (default 6)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dev_name = torch.cuda.get_device_name(0) if cuda else f"CPU, {args.threads} threads"
    data = corpus()
    peak = matmul_peak(device)
    sizes = ["tiny", "tiny-moe", "regmix-1m", "regmix-1m-moe"] + ([] if args.quick else ["proxy-60m", "proxy-60m-moe"])
    single: dict[str, dict] = {}
    for name in sizes:
        spec = load(name)
        if name.startswith("proxy-60m") and not cuda:
            spec = spec.model_copy(update={"batch_size": 4, "compile": False})  # a CPU step of the GPU batch: ~1 min
        spec = spec.model_copy(update={"device": "auto"})
        steps = 3 if name.startswith("proxy-60m") and not cuda else args.steps
        tps, mem = steady_tps(spec, 1, steps, data, args.threads)
        size = model_size(spec, VOCAB)
        single[name] = {"params": size.total, "active_params": size.active, "flops_per_token": size.flops_per_token,
                        "tokens_per_s": tps, "mfu": tps * size.flops_per_token / peak,
                        "state_bytes": state_bytes(spec), "peak_mem_bytes": mem, "batch": spec.batch_size,
                        "seq_len": spec.seq_len}
    ks = [4, 16] if args.quick else [4, 16, 64]
    batched: dict[str, dict[int, dict]] = {}
    for name in ("tiny", "regmix-1m"):
        spec = load(name).model_copy(update={"device": "auto"})
        batched[name] = {}
        for K in ks:
            steps = max(2, args.steps // 2) if K >= 16 and not cuda else args.steps
            tps, mem = steady_tps(spec, K, steps, data, args.threads)
            batched[name][K] = {"tokens_per_s": tps, "speedup": tps / single[name]["tokens_per_s"],
                                "peak_mem_bytes_per_proxy": mem}

    from rich.console import Console
    from rich.table import Table

    con = Console(stderr=args.json, width=140)
    con.print(f"device: {dev_name}; measured matmul peak {peak / 1e9:.1f} GFLOP/s")
    t = Table(title="One proxy: steady-state training throughput")
    for col in ("proxy", "params (active)", "batch×ctx", "MFLOP/token", "tokens/s", "MFU", "state MB", "peak MB"):
        t.add_column(col, justify="right")
    for name, r in single.items():
        t.add_row(name, f"{r['params'] / 1e6:.2f}M ({r['active_params'] / 1e6:.2f}M)",
                  f"{r['batch']}×{r['seq_len']}", f"{r['flops_per_token'] / 1e6:.1f}", f"{r['tokens_per_s']:,.0f}",
                  f"{100 * r['mfu']:.0f} %", f"{r['state_bytes'] / 2**20:.1f}",
                  _mb(r["peak_mem_bytes"]))
    con.print(t)
    t = Table(title="K proxies as one batched model vs K sequential runs (equal total tokens)")
    for col in ("proxy", "K", "batched tokens/s", "sequential tokens/s", "speedup", "peak MB / proxy"):
        t.add_column(col, justify="right")
    for name, rows in batched.items():
        for K, r in rows.items():
            t.add_row(name, str(K), f"{r['tokens_per_s']:,.0f}", f"{single[name]['tokens_per_s']:,.0f}",
                      f"{r['speedup']:.2f}×",
                      _mb(r["peak_mem_bytes_per_proxy"]))
    con.print(t)
    if args.json:
        k16 = batched["regmix-1m"].get(16) or batched["regmix-1m"][max(batched["regmix-1m"])]
        out = {"device": dev_name, "matmul_peak_flops": peak, "mfu": single["regmix-1m"]["mfu"],
               "speedup_batched": k16["speedup"], "single": single,
               "batched": {n: {str(k): v for k, v in rows.items()} for n, rows in batched.items()}}
        print(json.dumps(_finite(out)))


def _mb(x: float) -> str:
    return "—" if np.isnan(x) else f"{x / 2**20:.0f}"


def _finite(x):
    """NaN (a measurement not taken on this device) as JSON null."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


if __name__ == "__main__":
    main()
