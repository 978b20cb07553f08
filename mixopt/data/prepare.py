"""Prepare a dataset: documents → exact de-duplication → caps → validation split by document → tokens, packed.

Output is one folder per dataset version, named by a fingerprint of the spec, of the input files and of the
tokenizer, holding `<domain>.train.npy` and `<domain>.val.npy` (uint16 token ids while the vocabulary fits,
uint32 beyond; documents separated by the tokenizer's EOS), the tokenizer (`tokenizer.json` unless byte-level)
and `index.json` (token and document counts, the tokenizer, SHA-256 of every array).

The folder is built under a temporary name and renamed into place only when complete, so an interrupted
prepare never leaves a folder that looks complete; a second prepare of unchanged inputs is a no-op; leftovers
of a killed prepare are removed by the next one.

Documents stream through a spool file per domain, so memory holds one hash and offset per document, not the
corpus.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mixopt.data.sources import read_source, source_files
from mixopt.data.tokenizer import (
    DEFAULT_BPE_VOCAB,
    Tokenizer,
    file_sha256,
    from_record,
    load_tokenizer_file,
    same_tokenizer,
    token_dtype,
    train_bpe,
)
from mixopt.errors import InputError
from mixopt.spec import DOCS_PER_FILE, SPLIT_BELOW_FILES, DatasetSpec, DomainSpec

log = logging.getLogger(__name__)

FORMAT = 2
EOS = 256  # the byte tokenizer's end-of-document id (kept for callers of the first format)
VOCAB_SIZE = 257
MIN_DOMAIN_TOKENS = 4096  # training tokens a domain needs at least
MIN_VAL_TOKENS = 256  # validation tokens (a few windows); min_val_tokens asks for more, in bytes of text
ENCODE_CHUNK_BYTES = 4 << 20  # documents handed to the tokenizer at once

#: on_progress(domain, phase, done, total): phase is "read" (documents so far, total None) or "tokenize"
#: (bytes done of total).
ProgressFn = Callable[[str, str, int, "int | None"], None]


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
    def eos(self) -> int:
        return int(self.index.get("eos", EOS))

    @property
    def token_counts(self) -> dict[str, int]:
        return {d: int(v["train_tokens"]) for d, v in self.index["domains"].items()}

    def load(self, split: str, mmap: bool = True) -> dict[str, np.ndarray]:
        return {d: np.load(self.path / f"{d}.{split}.npy", mmap_mode="r" if mmap else None)
                for d in self.domains}

    def tokenizer(self) -> Tokenizer:
        record = self.index["tokenizer"]
        if isinstance(record, str):  # format 1: byte only
            record = {"kind": "byte", "eos": EOS}
        return from_record(record, self.path)

    def check_tokenizer(self, record: dict[str, Any]) -> None:
        """Refuse to hand these token arrays to code that expects another tokenizer."""
        mine = self.index["tokenizer"]
        if isinstance(mine, str) or not same_tokenizer(mine, record):
            raise InputError(str(self.path), f"prepared with tokenizer {_tok_label(mine)}, but "
                             f"{_tok_label(record)} was asked for",
                             "prepare the dataset again with the tokenizer you mean (a new folder is made)")

    def check_seq_len(self, seq_len: int, domains: list[str] | None = None) -> None:
        """Every domain must hold at least one training sequence and one validation window."""
        for d in domains or self.domains:
            for split, key in (("train", "train_tokens"), ("val", "val_tokens")):
                n = int(self.index["domains"][d][key])
                if n <= seq_len + 1:
                    raise InputError(f"domain {d}: {self.path / f'{d}.{split}.npy'}",
                                     f"{n} {split} tokens, fewer than one sequence of {seq_len + 1}",
                                     "add documents to the domain, merge it into another, or shorten seq_len")

    @classmethod
    def open(cls, path: str | Path) -> PreparedData:
        path = Path(path)
        if not (path / "index.json").is_file():
            raise InputError(str(path), "no prepared dataset here (index.json missing)",
                             "run `mixopt data prepare MANIFEST` and pass the folder it prints")
        return cls(path, json.loads((path / "index.json").read_text()))


def _tok_label(record: dict[str, Any] | str) -> str:
    if isinstance(record, str):
        return record
    return f"{record.get('kind')} (vocab {record.get('vocab_size')}, sha256 {str(record.get('sha256'))[:12]})"


def fingerprint(spec: DatasetSpec) -> str:
    """Changes whenever what the arrays are made of changes: the spec's content (not `roots`, which only say where
    sources may be read from and grow when a job folder's copy of the spec is loaded, nor descriptions and
    discovery notes), an input file (size or mtime) or the tokenizer file. Why: resuming a job re-read its
    spec with the job folder added to `roots`, and re-prepared an unchanged dataset under a new name."""
    content = spec.model_dump(mode="json", exclude={"roots"})
    for dom in content["domains"].values():
        dom.pop("description", None)
        dom.pop("discovered", None)
    h = hashlib.sha256(json.dumps(content, sort_keys=True).encode())
    h.update(f"format {FORMAT}".encode())
    for name, dom in spec.domains.items():
        counts = []
        for src in dom.sources:
            files = source_files(src)
            counts.append(len(files))
            for p in files:
                st = p.stat()
                h.update(f"{name}|{p}|{st.st_size}|{st.st_mtime_ns}".encode())
        if few_text_files(dom, counts):  # cut finer since format 2 (marked here, so other data keep their name)
            h.update(f"{name}|{DOCS_PER_FILE} documents per file".encode())
    if spec.tokenizer.path is not None and Path(spec.tokenizer.path).is_file():
        h.update(file_sha256(Path(spec.tokenizer.path)).encode())
    return h.hexdigest()[:16]


def few_text_files(dom: DomainSpec, counts: list[int] | None = None) -> bool:
    """A domain of only `glob` sources with fewer than SPLIT_BELOW_FILES files in all: `documents: auto` then cuts
    each file into about DOCS_PER_FILE documents, so one or a few large files give a validation split.
    `counts`: each source's number of files, when the caller has listed them already (the fingerprint does, on
    every prepare, so a no-op re-run walks each glob once)."""
    if not all(s.kind == "glob" for s in dom.sources):
        return False
    return sum(counts if counts is not None else (len(source_files(s)) for s in dom.sources)) < SPLIT_BELOW_FILES


def prepare(spec: DatasetSpec, root: str | Path, on_domain: Callable[[str, int, int], None] | None = None,
            on_progress: ProgressFn | None = None) -> PreparedData:
    """Build (or reuse) the packed token arrays of `spec` under `root`."""
    root = Path(root)
    out = root / f"{spec.name}-{fingerprint(spec)}"
    if (out / "index.json").is_file():
        return PreparedData.open(out)
    root.mkdir(parents=True, exist_ok=True)
    _remove_dead_partials(root, out.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=root))
    (tmp / "pid").write_text(str(os.getpid()))
    try:
        index = _build(spec, tmp, on_domain, on_progress)
        index["fingerprint"] = out.name.rsplit("-", 1)[1]
        (tmp / "pid").unlink()
        _write_atomic(tmp / "index.json", json.dumps(index, indent=1))
        try:
            os.rename(tmp, out)
        except OSError:  # someone else finished the same prepare first: theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PreparedData.open(out)


def _remove_dead_partials(root: Path, stem: str) -> None:
    """A prepare killed mid-way leaves its temporary folder; remove those whose process is gone."""
    for p in root.glob(f".{stem}.*.partial"):
        try:
            pid = int((p / "pid").read_text())
            os.kill(pid, 0)
            continue  # still running: a concurrent prepare of the same data
        except (OSError, ValueError):
            shutil.rmtree(p, ignore_errors=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------- building


@dataclass
class _Domain:
    """One domain's distinct documents, spooled to disk: key → (offset, length, is_tokens)."""

    name: str
    spool: Path
    docs: dict[str, tuple[int, int, bool]] = field(default_factory=dict)
    seen: int = 0
    files: int = 0  # text files read
    split_files: dict[str, int] = field(default_factory=dict)  # file → documents, for files that gave several
    binary: list[str] = field(default_factory=list)  # files skipped as binary
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)

    def read(self, f: BinaryIO, key: str) -> tuple[bytes, bool]:
        off, n, is_tokens = self.docs[key]
        f.seek(off)
        return f.read(n), is_tokens


