"""The data layer on small corpora the tests write: readers, tokenizers, prepare, sampler, discovery, bad input."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import chisquare

from mixopt.data import MixtureSampler, PreparedData, prepare
from mixopt.data.sources import read_source
from mixopt.data.tokenizer import Tokenizer, token_dtype, train_bpe
from mixopt.errors import InputError
from mixopt.spec import DatasetSpec, SourceSpec, load_dataset
from tests.conftest import ROOT, run_cli

WORDS = {
    "prose": "the of and a to in is was he for it with as his on be at by had are but from or have an they which "
             "one you were her all she there would their we him been has when who will more no if out so said",
    "code": "def return self if else for in range import from class lambda yield None True False try except "
            "raise with as assert elif while break continue pass print len dict list",
    "legal": "licensee licensor warranty liability herein thereof pursuant notwithstanding indemnify covenant "
             "agreement jurisdiction provision termination sublicense royalty infringement",
    "cooking": "butter flour sugar whisk simmer oven bake garlic onion saute tablespoon teaspoon pepper salt "
               "knead dough skillet braise marinate chop",
}


def planted_docs(n_per: int = 60, seed: int = 0) -> dict[str, list[str]]:
    """Documents from four clearly different vocabularies (and layouts)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {}
    for name, words in WORDS.items():
        vocab = words.split()
        docs = []
        for i in range(n_per):
            n = int(rng.integers(60, 200))
            body = " ".join(rng.choice(vocab, size=n))
            if name == "code":
                body = "\n    ".join(body[j:j + 60] for j in range(0, len(body), 60))
            docs.append(f"{name} document {i}: {body}")
        out[name] = docs
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def sha_files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def spec_of(domains: dict, **kw) -> DatasetSpec:
    return DatasetSpec.model_validate({"name": "t", "min_val_tokens": 4096, **kw, "domains": domains})


def docs_of(src: dict) -> list:
    return [d for _, d in read_source(SourceSpec.model_validate(src), where="test")]


# ------------------------------------------------------------------------------------------------ readers


def test_jsonl_reader_nested_field_and_gzip(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"meta": {"body": "first"}}, {"meta": {"body": "second"}}])
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write(json.dumps({"meta": {"body": "third"}}) + "\n\n")
    assert docs_of({"jsonl": str(tmp_path / "*.jsonl*"), "text_field": "meta.body"}) == ["first", "second", "third"]


def test_parquet_reader(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [1, 2, 3], "content": ["x y", None, "z"]}), tmp_path / "p.parquet")
    assert docs_of({"parquet": str(tmp_path / "p.parquet"), "text_field": "content"}) == ["x y", "z"]


def test_text_glob_with_exclude_skips_binary(tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "b.txt").write_text("beta")
    (tmp_path / "c.txt").write_bytes(b"\x00\x01binary")
    assert docs_of({"glob": str(tmp_path / "*.txt"), "exclude": [str(tmp_path / "b.txt")]}) == ["alpha"]


def test_npy_reader_splits_at_eos(tmp_path):
    np.save(tmp_path / "t.npy", np.array([5, 6, 0, 7, 0, 0, 8, 9], dtype=np.int32))
    docs = docs_of({"npy": str(tmp_path / "t.npy"), "eos": 0})
    assert [d.tolist() for d in docs] == [[5, 6], [7], [8, 9]]
    assert [d.tolist() for d in docs_of({"npy": str(tmp_path / "t.npy")})] == [[5, 6, 0, 7, 0, 0, 8, 9]]


def write_megatron(prefix: Path, docs: list[list[int]], dtype=np.uint16, code: int = 8) -> None:
    """The Megatron-LM indexed dataset layout, written from its documented format (version 1)."""
    sizes = np.array([len(d) for d in docs], dtype=np.int32)
    pointers = np.concatenate([[0], np.cumsum(sizes[:-1]) * np.dtype(dtype).itemsize]).astype(np.int64)
    doc_idx = np.arange(len(docs) + 1, dtype=np.int64)
    prefix.with_suffix(".bin").write_bytes(np.concatenate([np.asarray(d, dtype) for d in docs]).tobytes())
    with open(prefix.with_suffix(".idx"), "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", code))
        f.write(struct.pack("<Q", len(sizes)) + struct.pack("<Q", len(doc_idx)))
        f.write(sizes.tobytes() + pointers.tobytes() + doc_idx.tobytes())


