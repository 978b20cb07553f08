"""Tokenizers: byte-level, a BPE trained here on the corpus, or a local `tokenizer.json`.

The prepared data records its tokenizer (kind, vocabulary size, end-of-document id and a hash of its
definition) and keeps a copy of it, so token arrays are never read with a different tokenizer than the one
that wrote them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mixopt.errors import InputError

BYTE_EOS = 256
BYTE_VOCAB = 257  # 256 byte values + EOS
DEFAULT_BPE_VOCAB = 8192
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "[SEP]")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while ids fit (half the disk and memory), uint32 beyond."""
    return np.dtype(np.uint16 if vocab_size <= 65535 else np.uint32)


class Tokenizer:
    """Byte-level tokenizer; the base of the others. Encodes many documents at once (the hot path)."""

    kind = "byte"

    def __init__(self) -> None:
        self.vocab_size = BYTE_VOCAB
        self.eos = BYTE_EOS

    def encode_batch(self, docs: list[bytes]) -> list[np.ndarray]:
        """UTF-8 documents → token ids (without EOS)."""
        return [np.frombuffer(d, dtype=np.uint8) for d in docs]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")

    def definition(self) -> str:
        return "byte"

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "eos": self.eos,
                "sha256": hashlib.sha256(self.definition().encode()).hexdigest()}

    def save(self, folder: Path) -> None:
        """Byte tokenizers need no file."""


class HFTokenizer(Tokenizer):
    """A Hugging Face `tokenizers` tokenizer (trained BPE or loaded from a tokenizer.json)."""

    def __init__(self, tok: Any, eos: int, kind: str) -> None:
        self.tok = tok
        self.kind = kind
        self.eos = eos
        self.vocab_size = int(tok.get_vocab_size(with_added_tokens=True))

    def encode_batch(self, docs: list[bytes]) -> list[np.ndarray]:
        # encode_batch runs on all cores (Rust threads): the parallel part of prepare.
        texts = [d.decode("utf-8") for d in docs]
        return [np.asarray(e.ids, dtype=np.int64) for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return str(self.tok.decode([int(i) for i in ids], skip_special_tokens=False))

    def definition(self) -> str:
        return str(self.tok.to_str())

    def save(self, folder: Path) -> None:
        (folder / "tokenizer.json").write_text(self.definition())


def train_bpe(texts: Iterable[str], vocab_size: int = DEFAULT_BPE_VOCAB) -> HFTokenizer:
    """Byte-level BPE (GPT-2 style pre-tokenization) with `<|endoftext|>` as id 0. Deterministic for the same
    texts in the same order."""
    from tokenizers import Tokenizer as _Tok
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = _Tok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return HFTokenizer(tok, eos=int(tok.token_to_id("<|endoftext|>")), kind="bpe")


def load_tokenizer_file(path: str | Path, eos_token: str | None = None, where: str = "tokenizer") -> HFTokenizer:
    from tokenizers import Tokenizer as _Tok

    path = Path(path)
    try:
        tok = _Tok.from_str(path.read_text())
    except OSError as e:
        raise InputError(f"{where}: {path}", f"unreadable tokenizer file ({e.strerror})",
                         "check the path of `tokenizer.path`") from None
    except Exception as e:  # tokenizers raises plain Exceptions on malformed JSON
        raise InputError(f"{where}: {path}", f"not a Hugging Face tokenizer.json ({e})",
                         "save it with `Tokenizer.save` or `save_pretrained`") from None
    names = [eos_token] if eos_token else list(EOS_CANDIDATES)
    for name in names:
        tid = tok.token_to_id(name)
        if tid is not None:
            return HFTokenizer(tok, eos=int(tid), kind="file")
    raise InputError(f"{where}: {path}", f"the tokenizer has no end-of-document token ({', '.join(names)})",
                     "set `tokenizer.eos_token` to the token that ends a document")


def from_record(record: dict[str, Any], folder: Path) -> Tokenizer:
    """The tokenizer prepared data was written with (for decoding and for checks)."""
    if record["kind"] == "byte":
        return Tokenizer()
    from tokenizers import Tokenizer as _Tok

    tok = _Tok.from_file(str(folder / "tokenizer.json"))
    return HFTokenizer(tok, eos=int(record["eos"]), kind=record["kind"])


def same_tokenizer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("kind", "vocab_size", "eos", "sha256"))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