def _build(spec: DatasetSpec, tmp: Path, on_domain: Callable[[str, int, int], None] | None,
           on_progress: ProgressFn | None) -> dict[str, Any]:
    doms = [_collect(spec, name, tmp, on_progress) for name in spec.domains]
    for d in doms:
        _split(spec, d)
    tok = _tokenizer(spec, doms, tmp)
    tok.save(tmp)
    record = tok.record()
    index: dict[str, Any] = {"format": FORMAT, "name": spec.name, "tokenizer": record,
                             "vocab_size": tok.vocab_size, "eos": tok.eos,
                             "dtype": token_dtype(tok.vocab_size).name, "domains": {}}
    for i, d in enumerate(doms):
        index["domains"][d.name] = _write_domain(spec, d, tok, tmp, on_progress)
        d.spool.unlink()
        if on_domain:
            on_domain(d.name, i + 1, len(doms))
    return index


def _where(spec: DatasetSpec, name: str) -> str:
    return f"dataset {spec.name}: domains.{name}"


def _collect(spec: DatasetSpec, name: str, tmp: Path, on_progress: ProgressFn | None) -> _Domain:
    dom = spec.domains[name]
    d = _Domain(name, tmp / f"{name}.spool")
    few = few_text_files(dom)
    offset = 0
    with open(d.spool, "wb") as f:
        for j, src in enumerate(dom.sources):
            for origin, doc in read_source(src, where=f"{_where(spec, name)}.sources[{j}]", skipped=d.binary,
                                           few_files=few):
                if src.kind == "glob":
                    file, _, part = origin.partition("#")
                    if not part or part == "0":
                        d.files += 1
                    if part:
                        d.split_files[file] = d.split_files.get(file, 0) + 1
                if isinstance(doc, str):
                    data, is_tokens = doc.encode("utf-8"), False
                    if not data.strip():
                        continue
                else:
                    if len(doc) == 0:
                        continue
                    if int(doc.min()) < 0:
                        raise InputError(f"{_where(spec, name)}.sources[{j}]: {origin}", "negative token ids",
                                         "store token ids as non-negative integers")
                    data, is_tokens = np.ascontiguousarray(doc, dtype="<u4").tobytes(), True
                d.seen += 1
                key = hashlib.sha1(data).hexdigest()
                if key not in d.docs:  # exact duplicates are kept once
                    f.write(data)
                    d.docs[key] = (offset, len(data), is_tokens)
                    offset += len(data)
                if on_progress and d.seen % 1000 == 0:
                    on_progress(name, "read", d.seen, None)
    d.split_files = {f: n for f, n in d.split_files.items() if n > 1}
    if d.binary:
        shown = ", ".join(d.binary[:3]) + (f" and {len(d.binary) - 3} more" if len(d.binary) > 3 else "")
        log.warning("%s: skipped %d file(s) as binary (a NUL byte in the first 8 KB): %s", _where(spec, name),
                    len(d.binary), shown)
    if not d.docs:
        srcs = ", ".join(f"{s.kind}: {s.target}" for s in dom.sources)
        if d.binary and not d.seen:
            raise InputError(_where(spec, name), f"no documents: every file of {srcs} was skipped as binary "
                             f"({', '.join(d.binary[:3])}{' …' if len(d.binary) > 3 else ''})",
                             "point the domain at text files, or convert them to text first")
        raise InputError(_where(spec, name), f"no documents (every document from {srcs} is empty)",
                         "point the domain at files that hold text, or remove the domain")
    return d


