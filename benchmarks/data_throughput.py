"""Data-layer throughput: prepare (byte and BPE), the mixture sampler, and discovery on 100k documents.

    python benchmarks/data_throughput.py            # a table
    python benchmarks/data_throughput.py --json     # one JSON object

Prepare runs on the built-in demo corpus (datasets/demo.yaml) into a fresh folder each time, so nothing is
reused. Discovery runs on 100,000 documents cut from the demo corpus's training text (paragraph-sized pieces,
written as JSONL), the same end-to-end path as `mixopt data discover`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def bench_prepare(tokenizer: str, work: Path) -> dict:
    from mixopt.data import prepare
    from mixopt.spec import load_dataset

    spec = load_dataset(ROOT / "datasets" / "demo.yaml")
    if tokenizer != "byte":
        spec = spec.model_copy(update={"tokenizer": spec.tokenizer.model_validate(
            {"kind": "bpe", "vocab_size": 8192, "train_bytes": 4_000_000})})
    t = time.perf_counter()
    data = prepare(spec, work / f"prep-{tokenizer}")
    secs = time.perf_counter() - t
    tokens = sum(v["train_tokens"] + v["val_tokens"] for v in data.index["domains"].values())
    t = time.perf_counter()
    prepare(spec, work / f"prep-{tokenizer}")
    again = time.perf_counter() - t
    return {"tokenizer": tokenizer, "tokens": tokens, "seconds": secs, "tokens_per_s": tokens / secs,
            "rerun_seconds": again, "data": data}


def bench_sampler(data, seq_len: int = 128, batch_size: int = 16, batches: int = 2000) -> dict:
    from mixopt.data import MixtureSampler

    train = data.load("train", mmap=True)
    w = {d: 1 / len(train) for d in train}
    s = MixtureSampler(train, w, seq_len, batch_size, seed=0)
    s.batch()
    t = time.perf_counter()
    for _ in range(batches):
        s.batch()
    secs = time.perf_counter() - t
    return {"tokens": batches * batch_size * seq_len, "seconds": secs,
            "tokens_per_s": batches * batch_size * seq_len / secs, "batch": f"{batch_size}×{seq_len}"}


def bench_discover(data, work: Path, n_docs: int, k: int) -> dict:
    from mixopt.data.discover import discover
    from mixopt.spec import load_dataset

    tok = data.tokenizer()
    train = data.load("train", mmap=True)
    pieces_per = n_docs // len(train) + 1
    docs = []
    for arr in train.values():
        step = len(arr) // pieces_per
        for i in range(pieces_per):
            docs.append(tok.decode(np.asarray(arr[i * step:i * step + min(step, 600)])))
    docs = docs[:n_docs]
    folder = work / "disc"
    folder.mkdir()
    half = len(docs) // 2
    for name, part in (("a", docs[:half]), ("b", docs[half:])):
        with open(folder / f"{name}.jsonl", "w") as f:
            for d in part:
                f.write(json.dumps({"text": d}) + "\n")
    manifest = folder / "m.yaml"
    manifest.write_text(yaml.safe_dump({"name": "bench", "domains": {n: {"sources": [{"jsonl": f"{n}.jsonl"}]}
                                                                     for n in ("a", "b")}}))
    t = time.perf_counter()
    d = discover(load_dataset(manifest), k=k, out=folder / "found.yaml", seed=0)
    secs = time.perf_counter() - t
    return {"documents": len(d.labels), "k": k, "clusters": len(d.clusters), "seconds": secs,
            "stages": {s: round(v, 2) for s, v in d.seconds.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--docs", type=int, default=100_000, help="documents for the discovery benchmark")
    ap.add_argument("--k", type=int, default=64, help="initial clusters for discovery")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        byte = bench_prepare("byte", work)
        bpe = bench_prepare("bpe", work)
        sampler = bench_sampler(byte["data"])
        disc = bench_discover(byte["data"], work, args.docs, args.k)
    for r in (byte, bpe):
        r.pop("data")
    result = {"prepare_byte": byte, "prepare_bpe": bpe, "sampler": sampler, "discover": disc}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print("| what | work | seconds | throughput |")
    print("|---|---|---|---|")
    for kind, name, r in (("byte", "prepare, byte tokenizer", byte), ("BPE", "prepare, BPE 8192 (trained here)", bpe)):
        print(f"| {name} | demo corpus, {r['tokens'] / 1e6:.1f}M tokens | {r['seconds']:.1f} "
              f"| {r['tokens_per_s'] / 1e6:.2f}M tokens/s |")
        print(f"| re-run of the {kind} prepare (no-op) | fingerprint only | {r['rerun_seconds']:.2f} | — |")
    print(f"| mixture sampler, 7 domains, memory-mapped | {sampler['tokens'] / 1e6:.1f}M tokens in batches of "
          f"{sampler['batch']} | {sampler['seconds']:.2f} | {sampler['tokens_per_s'] / 1e6:.1f}M tokens/s |")
    st = disc["stages"]
    print(f"| discover, k={disc['k']} → {disc['clusters']} domains | {disc['documents']:,} documents "
          f"(read {st['read']}s, embed {st['embed']}s, cluster {st['cluster']}s, write {st['write']}s) "
          f"| {disc['seconds']:.1f} | {disc['documents'] / disc['seconds']:,.0f} documents/s |")


if __name__ == "__main__":
    main()
