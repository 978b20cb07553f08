"""Hundreds of malformed specs, manifests and run tables, generated: each ends as one line, exit code 2, no
traceback, and nothing written. The CLI runs in-process (`mixopt.cli.main`, exactly what the console script
calls), with its real stderr captured and its exit code taken from SystemExit."""

from __future__ import annotations

import copy
import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixopt.cli import main

COUNTS: dict[str, int] = {}
SETTINGS = settings(max_examples=70, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
NOT_INT = st.sampled_from([-1, 0, "many", [3], {"n": 1}, 1.5, None, True, "1e99x"])
JUNK_KEY = st.from_regex(r"zz_[a-z]{1,8}", fullmatch=True)


def run_main(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["mixopt", *args]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def check_refused(kind: str, root: Path, *args: str) -> str:
    before = files(root)
    code, out, err = run_main(*args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, f"exit {code} for {kind}; stdout {out[-500:]!r} stderr {err[-1500:]!r}"
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    assert files(root) == before, f"{kind}: something was written: {files(root) - before}"
    COUNTS[kind] = COUNTS.get(kind, 0) + 1
    return lines[0]


# ---------------------------------------------------------------------------------------------- search specs


@pytest.fixture(scope="module")
def base(corpus):
    cmd = [sys.executable, str(corpus / "trainer.py"), "{mixture_json}", "{metrics_json}", "/nonexistent"]
    return {"name": "bad", "dataset": str(corpus / "corpus.yaml"),
            "proxy": {"name": "cmd", "kind": "command", "tokens": 1000, "command": cmd},
            "optimizer": {"name": "random"}, "budget": {"runs": 4}, "parallelism": 2, "seed": 0,
            "include_mixtures": [{"alpha": 0.5, "beta": 0.25, "gamma": 0.25}]}


def _set(d: dict, path: str, value) -> dict:
    d = copy.deepcopy(d)
    *head, last = path.split(".")
    cur = d
    for k in head:
        cur = cur[k]
    cur[last] = value
    return d


@st.composite
def bad_specs(draw, base: dict):
    kind = draw(st.sampled_from(["unknown_key", "bad_int", "bad_choice", "mixture", "optimizer", "objective",
                                 "yaml", "not_mapping", "missing", "proxy"]))
    if kind == "unknown_key":
        where = draw(st.sampled_from(["", "proxy.", "budget.", "optimizer."]))
        spec = copy.deepcopy(base)
        target = spec if not where else spec[where[:-1]]
        target[draw(JUNK_KEY)] = draw(st.integers())
        return yaml.safe_dump(spec)
    if kind == "bad_int":
        field = draw(st.sampled_from(["budget.runs", "parallelism", "max_retries", "proxy.tokens"]))
        value = draw(NOT_INT.filter(lambda v: not (field == "max_retries" and v in (0, False))
                                    and not (field != "max_retries" and v is True)))
        if field == "max_retries" and value is True:
            value = -3
        return yaml.safe_dump(_set(base, field, value))
    if kind == "bad_choice":
        field = draw(st.sampled_from(["scheduling", "proxy.kind", "proxy.timeout_s", "seed", "name"]))
        value = {"scheduling": draw(st.text(min_size=1, max_size=8).filter(lambda s: s not in ("async", "rounds"))),
                 "proxy.kind": draw(st.sampled_from(["gpt", "", "Command", 3])),
                 "proxy.timeout_s": draw(st.sampled_from([0, -1, "soon", [1]])),
                 "seed": draw(st.sampled_from(["x", [1], {"a": 1}, 1.5])),
                 "name": draw(st.sampled_from(["has space", "slash/name", "", "ü?"]))}[field]
        return yaml.safe_dump(_set(base, field, value))
    if kind == "mixture":
        how = draw(st.sampled_from(["sum", "unknown", "negative", "nan"]))
        w = {"alpha": 0.5, "beta": 0.25, "gamma": 0.25}
        if how == "sum":
            w = {d: v * draw(st.sampled_from([0.5, 0.9, 1.1, 3.0])) for d, v in w.items()}
        elif how == "unknown":
            w = {**w, draw(st.sampled_from(["delta", "Alpha", "web"])): 0.0}
        elif how == "negative":
            w = {"alpha": 1.25, "beta": -0.25, "gamma": 0.0}
        else:
            w = {"alpha": float("nan"), "beta": 0.5, "gamma": 0.5}
        return yaml.safe_dump(_set(base, "include_mixtures", [w]))
    if kind == "optimizer":
        if draw(st.booleans()):
            return yaml.safe_dump(_set(base, "optimizer", {"name": draw(JUNK_KEY)}))
        return yaml.safe_dump(_set(base, "optimizer", {"name": "regmix", draw(JUNK_KEY): 1}))
    if kind == "objective":
        return yaml.safe_dump(_set(base, "objective", {"metrics": [draw(st.sampled_from(
            ["alpha", "loss_delta", "acc_alpha", "loss_"]))]}))
    if kind == "yaml":
        text = yaml.safe_dump(base)
        return text + draw(st.sampled_from(["bad: [unclosed\n", "  - :\n - x\n", "budget: {runs: 4\n",
                                            "\t\tparallelism: 3\n"]))
    if kind == "not_mapping":
        return draw(st.sampled_from(["- a\n- b\n", "just a string\n", "42\n", "[]\n"]))
    if kind == "missing":
        spec = copy.deepcopy(base)
        which = draw(st.sampled_from(["dataset", "dataset_path", "proxy_path"]))
        if which == "dataset":
            del spec["dataset"]
        elif which == "dataset_path":
            spec["dataset"] = "no/such/manifest.yaml"
        else:
            spec["proxy"] = "no/such/proxy.yaml"
        return yaml.safe_dump(spec)
    # proxy: inconsistent model shapes or a command proxy without a command
    bad = draw(st.sampled_from([{"kind": "dense", "command": ["x"]}, {"kind": "command", "command": None},
                                {"kind": "dense", "d_model": 30, "n_head": 4, "command": None},
                                {"kind": "moe", "top_k": 9, "n_experts": 4, "command": None}]))
    return yaml.safe_dump(_set(base, "proxy", {**base["proxy"], **bad}))


def test_malformed_search_specs(tmp_path_factory, base, corpus):
    root = tmp_path_factory.mktemp("specs")
    wd = root / "wd"

    @SETTINGS
    @given(text=bad_specs(base))
    def check(text: str) -> None:
        path = root / "spec.yaml"
        path.write_text(text)
        check_refused("search spec", root, "submit", str(path), "--workdir", str(wd))

    check()
    assert not wd.exists()


# ---------------------------------------------------------------------------------------------- manifests


@st.composite
def bad_manifests(draw, corpus: Path):
    good = yaml.safe_load((corpus / "corpus.yaml").read_text())
    m = copy.deepcopy(good)
    kind = draw(st.sampled_from(["unknown_key", "one_domain", "domain_name", "source_kinds", "fraction",
                                 "tokenizer", "placeholder", "escape", "encoding", "empty_sources"]))
    if kind == "unknown_key":
        where = draw(st.sampled_from(["top", "domain", "source"]))
        target = m if where == "top" else m["domains"]["alpha"] if where == "domain" else \
            m["domains"]["alpha"]["sources"][0]
        target[draw(JUNK_KEY)] = "x"
    elif kind == "one_domain":
        m["domains"] = {"alpha": m["domains"]["alpha"]}
    elif kind == "domain_name":
        m["domains"][draw(st.sampled_from(["9lives", "has-dash", "sp ace", "_under"]))] = m["domains"].pop("beta")
    elif kind == "source_kinds":
        m["domains"]["alpha"]["sources"][0] = draw(st.sampled_from(
            [{"glob": "a/*.txt", "jsonl": "b.jsonl"}, {}, {"text_field": "t"}, {"glob": "a/*", "eos": 3}]))
    elif kind == "fraction":
        m["val_fraction"] = draw(st.sampled_from([0, 0.5, 0.9, -0.1, "half"]))
    elif kind == "tokenizer":
        m["tokenizer"] = draw(st.sampled_from([{"kind": "wordpiece"}, {"kind": "byte", "vocab_size": 1000},
                                               {"kind": "bpe", "vocab_size": 10}, {"kind": "file"}]))
    elif kind == "placeholder":
        m["domains"]["alpha"]["sources"][0]["glob"] = "{nowhere}/*.txt"
    elif kind == "escape":
        m["domains"]["alpha"]["sources"][0]["glob"] = draw(st.sampled_from(["../../../etc/*", "/etc/*.conf"]))
    elif kind == "encoding":
        m["domains"]["alpha"]["sources"][0]["encoding"] = draw(st.sampled_from(["utf-9", "klingon"]))
    else:
        m["domains"]["alpha"]["sources"] = []
    return yaml.safe_dump(m)


def test_malformed_dataset_manifests(tmp_path_factory, corpus):
    wd = tmp_path_factory.mktemp("manifests-wd")

    @SETTINGS
    @given(text=bad_manifests(corpus))
    def check(text: str) -> None:
        path = corpus / "bad-manifest.yaml"  # beside the corpus, so relative sources resolve as in a real one
        path.write_text(text)
        try:
            check_refused("dataset manifest", wd, "data", "prepare", str(path), "--workdir", str(wd / "w"))
        finally:
            path.unlink()

    check()
    assert not (wd / "w").exists()


# ---------------------------------------------------------------------------------------------- run tables


@st.composite
def bad_tables(draw):
    kind = draw(st.sampled_from(["no_weights", "sum", "negative", "text_weight", "status", "no_losses",
                                 "binary", "empty", "objective", "ragged"]))
    rows = ["w_a,w_b,loss_a,loss_b"] + [f"{x:.2f},{1 - x:.2f},{2 + x:.3f},{3 - x:.3f}" for x in (0.1, 0.4, 0.7)]
    args: list[str] = []
    if kind == "no_weights":
        rows = ["a,b,loss_a"] + ["0.5,0.5,2.0"] * 3
    elif kind == "sum":
        rows[2] = f"0.9,{draw(st.sampled_from(['0.5', '0.8', '0.01']))},2.0,3.0"
    elif kind == "negative":
        rows[2] = "1.2,-0.2,2.0,3.0"
    elif kind == "text_weight":
        rows[2] = f"{draw(st.sampled_from(['abc', '', 'nan', 'inf']))},0.5,2.0,3.0"
    elif kind == "status":
        rows = [rows[0] + ",status"] + [r + f",{draw(st.sampled_from(['done', 'OK', 'crashed']))}" for r in rows[1:]]
    elif kind == "no_losses":
        rows = ["w_a,w_b"] + ["0.5,0.5"] * 3
    elif kind == "binary":
        return draw(st.binary(min_size=1, max_size=200).filter(lambda b: b"w_" not in b)), args
    elif kind == "empty":
        return b"", args
    elif kind == "objective":
        args = ["--objective", draw(st.sampled_from(["loss_c", "w_a", "loss_"]))]
    else:
        rows[2] = "0.5,0.5,2.0,3.0,9,9,9"
    return ("\n".join(rows) + "\n").encode(), args


def test_malformed_run_tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")

    @SETTINGS
    @given(case=bad_tables())
    def check(case: tuple[bytes, list[str]]) -> None:
        data, args = case
        path = root / "runs.csv"
        path.write_bytes(data)
        check_refused("run table", root, "recommend-table", str(path), "--optimizer", "random", *args)

    check()


def test_corrupt_job_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    job = root / "jobs" / "j1"
    job.mkdir(parents=True)
    (job / "spec.yaml").write_text("name: j1\n")

    @settings(max_examples=20, deadline=None, derandomize=True)
    @given(data=st.binary(min_size=1, max_size=4096).filter(lambda b: not b.startswith(b"SQLite format 3")))
    def check(data: bytes) -> None:
        (job / "runs.sqlite").write_bytes(data)
        for p in job.glob("runs.sqlite-*"):
            p.unlink()
        line = check_refused("job store", root, "runs", "j1", "--workdir", str(root))
        assert "runs.sqlite" in line

    check()


def test_zz_report_counts(figure):
    total = sum(COUNTS.values())
    if not COUNTS:
        pytest.skip("run with the other tests of this module")
    figure("malformed inputs refused with one line, exit code 2, nothing written: "
           + ", ".join(f"{n} {k}s" for k, n in COUNTS.items()) + f" ({total} in all)")
    assert total >= 200