#: Fewer validation documents than this and a domain's validation loss is one or two documents' loss: warned.
MIN_VAL_DOCS = 10


def _split(spec: DatasetSpec, d: _Domain) -> None:
    """Caps, then train/validation by a salted hash of each document: stable when other documents change."""
    dom = spec.domains[d.name]
    keys = sorted(d.docs)  # hash order is a deterministic shuffle: a cap keeps a spread of the domain
    if dom.max_docs is not None:
        keys = keys[:dom.max_docs]
    if dom.max_bytes is not None:
        kept, total = [], 0
        for k in keys:
            if total >= dom.max_bytes:
                break
            kept.append(k)
            total += d.docs[k][1]
        keys = kept
    frac = dom.val_fraction or spec.val_fraction
    salt = str(spec.seed).encode()
    bucket = {k: int(hashlib.sha1(salt + k.encode()).hexdigest()[:8], 16) / 2**32 for k in keys}
    d.val = [k for k in keys if bucket[k] < frac]
    train = sorted((k for k in keys if bucket[k] >= frac), key=lambda k: bucket[k])
    # Small domains: move documents to validation until it can give stable per-domain losses (counted in bytes:
    # the tokenizer may not exist yet, and bytes bound tokens from above for every tokenizer here).
    val_bytes = sum(d.docs[k][1] for k in d.val)
    topped_up = False
    while val_bytes < spec.min_val_tokens and len(train) > 1:
        k = train.pop(0)
        d.val.append(k)
        val_bytes += d.docs[k][1]
        topped_up = True
    d.train = sorted(train)
    total = sum(d.docs[k][1] for k in keys)
    share = val_bytes / total if total else 0.0
    if len(d.val) and (share > 2 * frac + 0.05 or len(d.val) < MIN_VAL_DOCS):
        # Name the cause: a small domain (min_val_tokens takes much of it) or few, large documents.
        why = (f"min_val_tokens ({spec.min_val_tokens:,}) takes that much of this domain's {total:,} bytes: add "
               "text, or lower min_val_tokens" if topped_up and share > 2 * frac + 0.05 else
               "its loss then rests on few documents and training loses them: add documents, or split large "
               "files (a glob source's `documents: paragraphs`)")
        log.warning("%s: validation holds %.0f%% of the domain's bytes (val_fraction %g) from %d document(s); %s",
                    _where(spec, d.name), 100 * share, frac, len(d.val), why)


