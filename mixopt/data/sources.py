"""Reading documents from the sources a DatasetSpec names.

Every reader yields `(origin, document)` pairs, where a document is text (`str`) or, for already tokenized
sources, a 1-D array of token ids. Readers stream: a JSONL or Parquet file is never loaded whole. Whatever is
wrong with an input ends as an `InputError` that names the domain's source and the file (and the line or row).
"""

from __future__ import annotations

import ast
import glob
import gzip
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mixopt.errors import InputError
from mixopt.spec import DOCS_PER_FILE, SPLIT_BELOW_FILES, SourceSpec, expand_placeholders

log = logging.getLogger(__name__)

MIN_DOCSTRING_CHARS = 80  # one-line docstrings are mostly code-ish fragments, not prose
DEFAULT_TEXT_FIELD = "text"

Document = str | np.ndarray


def files_of(pattern: str, exclude: list[str] | tuple[str, ...] = ()) -> list[Path]:
    """Files matching a glob (`**` recurses), sorted so that every run reads them in the same order."""
    skip: set[str] = set()
    for ex in exclude:
        skip.update(glob.glob(expand_placeholders(ex), recursive=True))
    return sorted(Path(p) for p in glob.glob(expand_placeholders(pattern), recursive=True)
                  if p not in skip and Path(p).is_file())


def source_files(source: SourceSpec) -> list[Path]:
    """The files a source reads (empty for builtin and Hugging Face hub sources)."""
    if source.kind == "megatron":
        prefixes = sorted({str(p.with_suffix("")) for p in files_of(source.target, source.exclude)
                           if p.suffix in (".bin", ".idx")}
                          | ({source.target} if Path(expand_placeholders(source.target) + ".bin").is_file()
                             else set()))
        return [Path(expand_placeholders(p) + ext) for p in prefixes for ext in (".bin", ".idx")]
    if source.kind == "hf":
        p = Path(expand_placeholders(source.target))
        return sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
    if source.kind == "builtin":
        return []
    return files_of(source.target, source.exclude)