def test_megatron_reader(tmp_path):
    write_megatron(tmp_path / "corpus_text_document", [[1, 2, 3], [4], [5, 6]])
    for target in ("corpus_text_document", "corpus_text_document.bin", "*.idx"):
        docs = docs_of({"megatron": str(tmp_path / target)})
        assert [d.tolist() for d in docs] == [[1, 2, 3], [4], [5, 6]], target


def test_hf_dataset_reader_from_a_local_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"body": ["one doc", "two doc"]}).save_to_disk(str(tmp_path / "ds"))
    assert docs_of({"hf": str(tmp_path / "ds"), "text_field": "body"}) == ["one doc", "two doc"]
    with pytest.raises(InputError, match="no text field 'text'.*body"):
        docs_of({"hf": str(tmp_path / "ds")})


# ------------------------------------------------------------------------------------------------ tokenizers


@pytest.fixture(scope="module")
def planted_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("planted")
    for name, docs in planted_docs().items():
        write_jsonl(root / f"{name}.jsonl", [{"text": d} for d in docs])
    return root


def planted_spec(root: Path, **kw) -> DatasetSpec:
    return spec_of({n: {"sources": [{"jsonl": str(root / f"{n}.jsonl")}]} for n in WORDS}, **kw)


def decoded_docs(data: PreparedData, domain: str, split: str) -> list[str]:
    tok = data.tokenizer()
    arr = np.asarray(data.load(split)[domain])
    ends = np.flatnonzero(arr == data.eos)
    return [tok.decode(arr[a + 1 if i else 0:b]) for i, (a, b) in enumerate(zip([-1, *ends[:-1]], ends,
                                                                                 strict=True))]


@pytest.mark.parametrize("tokenizer", ["byte", {"kind": "bpe", "vocab_size": 400}, "file"])
def test_tokenizer_round_trip_through_prepare(planted_corpus, tmp_path, tokenizer):
    if tokenizer == "file":
        tok = train_bpe(["héllo wörld ∑ déf return self"] * 3 + [" ".join(WORDS.values())], vocab_size=320)
        (tmp_path / "tokenizer.json").write_text(tok.definition())
        tokenizer = {"kind": "file", "path": str(tmp_path / "tokenizer.json")}
    data = prepare(planted_spec(planted_corpus, tokenizer=tokenizer), tmp_path / "data")
    originals = set(planted_docs()["legal"])
    back = decoded_docs(data, "legal", "train") + decoded_docs(data, "legal", "val")
    assert set(back) == originals and len(back) == len(originals)
    kind = tokenizer if isinstance(tokenizer, str) else tokenizer["kind"]
    assert data.index["tokenizer"]["kind"] == kind
    assert data.load("train")["legal"].dtype == np.uint16
    if kind != "byte":
        assert (data.path / "tokenizer.json").is_file()
        assert data.token_counts["legal"] < 0.8 * sum(len(d) for d in originals)  # BPE merges frequent words


def test_bpe_training_is_deterministic():
    texts = [d for docs in planted_docs().values() for d in docs]
    assert train_bpe(texts, 500).definition() == train_bpe(texts, 500).definition()


def test_large_vocabulary_tokens_are_uint32(planted_corpus, tmp_path):
    from tokenizers import Tokenizer as HFTok
    from tokenizers import models, pre_tokenizers

    vocab = {"<unk>": 0, "</s>": 1, **{w: i + 2 for i, w in enumerate(sorted({w for ws in WORDS.values()
                                                                                for w in ws.split()}))}}
    vocab.update({f"pad{i}": len(vocab) + i for i in range(70_000)})
    tok = HFTok(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "big.json"))
    data = prepare(planted_spec(planted_corpus, tokenizer=str(tmp_path / "big.json")), tmp_path / "data")
    assert data.vocab_size > 65535 and data.load("train")["prose"].dtype == np.uint32
    assert token_dtype(65535) == np.uint16 and token_dtype(65536) == np.uint32


def test_prepared_data_refuses_another_tokenizer(planted_corpus, tmp_path):
    data = prepare(planted_spec(planted_corpus), tmp_path / "data")
    data.check_tokenizer(Tokenizer().record())
    other = train_bpe(["some text to train on"] * 5, 300).record()
    with pytest.raises(InputError, match="prepared with tokenizer byte"):
        data.check_tokenizer(other)