def kept_documents(spec: DatasetSpec, tmp: Path, on_progress: ProgressFn | None = None
                   ) -> Iterator[tuple[str, bytes, bool]]:
    """`(domain, data, is_tokens)` for every document prepare would keep (de-duplicated, capped), in the order
    prepare stores them: train then validation. `tmp` holds the spool files while it runs."""
    for name in spec.domains:
        d = _collect(spec, name, tmp, on_progress)
        _split(spec, d)
        with open(d.spool, "rb") as f:
            for k in (*d.train, *d.val):
                data, is_tokens = d.read(f, k)
                yield name, data, is_tokens
        d.spool.unlink()


def _tokenizer(spec: DatasetSpec, doms: list[_Domain], tmp: Path) -> Tokenizer:
    ts = spec.tokenizer
    if ts.kind == "byte":
        return Tokenizer()
    if ts.kind == "file":
        assert ts.path is not None
        return load_tokenizer_file(ts.path, ts.eos_token, where=f"dataset {spec.name}: tokenizer.path")
    # BPE: an equal share of text from every domain's training documents, so no domain's vocabulary is lost.
    share = ts.train_bytes // len(doms)
    texts: list[str] = []
    for d in doms:
        got = 0
        with open(d.spool, "rb") as f:
            for k in d.train:
                if got >= share:
                    break
                data, is_tokens = d.read(f, k)
                if not is_tokens:
                    texts.append(data[:share - got].decode("utf-8", errors="ignore"))
                    got += len(data)
    if not texts:
        raise InputError(f"dataset {spec.name}: tokenizer", "a bpe tokenizer needs text, and every source is "
                         "already tokenized", "use the tokenizer those tokens were made with (tokenizer.path)")
    return train_bpe(texts, ts.vocab_size or DEFAULT_BPE_VOCAB)


