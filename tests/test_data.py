"""The demo corpus, its preparation, and the mixture sampler."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from mixopt.data import MixtureSampler, prepare, validation_windows
from mixopt.data.prepare import EOS
from mixopt.errors import InputError
from mixopt.spec import DatasetSpec
from tests.conftest import DEMO_DOMAINS


def test_demo_corpus_has_seven_real_domains(prepared):
    assert prepared.domains == DEMO_DOMAINS
    counts = prepared.token_counts
    assert all(c > 200_000 for c in counts.values()), counts
    assert sum(counts.values()) + sum(v["val_tokens"] for v in prepared.index["domains"].values()) > 20_000_000
    train = prepared.load("train")
    text = {d: bytes(np.asarray(a[:200_000])[np.asarray(a[:200_000]) < 256].astype(np.uint8)).decode("utf-8", "replace")
            for d, a in train.items()}
    assert "def " in text["python"] and ("#define" in text["c_headers"] or "#ifndef" in text["c_headers"])
    assert "namespace" in text["cpp"] and "template" in text["cpp"]
    assert "licen" in text["licenses"].lower() and " the " in text["prose"]
    assert "Metadata-Version" in text["package_docs"] or "==" in text["package_docs"]
    assert '":' in text["data"] or "," in text["data"]
    for d in prepared.domains:
        assert (train[d] == EOS).sum() >= 1
        assert prepared.index["domains"][d]["val_tokens"] >= 16384


def test_prepare_is_idempotent(prepared, demo_dataset, workdir):
    before = {p.name: p.stat().st_mtime_ns for p in prepared.path.iterdir()}
    again = prepare(demo_dataset, workdir / "data")
    assert again.path == prepared.path
    assert {p.name: p.stat().st_mtime_ns for p in again.path.iterdir()} == before


def test_tiny_domain_is_refused_and_nothing_half_written(tmp_path):
    for i in range(12):
        (tmp_path / f"a{i}.txt").write_text(f"document {i}: " + "hello world " * 1000)
    (tmp_path / "b.txt").write_text("tiny")
    spec = DatasetSpec.model_validate({"name": "x", "min_val_tokens": 4096, "domains": {
        "big": {"sources": [{"glob": str(tmp_path / "a*.txt")}]},
        "small": {"sources": [{"glob": str(tmp_path / "b.txt")}]}}})
    with pytest.raises(InputError, match="domains.small"):
        prepare(spec, tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.parametrize("sampling", ["stratified", "iid"])
def test_sampler_follows_the_mixture_and_skips_zero_weights(prepared, sampling):
    train = prepared.load("train")
    w = {"python": 0.5, "c_headers": 0.3, "prose": 0.2, "licenses": 0.0}
    s = MixtureSampler(train, w, seq_len=16, batch_size=50, seed=0, sampling=sampling)
    for _ in range(40):
        x, y = s.batch()
    assert x.shape == (50, 16) and (x[:, 1:] == y[:, :-1]).all()
    assert "licenses" not in s.tokens_read
    seen = np.array([s.tokens_read[d] / 16 for d in ("python", "c_headers", "prose")])
    assert chisquare(seen, seen.sum() * np.array([0.5, 0.3, 0.2])).pvalue > 0.01
    s2 = MixtureSampler(train, w, seq_len=16, batch_size=50, seed=0, sampling=sampling)
    assert (s2.batch()[0] == MixtureSampler(train, w, 16, 50, 0, sampling).batch()[0]).all()


def test_stratified_shares_are_exact_at_every_step_and_rare_domains_are_spread(prepared):
    train = prepared.load("train")
    w = {"python": 0.61, "c_headers": 0.3, "prose": 0.07, "licenses": 0.02}
    s = MixtureSampler(train, w, seq_len=16, batch_size=16, seed=3)
    counts = {d: 0 for d in w}
    gaps, last = [], None
    for b in range(200):
        s.batch()
        for i, d in enumerate(s.last_domains):
            counts[d] += 1
            if d == "licenses":
                row = b * 16 + i
                if last is not None:
                    gaps.append(row - last)
                last = row
        rows = 16 * (b + 1)
        assert all(abs(counts[d] - w[d] * rows) < 1 + 1e-9 for d in w), (b, counts)
    # one row in 50, give or take its place within a batch of 16: never a burst, never a drought
    assert min(gaps) >= 50 - 16 and max(gaps) <= 50 + 16
    s.set_weights({"python": 0.5, "prose": 0.5})  # a schedule's change: exact from there on
    before = dict(counts)
    for _ in range(10):
        s.batch()
        for d in s.last_domains:
            counts[d] += 1
    assert abs(counts["prose"] - before["prose"] - 80) <= 1 and counts["licenses"] == before["licenses"]


def test_stratified_runs_of_one_seed_read_the_same_windows_of_each_domain(prepared):
    """Common random numbers: two mixtures of one seed see the same sequence of windows per domain, the one
    with more weight further into it, so a paired comparison carries no data-order noise of its own."""
    train = prepared.load("train")
    a = MixtureSampler(train, {"python": 0.8, "prose": 0.2}, 16, 20, seed=9)
    b = MixtureSampler(train, {"python": 0.2, "prose": 0.4, "cpp": 0.4}, 16, 20, seed=9)
    c = MixtureSampler(train, {"python": 0.8, "prose": 0.2}, 16, 20, seed=10)

    def windows(s: MixtureSampler, n: int) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {}
        for _ in range(n):
            x, _ = s.batch()
            for row, d in zip(x.numpy(), s.last_domains, strict=True):
                out.setdefault(d, []).append(row.tobytes())
        return out

    wa, wb, wc = windows(a, 10), windows(b, 10), windows(c, 10)
    for d in ("python", "prose"):
        n = min(len(wa[d]), len(wb[d]))
        assert n >= 20 and wa[d][:n] == wb[d][:n]
        assert wa[d][:n] != wc[d][:n]  # another seed, other windows


def test_validation_windows_are_fixed(prepared):
    val = prepared.load("val")["prose"]
    a, b = validation_windows(val, 64, 8), validation_windows(val, 64, 8)
    assert a.shape == (8, 65) and (a == b).all()


@pytest.mark.slow
def test_data_demo_command(workdir):
    from tests.conftest import run_cli

    res = run_cli("data", "demo", "--workdir", str(workdir))
    assert res.returncode == 0, res.stderr
    assert "package_docs" in res.stdout and "train tokens" in res.stdout
