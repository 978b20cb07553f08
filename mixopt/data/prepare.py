"""Prepare a dataset: documents → exact de-duplication → validation split by document → byte tokens, packed.

Output is one folder per dataset version, keyed by a fingerprint of the spec and of the input files, holding
`<domain>.train.npy` and `<domain>.val.npy` (uint16 tokens, documents separated by EOS) and `index.json`.
The folder is built under a temporary name and renamed into place, so an interrupted prepare never leaves a
folder that looks complete; a second prepare of unchanged inputs is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixopt.data.sources import files_of, read_source
from mixopt.errors import InputError
from mixopt.spec import DatasetSpec

EOS = 256
VOCAB_SIZE = 257  # 256 byte values + EOS
MIN_DOMAIN_TOKENS = 4096


@dataclass
class PreparedData:
    path: Path
    index: dict

    @property
    def domains(self) -> list[str]:
        return list(self.index["domains"])

    @property
    def vocab_size(self) -> int:
        return int(self.index["vocab_size"])

    @property
    def token_counts(self) -> dict[str, int]:
        return {d: int(v["train_tokens"]) for d, v in self.index["domains"].items()}

    def load(self, split: str, mmap: bool = True) -> dict[str, np.ndarray]:
        return {d: np.load(self.path / f"{d}.{split}.npy", mmap_mode="r" if mmap else None)
                for d in self.domains}

    @classmethod
    def open(cls, path: str | Path) -> PreparedData:
        path = Path(path)
        return cls(path, json.loads((path / "index.json").read_text()))


def fingerprint(spec: DatasetSpec) -> str:
    h = hashlib.sha256(spec.model_dump_json().encode())
    for name, dom in spec.domains.items():
        for src in dom.sources:
            for pattern in (src.glob, src.docstrings):
                if pattern:
                    for p in files_of(pattern):
                        st = p.stat()
                        h.update(f"{name}|{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def prepare(spec: DatasetSpec, root: str | Path, on_domain: Callable[[str, int, int], None] | None = None
            ) -> PreparedData:
    """Build (or reuse) the packed token arrays of `spec` under `root`."""
    root = Path(root)
    out = root / f"{spec.name}-{fingerprint(spec)}"
    if (out / "index.json").is_file():
        return PreparedData.open(out)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=root))
    try:
        index = {"name": spec.name, "tokenizer": spec.tokenizer, "vocab_size": VOCAB_SIZE, "eos": EOS,
                 "domains": {}}
        for i, name in enumerate(spec.domains):
            index["domains"][name] = _prepare_domain(spec, name, tmp)
            if on_domain:
                on_domain(name, i + 1, len(spec.domains))
        (tmp / "index.json").write_text(json.dumps(index, indent=1))
        try:
            os.rename(tmp, out)
        except OSError:  # someone else finished the same prepare first: theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PreparedData.open(out)


def _prepare_domain(spec: DatasetSpec, name: str, out: Path) -> dict:
    dom = spec.domains[name]
    docs: dict[str, bytes] = {}
    for j, src in enumerate(dom.sources):
        for _origin, text in read_source(src, where=f"dataset {spec.name}: domains.{name}.sources[{j}]"):
            data = text.encode("utf-8")
            if data.strip():
                docs.setdefault(hashlib.sha1(data).hexdigest(), data)  # exact duplicates kept once
    # A hash order is a deterministic shuffle: a byte cap then keeps a spread of the domain, not its first files.
    keys = sorted(docs)
    if dom.max_bytes is not None:
        kept, total = [], 0
        for k in keys:
            if total >= dom.max_bytes:
                break
            kept.append(k)
            total += len(docs[k])
        keys = kept
    salt = str(spec.seed).encode()
    bucket = {k: int(hashlib.sha1(salt + k.encode()).hexdigest()[:8], 16) / 2**32 for k in keys}
    val = [k for k in keys if bucket[k] < spec.val_fraction]
    train = [k for k in keys if bucket[k] >= spec.val_fraction]
    # Small domains: move documents to validation until it can give stable per-domain losses.
    train.sort(key=lambda k: bucket[k])
    while sum(len(docs[k]) + 1 for k in val) < spec.min_val_tokens and len(train) > 1:
        val.append(train.pop(0))
    arrays = {"train": _pack([docs[k] for k in train]), "val": _pack([docs[k] for k in val])}
    for split, arr in arrays.items():
        if len(arr) < MIN_DOMAIN_TOKENS:
            raise InputError(f"dataset {spec.name}: domains.{name}",
                             f"only {len(arr)} {split} tokens from {len(train) + len(val)} distinct documents "
                             f"(the {split} split needs ≥ {MIN_DOMAIN_TOKENS}; validation is split by document)",
                             "add documents to this domain or merge it into another")
        np.save(out / f"{name}.{split}.npy", arr)
    return {"train_tokens": int(len(arrays["train"])), "val_tokens": int(len(arrays["val"])),
            "train_docs": len(train), "val_docs": len(val)}


def _pack(docs: list[bytes]) -> np.ndarray:
    if not docs:
        return np.zeros(0, dtype=np.uint16)
    sep = bytes([0])  # placeholder byte, replaced by EOS below (EOS does not fit in a byte)
    flat = np.frombuffer(sep.join(docs) + sep, dtype=np.uint8).astype(np.uint16)
    ends = np.cumsum([len(d) + 1 for d in docs]) - 1
    flat[ends] = EOS
    return flat