def test_pretokenized_sources_are_packed_and_checked(tmp_path):
    write_megatron(tmp_path / "m", [list(range(1, 200))] * 2 + [[k] * 1000 for k in range(1, 11)])
    rng = np.random.default_rng(0)
    np.save(tmp_path / "n.npy", np.concatenate([[*rng.integers(1, 257, 299), 0] for _ in range(20)]))
    spec = spec_of({"meg": {"sources": [{"megatron": str(tmp_path / "m")}]},
                    "arr": {"sources": [{"npy": str(tmp_path / "n.npy"), "eos": 0}]}}, min_val_tokens=10)
    data = prepare(spec, tmp_path / "data")
    assert data.index["domains"]["meg"]["source_docs"] == 12 and data.index["domains"]["meg"]["distinct_docs"] == 11
    assert data.token_counts["arr"] + data.index["domains"]["arr"]["val_tokens"] == 6000
    np.save(tmp_path / "n.npy", np.array([5, 300, 6, 0] * 1500, dtype=np.int64))
    with pytest.raises(InputError, match="domains.arr.*id 300 ≥ the tokenizer's vocabulary"):
        prepare(spec, tmp_path / "data2")
    assert not (tmp_path / "data2").exists() or not any((tmp_path / "data2").iterdir())


# ------------------------------------------------------------------------------------------------ prepare


def test_prepare_is_idempotent_and_records_hashes(planted_corpus, tmp_path):
    spec = planted_spec(planted_corpus)
    a = prepare(spec, tmp_path / "data")
    stamps = {p.name: p.stat().st_mtime_ns for p in a.path.iterdir()}
    b = prepare(spec, tmp_path / "data")
    assert b.path == a.path and {p.name: p.stat().st_mtime_ns for p in b.path.iterdir()} == stamps
    for d, info in a.index["domains"].items():
        for split in ("train", "val"):
            f = info["files"][split]
            assert hashlib.sha256((a.path / f["file"]).read_bytes()).hexdigest() == f["sha256"], (d, split)
    (planted_corpus / "prose.jsonl").touch()  # a changed input means a new version
    os.utime(planted_corpus / "prose.jsonl", ns=(1, 1))
    assert prepare(spec, tmp_path / "data").path != a.path


def test_duplicates_kept_once_and_split_is_by_document(tmp_path):
    docs = [{"text": f"doc {i} " + "words " * 300} for i in range(40)]
    write_jsonl(tmp_path / "a.jsonl", docs + docs[:10])
    write_jsonl(tmp_path / "b.jsonl", [{"text": f"other {i} " + "zz " * 300} for i in range(40)])
    spec = spec_of({"a": {"sources": [{"jsonl": str(tmp_path / "a.jsonl")}], "val_fraction": 0.2},
                    "b": {"sources": [{"jsonl": str(tmp_path / "b.jsonl")}], "max_docs": 30}})
    data = prepare(spec, tmp_path / "data")
    a = data.index["domains"]["a"]
    assert a["source_docs"] == 50 and a["distinct_docs"] == 40 and a["train_docs"] + a["val_docs"] == 40
    assert data.index["domains"]["b"]["train_docs"] + data.index["domains"]["b"]["val_docs"] == 30
    train, val = set(decoded_docs(data, "a", "train")), set(decoded_docs(data, "a", "val"))
    assert not train & val and len(train | val) == 40


KILL_SCRIPT = """
import os, sys, time
from pathlib import Path
from mixopt.data import prepare
from mixopt.spec import load_dataset

def slow(domain, phase, done, total):
    if phase == "tokenize":
        Path(sys.argv[3]).touch()
        time.sleep(60)  # the parent kills us here, mid-way through writing a domain

prepare(load_dataset(sys.argv[1]), sys.argv[2], on_progress=slow)
"""


def test_prepare_killed_midway_then_rerun_gives_identical_output(planted_corpus, tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({"name": "k", "min_val_tokens": 1024, "roots": [str(planted_corpus)],
                                        "domains": {n: {"sources": [{"jsonl": str(planted_corpus / f"{n}.jsonl")}]}
                                                    for n in WORDS}}))
    started = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(manifest), str(tmp_path / "data"), str(started)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 60
    while not started.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert started.exists(), "prepare never reached tokenization"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = list((tmp_path / "data").iterdir())
    assert left and all(p.name.endswith(".partial") for p in left)  # nothing that looks complete
    assert not any((p / "index.json").exists() for p in left)
    spec = load_dataset(manifest)
    again = prepare(spec, tmp_path / "data")
    assert [p.name for p in (tmp_path / "data").iterdir()] == [again.path.name]  # the dead partial is gone
    clean = prepare(spec, tmp_path / "clean")
    assert sha_files(again.path) == sha_files(clean.path)


