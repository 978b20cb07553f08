"""Data-layer throughput: prepare (byte and BPE), the mixture sampler, and discovery on 100k documents; and how
well discovery finds known sources (adjusted Rand index).

    python benchmarks/data_throughput.py            # a table
    python benchmarks/data_throughput.py --json     # one JSON object
    python benchmarks/data_throughput.py --quality [--out benchmarks/results/discovery_quality.json]

Prepare runs on the built-in demo corpus (datasets/demo.yaml) into a fresh folder each time, so nothing is
reused. Discovery runs on 100,000 documents cut from the demo corpus's training text (paragraph-sized pieces,
written as JSONL), the same end-to-end path as `mixopt data discover`.

`--quality` clusters domains of the demo corpus whose sources are known — all seven, and the five of clearly
different kinds (Python source, C++ headers, English prose, licence texts, CSV/JSON data) — into as many
clusters, with documents cut into pieces (the default) and whole, and scores the clusters against the source
domains by adjusted Rand index (1 = the sources exactly, 0 = chance). Both are scored on the same units, pieces
of at most 4,000 characters (a whole document's label goes to each of its pieces), so a long file counts by its
size, not as one point.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import emit  # noqa: E402

sys.path.insert(0, str(ROOT))


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


#: The demo corpus's domains of clearly different kinds (c_headers and cpp are both C/C++ headers, prose and
#: package_docs both English documentation).
DISTINCT = ("python", "cpp", "prose", "licenses", "data")


def bench_quality(k: int, seed: int = 0) -> list[dict]:
    """Adjusted Rand index of discovered clusters against the source domains, pieces against whole documents."""
    from sklearn.metrics import adjusted_rand_score

    from mixopt.data.discover import CHUNK_CHARS, chunk, discover
    from mixopt.data.prepare import kept_documents
    from mixopt.spec import load_dataset

    spec = load_dataset(ROOT / "datasets" / "demo.yaml")
    rows = []
    for label, names in (("all 7 demo domains", tuple(spec.domains)), ("5 of clearly different kinds", DISTINCT)):
        sub = spec.model_copy(update={"domains": {n: spec.domains[n] for n in names}})
        with tempfile.TemporaryDirectory() as tmp:
            sizes = [len(chunk(data.decode("utf-8"), CHUNK_CHARS))
                     for _, data, is_tokens in kept_documents(sub, Path(tmp)) if not is_tokens]
        for mode, chars in (("pieces", CHUNK_CHARS), ("whole documents", 0)):
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                d = discover(sub, k=k, out=Path(tmp) / "found.yaml", seed=seed, final_k=len(names),
                             chunk_chars=chars)
                secs = time.perf_counter() - t
            labels, origins = np.asarray(d.labels), np.asarray(d.origins)
            if chars == 0:  # score on the same pieces: each document's label for each of its pieces
                labels, origins = np.repeat(labels, sizes), np.repeat(origins, sizes)
            rows.append({"corpus": label, "domains": list(names), "units": mode, "k": k, "final_k": len(names),
                         "clustered": len(d.labels), "pieces": len(labels),
                         "ari": float(adjusted_rand_score(origins, labels)), "seconds": secs,
                         "clusters": [{"bytes": c.bytes, "origin_bytes": c.origin_bytes} for c in d.clusters]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--quality", action="store_true", help="only the adjusted-Rand check of discovery")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here too")
    ap.add_argument("--docs", type=int, default=100_000, help="documents for the discovery benchmark")
    ap.add_argument("--k", type=int, default=64, help="initial clusters for discovery")
    args = ap.parse_args()
    if args.quality:
        rows = bench_quality(args.k)
        emit({"quality": rows}, args.out, args.json)
        if not args.json:
            print("| corpus | clustered as | units clustered | adjusted Rand vs sources | seconds |")
            print("|---|---|---|---|---|")
            for r in rows:
                print(f"| {r['corpus']} | {r['units']} (k={r['k']} → {r['final_k']}) | {r['clustered']:,} "
                      f"| {r['ari']:.3f} | {r['seconds']:.0f} |")
        return
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