def _write_domain(spec: DatasetSpec, d: _Domain, tok: Tokenizer, tmp: Path, on_progress: ProgressFn | None
                  ) -> dict[str, Any]:
    dtype = token_dtype(tok.vocab_size)
    info: dict[str, Any] = {"source_docs": d.seen, "distinct_docs": len(d.docs), "files": {}}
    if d.files:  # text files read, and how many documents each split one gave (the first 50 of them)
        info["text_files"] = d.files
        info["split_files"] = dict(sorted(d.split_files.items())[:50])
    if d.binary:
        info["binary_skipped"] = d.binary[:50]
    total = sum(d.docs[k][1] for k in (*d.train, *d.val))
    done = 0
    with open(d.spool, "rb") as spool:
        for split, keys in (("train", d.train), ("val", d.val)):
            path = tmp / f"{d.name}.{split}.npy"
            n = 0
            with open(path, "wb") as out:
                _npy_header(out, dtype, 0)
                for chunk in _chunks(d, keys):
                    docs = [d.read(spool, k) for k in chunk]
                    texts = [data for data, is_tokens in docs if not is_tokens]
                    encoded = iter(tok.encode_batch(texts))
                    for k, (data, is_tokens) in zip(chunk, docs, strict=True):
                        ids = np.frombuffer(data, dtype="<u4") if is_tokens else next(encoded)
                        if is_tokens and len(ids) and int(ids.max()) >= tok.vocab_size:
                            raise InputError(_where(spec, d.name), f"a tokenized document holds id "
                                             f"{int(ids.max())} ≥ the tokenizer's vocabulary ({tok.vocab_size})",
                                             "set `tokenizer:` to the tokenizer these tokens were made with")
                        packed = np.empty(len(ids) + 1, dtype=dtype)
                        packed[:-1] = ids
                        packed[-1] = tok.eos
                        out.write(packed.tobytes())
                        n += len(packed)
                        done += d.docs[k][1]
                    if on_progress:
                        on_progress(d.name, "tokenize", done, total)
                out.seek(0)
                _npy_header(out, dtype, n)
            need = MIN_DOMAIN_TOKENS if split == "train" else MIN_VAL_TOKENS
            if n < need:
                files = ", ".join(f"{s.kind}: {s.target}" for s in spec.domains[d.name].sources)
                text = sum(d.docs[k][1] for k in (*d.train, *d.val))
                raise InputError(f"{_where(spec, d.name)} ({files})",
                                 f"only {n} {split} tokens from {len(d.train) + len(d.val)} distinct documents "
                                 f"(the {split} split needs ≥ {need}; validation is split by document and "
                                 f"takes at least min_val_tokens = {spec.min_val_tokens:,} of the domain's "
                                 f"{text:,} bytes)", "add text to this domain, merge it into another, or lower "
                                 "min_val_tokens")
            info[f"{split}_tokens"] = n
            info[f"{split}_docs"] = len(keys)
            info["files"][split] = {"file": path.name, "sha256": file_sha256(path)}
    return info


def _chunks(d: _Domain, keys: list[str]) -> Any:
    chunk: list[str] = []
    size = 0
    for k in keys:
        chunk.append(k)
        size += d.docs[k][1]
        if size >= ENCODE_CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _npy_header(f: BinaryIO, dtype: np.dtype, n: int) -> None:
    """A fixed-size .npy header (v1.0 pads to 128 bytes for any length we write), rewritten once n is known."""
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dtype),
                                             "fortran_order": False, "shape": (n,)})
    if f.tell() != 128:
        raise RuntimeError("unexpected .npy header size")