# ------------------------------------------------------------------------------------------------ sampler


def test_sampler_proportions_chi_square_and_zero_weights_never_read():
    rng = np.random.default_rng(0)
    train = {d: rng.integers(0, 257, size=50_000).astype(np.uint16) for d in ("a", "b", "c")}
    train["never"] = np.zeros(0, dtype=np.uint16)  # would fail any read: too short for one sequence
    w = {"a": 0.6, "b": 0.3, "c": 0.1, "never": 0.0}
    s = MixtureSampler(train, w, seq_len=32, batch_size=64, seed=3)
    for _ in range(50):
        x, y = s.batch()
    assert x.shape == (64, 32) and (x[:, 1:] == y[:, :-1]).all()
    assert set(s.tokens_read) == {"a", "b", "c"}
    seen = np.array([s.tokens_read[d] / 32 for d in "abc"])
    assert seen.sum() == 64 * 50
    assert chisquare(seen, seen.sum() * np.array([0.6, 0.3, 0.1])).pvalue > 0.01
    assert s.epochs["a"] == pytest.approx(s.tokens_read["a"] / 50_000)
    again = MixtureSampler(train, w, 32, 64, 3)
    assert all((again.batch()[0] == MixtureSampler(train, w, 32, 64, 3).batch()[0]).all() for _ in range(1))


def test_sampler_refuses_unknown_domains_and_short_domains():
    train = {"a": np.arange(1000, dtype=np.uint16), "tiny": np.arange(10, dtype=np.uint16)}
    with pytest.raises(InputError, match="'rust'"):
        MixtureSampler(train, {"a": 0.5, "rust": 0.5}, 16, 4, 0)
    with pytest.raises(InputError, match="domain tiny.*fewer than one sequence"):
        MixtureSampler(train, {"a": 0.5, "tiny": 0.5}, 16, 4, 0)


# ------------------------------------------------------------------------------------------------ discovery


def test_discovery_recovers_planted_domains(planted_corpus, tmp_path):
    from sklearn.metrics import adjusted_rand_score

    from mixopt.data.discover import discover

    # One domain holding all four kinds of text: discovery must find them again.
    mixed = spec_of({"all": {"sources": [{"jsonl": str(planted_corpus / f"{n}.jsonl")} for n in WORDS]},
                     "spare": {"sources": [{"jsonl": str(planted_corpus / "prose.jsonl")}], "max_docs": 1}})
    truth = [n for n in WORDS for _ in planted_docs()[n]]
    d = discover(mixed, k=12, out=tmp_path / "out" / "found.yaml", seed=1)
    assert len(d.clusters) == 4
    found, kinds = [], []  # (cluster, planted kind) of every document, read back from the written clusters
    for c in range(len(d.clusters)):
        for line in (tmp_path / "out" / "found" / f"cluster_{c:02d}.jsonl").read_text().splitlines():
            found.append(c)
            kinds.append(json.loads(line)["text"].split(" document ")[0])
    assert sorted(kinds) == sorted(truth + ["prose"])
    assert adjusted_rand_score(kinds, found) >= 0.9
    legal = next(c for c in d.clusters if "licensee" in c.top_terms or "warranty" in c.top_terms)
    assert legal.documents == 60 and legal.examples
    again = discover(mixed, k=12, out=tmp_path / "out2" / "found.yaml", seed=1)
    assert (again.labels == d.labels).all()
    new = load_dataset(tmp_path / "out" / "found.yaml")
    assert len(new.domains) == 4 and new.domains["cluster_00"].discovered is not None
    data = prepare(new, tmp_path / "data")
    # 240: the one document in both input domains lands twice in one cluster and is kept once
    assert sum(v["train_docs"] + v["val_docs"] for v in data.index["domains"].values()) == 240