def read_source(source: SourceSpec, where: str, skipped: list[str] | None = None, few_files: bool = False
                ) -> Iterator[tuple[str, Document]]:
    """Yield `(origin, document)` for every document of the source, in a fixed order. Files skipped as binary
    are appended to `skipped` (the caller names them). `few_files`: the source's domain has fewer than
    SPLIT_BELOW_FILES text files, so `documents: auto` cuts each file finer (about DOCS_PER_FILE documents):
    joined up to 64 KB, a 1 MB file would give 16 documents and its validation split one or none."""
    kind = source.kind
    if kind == "builtin":
        from pydoc_data.topics import topics

        for key in sorted(topics):
            yield f"pydoc_topics:{key}", topics[key]
        return
    if kind == "hf":
        yield from _hf(source, where)
        return
    paths = source_files(source)
    if not paths:
        raise InputError(where, f"no files match {source.target!r} (expands to "
                         f"{expand_placeholders(source.target)!r})", "fix the path or glob, or remove the source")
    if kind == "megatron":
        for bin_path in paths[::2]:
            yield from _megatron(bin_path, where)
        return
    mode = source.documents
    fine = mode == "auto" and few_files
    if mode == "auto":
        mode = "paragraphs" if len(paths) < SPLIT_BELOW_FILES else "file"
    for path in paths:
        here = f"{where}: {path}"
        if kind == "npy":
            yield from _npy(path, source, here)
        elif kind == "parquet":
            yield from _parquet(path, source, here)
        elif kind == "jsonl":
            yield from _jsonl(path, source, here)
        else:
            raw = _read_bytes(path, here)
            if b"\x00" in raw[:8192]:
                if skipped is not None:
                    skipped.append(str(path))
                continue  # a binary file caught by a broad glob
            text = _decode(raw, source, here)
            if text is None:
                continue
            if kind == "glob":
                cut, join = source.max_document_bytes, None
                if fine:  # paragraphs joined to ~1/DOCS_PER_FILE of the file; longer ones cut at 4 KB (at line ends)
                    join = max(64, len(raw) // DOCS_PER_FILE)
                    cut = min(cut, max(4096, join))
                yield from split_text(str(path), text, mode, cut, join)
            else:
                yield from _docstrings(path, text)


def split_text(origin: str, text: str, mode: str, max_bytes: int, join_bytes: int | None = None
               ) -> Iterator[tuple[str, str]]:
    """A text file as documents: whole (`file`), one per non-empty line (`lines`), at blank lines with
    paragraphs joined up to `max_bytes` (`paragraphs`), or at each match of a separator regex (anything else).
    A piece longer than `max_bytes` is cut at line ends (or, for one very long line, at the limit). Origins of
    the parts are `FILE#i`, so a prepared domain can say how many documents each file gave. `join_bytes` (at
    most `max_bytes`) is where joining paragraphs stops: smaller documents without cutting a paragraph."""
    join_at = min(max_bytes, join_bytes or max_bytes)
    if mode == "file":
        yield origin, text
        return
    if mode == "lines":
        pieces, join = [ln for ln in text.splitlines() if ln.strip()], False
    else:
        sep = r"\n[ \t]*\n" if mode == "paragraphs" else mode
        pieces = [p.strip("\n") for p in re.split(sep, text, flags=re.MULTILINE) if p and p.strip()]
        join = mode == "paragraphs"
    docs: list[str] = []
    current: list[str] = []
    size = 0
    for piece in pieces:
        for part in _cut(piece, max_bytes):
            n = len(part.encode("utf-8"))
            if not join:
                docs.append(part)
                continue
            if current and size + n + 2 > join_at:
                docs.append("\n\n".join(current))
                current, size = [], 0
            current.append(part)
            size += n + 2
    if current:
        docs.append("\n\n".join(current))
    for i, doc in enumerate(docs):
        yield f"{origin}#{i}", doc


def _cut(piece: str, max_bytes: int) -> Iterator[str]:
    """`piece` in parts of at most `max_bytes` UTF-8 bytes, at line ends where it has them."""
    if len(piece.encode("utf-8")) <= max_bytes:
        yield piece
        return
    part: list[str] = []
    size = 0
    for line in piece.splitlines(keepends=True):
        while len(line.encode("utf-8")) > max_bytes:  # one very long line: cut it at the limit (by characters)
            if part:
                yield "".join(part)
                part, size = [], 0
            head = line.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
            yield head
            line = line[len(head):]
        n = len(line.encode("utf-8"))
        if part and size + n > max_bytes:
            yield "".join(part)
            part, size = [], 0
        part.append(line)
        size += n
    if part:
        yield "".join(part)


def _read_bytes(path: Path, where: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(where, f"unreadable file ({e.strerror})",
                         "fix its permissions or leave it out with `exclude:`") from None


def _decode(raw: bytes, source: SourceSpec, where: str, unit: str = "") -> str | None:
    try:
        return raw.decode(source.encoding)
    except UnicodeDecodeError as e:
        if source.decode_errors == "replace":
            return raw.decode(source.encoding, errors="replace")
        if source.decode_errors == "skip":
            log.info("skipping %s%s: not valid %s", where, unit, source.encoding)
            return None
        raise InputError(where, f"{unit.strip() + ': ' if unit else ''}not valid {source.encoding} at byte "
                         f"{e.start} ({raw[max(0, e.start - 8):e.start + 8]!r}); mixed encodings?",
                         "convert it to UTF-8, or set `encoding:` (e.g. latin-1) or `decode_errors: replace` "
                         "(or skip) on this source") from None


def _field(record: object, field: str) -> object:
    for part in field.split("."):
        if not isinstance(record, dict) or part not in record:
            raise KeyError(part)
        record = record[part]
    return record


def _text_of(value: object, field: str, where: str, unit: str, keys: list[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(where, f"{unit}: text field {field!r} holds {type(value).__name__}, not text",
                         f"set `text_field:` to the field that holds the document text (fields: {keys})")
    return value


def _jsonl(path: Path, source: SourceSpec, where: str) -> Iterator[tuple[str, Document]]:
    field = source.text_field or DEFAULT_TEXT_FIELD
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        f = opener(path, "rb")
    except OSError as e:
        raise InputError(where, f"unreadable file ({e.strerror})", "fix its permissions or leave it out") from None
    try:
        with f:
            yield from _jsonl_lines(f, path, field, source, where)
    except (OSError, EOFError) as e:  # a truncated or corrupt .gz shows up while reading
        raise InputError(where, f"unreadable file ({e})", "check the file, or leave it out with `exclude:`") from None


def _jsonl_lines(f: BinaryIO, path: Path, field: str, source: SourceSpec, where: str
                 ) -> Iterator[tuple[str, Document]]:
    for n, raw in enumerate(f, start=1):
        if not raw.strip():
            continue
        line = _decode(raw, source, where, f" line {n}")
        if line is None:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(where, f"line {n}: not valid JSON ({e.msg})",
                             "fix the line; JSON Lines holds one JSON object per line") from None
        keys = sorted(record) if isinstance(record, dict) else []
        try:
            value = _field(record, field)
        except KeyError:
            raise InputError(where, f"line {n}: no text field {field!r} (the record has {keys})",
                             "set `text_field:` on this source to the field holding the text") from None
        text = _text_of(value, field, where, f"line {n}", keys)
        if text is not None:
            yield f"{path}:{n}", text


def _parquet(path: Path, source: SourceSpec, where: str) -> Iterator[tuple[str, Document]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    field = source.text_field or DEFAULT_TEXT_FIELD
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise InputError(where, f"not a readable Parquet file ({e})", "check the file, or leave it out") from None
    names = pf.schema_arrow.names
    if field not in names:
        raise InputError(where, f"no column {field!r} (columns: {names})",
                         "set `text_field:` on this source to the column holding the text")
    if not pa.types.is_string(pf.schema_arrow.field(field).type) and \
            not pa.types.is_large_string(pf.schema_arrow.field(field).type):
        raise InputError(where, f"column {field!r} holds {pf.schema_arrow.field(field).type}, not text",
                         f"set `text_field:` to a text column (columns: {names})")
    row = 0
    for batch in pf.iter_batches(columns=[field], batch_size=4096):
        for value in batch.column(0).to_pylist():
            if value is not None:
                yield f"{path}:{row}", value
            row += 1


def _hf(source: SourceSpec, where: str) -> Iterator[tuple[str, Document]]:
    try:
        import datasets
    except ImportError:
        raise InputError(where, "reading a Hugging Face dataset needs the `datasets` library",
                         "pip install datasets, or export the data to JSONL/Parquet") from None
    field = source.text_field or DEFAULT_TEXT_FIELD
    split = source.split or "train"
    target = expand_placeholders(source.target)
    try:
        if Path(target).is_dir() and (Path(target) / "dataset_info.json").is_file():
            ds = datasets.load_from_disk(target)
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[split]
        else:
            ds = datasets.load_dataset(target, source.config, split=split)
    except (FileNotFoundError, KeyError, ValueError, ConnectionError) as e:
        raise InputError(f"{where}: {target}", f"cannot load split {split!r} ({e})",
                         "check the dataset name or folder, `split:` and `config:`") from None
    if field not in ds.column_names:
        raise InputError(f"{where}: {target}", f"no text field {field!r} (columns: {ds.column_names})",
                         "set `text_field:` on this source to the column holding the text")
    for i, value in enumerate(ds[field] if len(ds) < 10_000 else (r[field] for r in ds)):
        text = _text_of(value, field, f"{where}: {target}", f"row {i}", ds.column_names)
        if text is not None:
            yield f"{target}:{split}:{i}", text


def _npy(path: Path, source: SourceSpec, where: str) -> Iterator[tuple[str, Document]]:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(where, f"not a readable .npy array ({e})", "write it with numpy.save") from None
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(where, f"holds a {arr.dtype} array of shape {arr.shape}, not 1-D token ids",
                         "store each tokenized file as one 1-D integer array")
    if source.eos is None:
        yield str(path), arr
        return
    ends = np.flatnonzero(np.asarray(arr) == source.eos)
    start = 0
    for k, end in enumerate([*ends.tolist(), len(arr)]):
        if end > start:
            yield f"{path}:{k}", arr[start:end]
        start = end + 1


#: Megatron-LM's `.idx` dtype codes (megatron/core/datasets/indexed_dataset.py, DType enum).
MEGATRON_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64,
                   7: np.float32, 8: np.uint16}
MEGATRON_MAGIC = b"MMIDIDX\x00\x00"


def read_megatron_index(idx_path: Path, where: str) -> tuple[np.dtype, np.ndarray, np.ndarray, np.ndarray]:
    """Parse a Megatron `.idx`: (token dtype, sequence lengths, sequence byte offsets, document boundaries)."""
    raw = _read_bytes(idx_path, where)
    if raw[:9] != MEGATRON_MAGIC:
        raise InputError(where, "not a Megatron-LM .idx file (bad magic bytes)",
                         "pass the .bin/.idx pair written by Megatron's preprocess_data.py")
    version = int(np.frombuffer(raw, np.uint64, 1, 9)[0])
    code = raw[17]
    if version != 1 or code not in MEGATRON_DTYPES:
        raise InputError(where, f"unsupported .idx version {version} or dtype code {code}",
                         "write it with Megatron-LM's indexed dataset builder (version 1)")
    n_seq, n_doc = (int(x) for x in np.frombuffer(raw, np.uint64, 2, 18))
    off = 34
    sizes = np.frombuffer(raw, np.int32, n_seq, off)
    pointers = np.frombuffer(raw, np.int64, n_seq, off + 4 * n_seq)
    doc_idx = np.frombuffer(raw, np.int64, n_doc, off + 12 * n_seq)
    return np.dtype(MEGATRON_DTYPES[code]), sizes, pointers, doc_idx


def _megatron(bin_path: Path, where: str) -> Iterator[tuple[str, Document]]:
    idx_path = bin_path.with_suffix(".idx")
    here = f"{where}: {idx_path}"
    if not idx_path.is_file() or not bin_path.is_file():
        raise InputError(here, "a Megatron dataset needs both the .bin and the .idx file", "copy the missing one")
    dtype, sizes, pointers, doc_idx = read_megatron_index(idx_path, here)
    if not np.issubdtype(dtype, np.integer):
        raise InputError(here, f"holds {dtype} values, not token ids", "pass a tokenized Megatron dataset")
    tokens = np.memmap(bin_path, dtype=dtype, mode="r")
    for k in range(len(doc_idx) - 1):
        first, last = int(doc_idx[k]), int(doc_idx[k + 1])
        if last <= first:
            continue
        start = int(pointers[first]) // dtype.itemsize
        n = int(sizes[first:last].sum())
        if start + n > len(tokens):
            raise InputError(f"{where}: {bin_path}", f"document {k} runs past the end of the .bin file",
                             "the .bin and .idx do not belong together; rebuild them")
        yield f"{bin_path}:{k}", tokens[start:start + n]


def _docstrings(path: Path, text: str) -> Iterator[tuple[str, Document]]:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= MIN_DOCSTRING_CHARS:
                name = getattr(node, "name", "<module>")
                yield f"{path}:{name}:{getattr(node, 'lineno', 0)}", doc