def test_discovery_clusters_pieces_of_long_files(tmp_path):
    """Two manuals, each one file holding two kinds of text, are two documents: whole, discovery can find two
    clusters at most; cut into pieces of at most `chunk_chars`, their parts fall into four clusters by kind."""
    from mixopt.data.discover import chunk, discover

    docs, kinds = planted_docs(n_per=20), list(WORDS)
    for i, part in enumerate((kinds[:2], kinds[2:])):
        (tmp_path / f"manual{i}.txt").write_text("\n".join(d for n in part for d in docs[n]) + "\n")
    spec = spec_of({f"manual{i}": {"sources": [{"glob": str(tmp_path / f"manual{i}.txt"), "documents": "file"}]}
                    for i in range(2)})
    whole = discover(spec, k=8, out=tmp_path / "whole" / "found.yaml", seed=0, chunk_chars=0, final_k=4)
    assert len(whole.labels) == 2 and len(whole.clusters) == 2
    d = discover(spec, k=12, out=tmp_path / "out" / "found.yaml", seed=0, chunk_chars=2000, final_k=4)
    assert len(d.clusters) == 4 and len(d.labels) >= 30  # ~100 KB in pieces of ≤ 2,000 characters
    kind_bytes = np.zeros((4, len(WORDS)))
    for c in range(4):
        for line in (tmp_path / "out" / "found" / f"cluster_{c:02d}.jsonl").read_text().splitlines():
            kind = None  # a piece may start inside a document (a code document's continuation line)
            for row in json.loads(line)["text"].splitlines():
                head = row.split(" document ")[0]
                kind = kinds.index(head) if head in kinds else kind
                if kind is not None:
                    kind_bytes[c, kind] += len(row) + 1
    assert kind_bytes.max(axis=1).sum() / kind_bytes.sum() >= 0.9  # each cluster is mostly one kind, by bytes
    assert sorted(kind_bytes.argmax(axis=1).tolist()) == [0, 1, 2, 3]
    assert sum(c.bytes for c in d.clusters) == sum((tmp_path / f"manual{i}.txt").stat().st_size for i in range(2))
    assert all(sum(c.origin_bytes.values()) == c.bytes and max(c.origin_bytes.values()) >= 0.9 * c.bytes
               for c in d.clusters)
    text = "line one\nline two is longer\n" * 50
    pieces = chunk(text, 100)
    assert "".join(pieces) == text and max(map(len, pieces)) <= 100 and all(p.endswith("\n") for p in pieces)
    assert chunk(text, 0) == [text] and chunk("x" * 250, 100) == ["x" * 100, "x" * 100, "x" * 50]


@pytest.mark.slow
def test_cli_discover_and_prepare(planted_corpus, tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({"name": "p", "min_val_tokens": 1024, "domains": {
        "all": {"sources": [{"jsonl": f"c/{n}.jsonl"} for n in WORDS]},
        "prose": {"sources": [{"jsonl": "c/prose.jsonl"}]}}}))
    (tmp_path / "c").mkdir()
    for n in WORDS:
        (tmp_path / "c" / f"{n}.jsonl").write_bytes((planted_corpus / f"{n}.jsonl").read_bytes())
    r = run_cli("data", "discover", str(manifest), "--k", "8", "--out", str(tmp_path / "found.yaml"))
    assert r.returncode == 0, r.stderr
    assert "4 domains" in r.stdout and (tmp_path / "found.yaml").is_file()
    r = run_cli("data", "prepare", str(tmp_path / "found.yaml"), "--workdir", str(tmp_path / "w"))
    assert r.returncode == 0, r.stderr
    assert "cluster_03" in r.stdout


# ------------------------------------------------------------------------------------------------ bad input


def assert_nothing_written(root: Path) -> None:
    assert not root.exists() or list(root.iterdir()) == []


@pytest.mark.parametrize("case", ["empty", "wrong_field", "parquet_column", "mixed_encoding", "corrupt_gz",
                                  "bad_json", "too_small"])
def test_bad_input_names_domain_and_file(tmp_path, case):
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": f"fine {i} " + "text " * 400} for i in range(20)])
    bad = tmp_path / "bad.jsonl"
    src: dict = {"jsonl": str(bad)}
    if case == "empty":
        write_jsonl(bad, [{"text": "   "}, {"text": ""}])
        match = "domains.broken.*no documents"
    elif case == "wrong_field":
        write_jsonl(bad, [{"content": "x"}])
        match = "domains.broken.*bad.jsonl.*line 1: no text field 'text'.*content"
    elif case == "parquet_column":
        import pyarrow as pa
        import pyarrow.parquet as pq

        bad = tmp_path / "bad.parquet"
        pq.write_table(pa.table({"body": ["x"]}), bad)
        src = {"parquet": str(bad)}
        match = "domains.broken.*bad.parquet.*no column 'text'.*body"
    elif case == "mixed_encoding":
        bad = tmp_path / "bad.txt"
        bad.write_bytes("café ".encode() + "naïve".encode("latin-1"))
        src = {"glob": str(bad)}
        match = "domains.broken.*bad.txt.*not valid utf-8.*mixed encodings"
    elif case == "corrupt_gz":
        bad = tmp_path / "bad.jsonl.gz"
        bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
        src = {"jsonl": str(bad)}
        match = "domains.broken.*bad.jsonl.gz.*unreadable"
    elif case == "bad_json":
        bad.write_text('{"text": "ok"}\n{"text": oops}\n')
        match = "domains.broken.*bad.jsonl.*line 2: not valid JSON"
    else:
        write_jsonl(bad, [{"text": "short"}])
        match = "domains.broken.*bad.jsonl.*only \\d+ train tokens"
    spec = spec_of({"fine": {"sources": [{"jsonl": str(good)}]}, "broken": {"sources": [src]}})
    with pytest.raises(InputError, match=match):
        prepare(spec, tmp_path / "data")
    assert_nothing_written(tmp_path / "data")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(tmp_path):
    f = tmp_path / "locked.txt"
    f.write_text("secret")
    f.chmod(0)
    with pytest.raises(InputError, match="locked.txt.*unreadable"):
        docs_of({"glob": str(f)})


def test_sequence_longer_than_a_domain_is_refused(planted_corpus, tmp_path):
    data = prepare(planted_spec(planted_corpus), tmp_path / "data")
    data.check_seq_len(128)
    with pytest.raises(InputError, match=r"domain \w+: .*\.(train|val)\.npy.*fewer than one sequence"):
        data.check_seq_len(10_000_000)


def test_manifest_paths_must_stay_under_allowed_roots(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "a.txt").write_text("x")
    (tmp_path / "m").mkdir()
    m = tmp_path / "m" / "d.yaml"
    doms = {"a": {"sources": [{"glob": "../outside/*.txt"}]}, "b": {"sources": [{"glob": "*.txt"}]}}
    m.write_text(yaml.safe_dump({"name": "r", "domains": doms}))
    with pytest.raises(InputError, match=r"d.yaml: domains.a.sources\[0\].glob.*leaves the folders"):
        load_dataset(m)
    m.write_text(yaml.safe_dump({"name": "r", "roots": ["../outside"], "domains": doms}))
    assert load_dataset(m).domains["a"].sources[0].glob == str(tmp_path / "outside" / "*.txt")


@pytest.mark.parametrize("bad, words", [
    ({"jsonl": "x.jsonl", "text_feild": "t"}, "text_feild"),
    ({"jsonl": "x.jsonl", "glob": "*.txt"}, "exactly one"),
    ({"glob": "*.txt", "text_field": "t"}, "text_field applies to"),
])
def test_source_typos_are_errors(tmp_path, bad, words):
    m = tmp_path / "d.yaml"
    m.write_text(yaml.safe_dump({"name": "r", "domains": {"a": {"sources": [bad]}, "b": {"sources": [bad]}}}))
    with pytest.raises(InputError, match=words):
        load_dataset(m)


def test_cli_prepare_bad_manifest_is_one_line_exit_2(tmp_path):
    write_jsonl(tmp_path / "x.jsonl", [{"body": "x"}])
    m = tmp_path / "d.yaml"
    m.write_text(yaml.safe_dump({"name": "r", "domains": {"a": {"sources": [{"jsonl": "x.jsonl"}]},
                                                          "b": {"sources": [{"jsonl": "x.jsonl"}]}}}))
    r = run_cli("data", "prepare", str(m), "--workdir", str(tmp_path / "w"))
    assert r.returncode == 2
    err = " ".join(r.stderr.split())
    assert "domains.a.sources[0]" in err and "x.jsonl" in err and "no text field 'text'" in err and "fix:" in err
    assert_nothing_written(tmp_path / "w" / "data")


@pytest.mark.slow
def test_a_jobs_copy_of_the_spec_reuses_the_prepared_data(tmp_path):
    """Resume reads the spec from the job folder, which adds that folder to the dataset's `roots`: the same
    files must map to the same prepared folder, not a second copy under a new fingerprint."""
    from mixopt.data.prepare import fingerprint
    from mixopt.spec import SearchSpec
    from tests.conftest import ROOT

    spec = SearchSpec.from_yaml(ROOT / "search" / "demo.yaml")
    (tmp_path / "spec.yaml").write_text(spec.to_yaml())
    again = SearchSpec.from_yaml(tmp_path / "spec.yaml")
    assert again.dataset.roots != spec.dataset.roots  # the copy may read from its own folder too
    assert fingerprint(again.dataset) == fingerprint(spec.dataset)
    described = spec.dataset.model_copy(update={"domains": {
        n: d.model_copy(update={"description": "notes"}) for n, d in spec.dataset.domains.items()}})
    assert fingerprint(described) == fingerprint(spec.dataset)
    fewer = spec.dataset.model_copy(update={"val_fraction": 0.1})
    assert fingerprint(fewer) != fingerprint(spec.dataset)  # what changes the arrays still moves it


# ------------------------------------------------------------------------------ text files as documents


def one_big_file(path: Path, paragraphs: int = 400, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    words = WORDS["prose"].split()
    path.write_text("\n\n".join(" ".join(rng.choice(words, size=int(rng.integers(20, 80))))
                                for _ in range(paragraphs)) + "\n")
    return path


def test_a_domain_of_one_large_text_file_prepares_by_default(tmp_path):
    """A plain-text file used to be one document, so a domain of one file could not be split into train and
    validation; with `documents: auto` a source of few files is split at paragraphs, joined up to a size."""
    big = one_big_file(tmp_path / "book.txt")
    other = one_big_file(tmp_path / "other.txt", seed=2)
    spec = spec_of({"book": {"sources": [{"glob": str(big)}]},
                    "other": {"sources": [{"glob": str(other), "max_document_bytes": 4096}]}})
    data = prepare(spec, tmp_path / "data")
    book, oth = data.index["domains"]["book"], data.index["domains"]["other"]
    assert book["text_files"] == 1 and book["split_files"] == {str(big): book["source_docs"]}
    assert book["source_docs"] >= 2 and oth["source_docs"] > big.stat().st_size // 4096
    for dom in ("book", "other"):
        text = "\n\n".join(decoded_docs(data, dom, "train") + decoded_docs(data, dom, "val"))
        assert sorted(text.split()) == sorted((tmp_path / f"{dom}.txt").read_text().split()) if dom == "other" \
            else len(text.split()) == len(big.read_text().split())  # nothing lost, nothing added
    assert all(len(d.encode()) <= 4096 for d in decoded_docs(data, "other", "train"))
    assert data.index["domains"]["other"]["val_docs"] >= 1


def test_a_domain_of_few_files_is_cut_into_about_400_documents_per_file(tmp_path):
    """Joined up to 64 KB, a 1 MB file gave 16 documents and its validation split one: in a domain of fewer than
    32 files, `auto` joins paragraphs into documents of about 1/400 of the file, so validation gets ~20 of them
    and holds about `val_fraction` of the text. A domain of many files keeps its documents (and its data's
    name: the fingerprint marks only the domains the rule applies to)."""
    from mixopt.data.prepare import few_text_files, fingerprint

    big = one_big_file(tmp_path / "book.txt", paragraphs=3000)
    many = tmp_path / "many"
    many.mkdir()
    for i in range(40):
        one_big_file(many / f"{i:02d}.txt", paragraphs=20, seed=10 + i)
    spec = spec_of({"book": {"sources": [{"glob": str(big)}]}, "many": {"sources": [{"glob": str(many / "*")}]}},
                   min_val_tokens=1024)
    assert few_text_files(spec.domains["book"]) and not few_text_files(spec.domains["many"])
    data = prepare(spec, tmp_path / "data")
    book, mny = data.index["domains"]["book"], data.index["domains"]["many"]
    assert 300 <= book["source_docs"] <= 500
    assert book["val_docs"] >= 10 and 0.02 < book["val_tokens"] / (book["train_tokens"] + book["val_tokens"]) < 0.1
    assert mny["source_docs"] == 40  # one document per file, as before
    explicit = spec_of({"book": {"sources": [{"glob": str(big), "documents": "paragraphs"}]},
                        "many": {"sources": [{"glob": str(many / "*")}]}}, min_val_tokens=1024)
    assert len(docs_of({"glob": str(big), "documents": "paragraphs"})) == math.ceil(big.stat().st_size / 65_536)
    assert fingerprint(explicit) != fingerprint(spec)
    without = spec_of({"many": {"sources": [{"glob": str(many / "*")}]},
                       "more": {"sources": [{"glob": str(many / "*")}]}})
    assert not any(few_text_files(d) for d in without.domains.values())


def test_documents_modes_file_lines_and_separator(tmp_path):
    f = tmp_path / "quotes.txt"
    f.write_text("first quote\n  -- someone\n%\nsecond quote\n%\n\nthird\n")
    assert docs_of({"glob": str(f), "documents": "file"}) == [f.read_text()]
    assert docs_of({"glob": str(f), "documents": "lines"}) == ["first quote", "  -- someone", "%",
                                                              "second quote", "%", "third"]
    assert docs_of({"glob": str(f), "documents": r"^%$"}) == ["first quote\n  -- someone", "second quote",
                                                             "third"]
    many = tmp_path / "many"
    many.mkdir()
    for i in range(40):  # a source of many files keeps one document per file under `auto`
        (many / f"{i:02d}.txt").write_text(f"part one {i}\n\npart two {i}\n")
    assert len(docs_of({"glob": str(many / "*.txt")})) == 40
    assert len(docs_of({"glob": str(many / "*.txt"), "documents": "paragraphs", "max_document_bytes": 64})) == 40


@pytest.mark.parametrize("bad, words", [
    ({"glob": "x", "documents": "(unclosed"}, "valid regular expression"),
    ({"jsonl": "x", "documents": "lines"}, "documents applies to glob"),
    ({"glob": "x", "max_document_bytes": 10}, "max_document_bytes"),
])
def test_bad_documents_settings_are_refused(bad, words):
    with pytest.raises(ValueError, match=words):
        SourceSpec.model_validate(bad)


def test_binary_files_are_named_and_a_domain_of_them_says_so(tmp_path, caplog):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    one_big_file(mixed / "a.txt", seed=3)
    (mixed / "b.bin").write_bytes(b"\x00\x01" * 100)
    (mixed / "c.bin").write_bytes(b"\x00\x02" * 100)
    other = {"sources": [{"glob": str(one_big_file(tmp_path / "other.txt"))}]}
    spec = spec_of({"mixed": {"sources": [{"glob": str(mixed / "*")}]}, "other": other}, min_val_tokens=100)
    with caplog.at_level("WARNING"):
        data = prepare(spec, tmp_path / "data")
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 2 file(s) as binary" in msg and "b.bin" in msg and "c.bin" in msg
    assert data.index["domains"]["mixed"]["binary_skipped"] == [str(mixed / "b.bin"), str(mixed / "c.bin")]
    only = spec_of({"bin": {"sources": [{"glob": str(mixed / "*.bin")}]}, "other": other})
    with pytest.raises(InputError, match="skipped as binary"):
        prepare(only, tmp_path / "data2")


def test_a_validation_split_far_from_val_fraction_is_warned(tmp_path, caplog):
    d = tmp_path / "d"
    d.mkdir()
    (d / "big.txt").write_text("word " * 20_000)  # one paragraph: a single document however it is split
    (d / "small.txt").write_text("tiny text " * 1000)
    other = {"sources": [{"glob": str(one_big_file(tmp_path / "other.txt"))}]}
    spec = spec_of({"d": {"sources": [{"glob": str(d / "*.txt"), "documents": "paragraphs"}]}, "other": other},
                   min_val_tokens=4096)
    with caplog.at_level("WARNING"):
        prepare(spec, tmp_path / "data")
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "domains.d: validation holds" in msg and "from 1 document(s)" in msg


def test_a_validation_split_of_few_documents_is_warned_though_its_share_is_right(tmp_path, caplog):
    """40 files kept whole: validation takes about `val_fraction` of the bytes, but from two or three documents,
    so the domain's validation loss rests on them; the warning says so and how to split the files."""
    many = tmp_path / "many"
    many.mkdir()
    for i in range(40):
        one_big_file(many / f"{i:02d}.txt", paragraphs=20, seed=10 + i)
    other = {"sources": [{"glob": str(one_big_file(tmp_path / "other.txt"))}]}
    spec = spec_of({"many": {"sources": [{"glob": str(many / "*.txt")}]}, "other": other}, min_val_tokens=256)
    with caplog.at_level("WARNING"):
        data = prepare(spec, tmp_path / "data")
    m = data.index["domains"]["many"]
    assert 1 <= m["val_docs"] < 10 and m["val_tokens"] / (m["train_tokens"] + m["val_tokens"]) < 0.15
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "domains.many: validation holds" in msg and "documents: paragraphs" in msg
