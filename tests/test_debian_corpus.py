"""Keeps benchmarks/debian_corpus.py's offline parts right: roff and HTML to text, and the manifest it writes.

No network and no packages: the download itself is checked by running the script (its docstring says how)."""

from __future__ import annotations

import importlib.util
import shutil
import sys

import pytest

from mixopt.data import prepare
from mixopt.spec import load_dataset
from tests.conftest import ROOT

ROFF = r""".\" Copyright and licence comments are not text
'\" t
.TH FROB 1 2024-01-01 "Frob 1.0" "User Commands"
.SH NAME
frob \- frobnicate the \fIwidgets\fR
.SH SYNOPSIS
.B frob
[\fB\-v\fP] \fIfile\fR...
.SH DESCRIPTION
.B frob
reads each
.IR file ,
and prints \(lqdone\(rq when it is finished.
.de XX
.ft B
..
.TP
.BR \-v ", " \-\-verbose
Say more\e.
.TS
tab(;);
l l.
one;two
.TE
"""

HTML = """<!DOCTYPE html><html><head><title>Head title</title><style>p { color: red }</style>
<script>var tracking = "secret";</script></head>
<body><nav class="menu"><a href="/">Home</a> | <a href="/next">Next page</a></nav>
<div class="related" role="navigation"><ul><li>Previous topic</li></ul></div>
<h1>Signals<a class="headerlink" href="#s">¶</a></h1>
<p>A signal is   an <em>asynchronous</em>
notification &amp; more.</p>
<ul><li><p>first item</p></li><li>second item</li></ul>
<pre>int main(void) {
    return 0;
}</pre>
<div class="footer">Copyright footer</div></body></html>"""


@pytest.fixture(scope="module")
def dc():
    spec = importlib.util.spec_from_file_location("debian_corpus", ROOT / "benchmarks" / "debian_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["debian_corpus"] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("debian_corpus", None)


def _no_roff(text: str) -> None:
    assert not any(line.startswith((".", "'")) for line in text.splitlines())
    for macro in ("\\f", "\\-", "\\(", "\\e", ".TH", ".SH", ".TP", "XX", "tab("):
        assert macro not in text


def test_strip_roff_keeps_text_drops_macros(dc) -> None:
    text = dc.strip_roff(ROFF)
    _no_roff(text)
    assert "Copyright" not in text
    assert "FROB(1)" in text
    assert "frob - frobnicate the widgets" in text
    assert "reads each\nfile,\nand prints “done” when it is finished." in text
    assert "-v, --verbose" in text and "Say more\\." in text
    assert "one  two" in text  # table data kept, its layout lines not
    assert text.endswith("\n") and "\n\n\n" not in text


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_render_man_with_groff(dc) -> None:
    text = dc.render_man(ROFF)
    _no_roff(text)
    assert "\x08" not in text and "\x1b" not in text
    assert "NAME" in text and "frobnicate the widgets" in text
    assert "  reads  each" not in text  # left-adjusted: no justification padding


def test_render_man_falls_back_without_groff(dc, monkeypatch) -> None:
    def no_groff(*args, **kwargs):
        raise FileNotFoundError("groff")

    monkeypatch.setattr(dc.subprocess, "run", no_groff)
    assert dc.render_man(ROFF) == dc.strip_roff(ROFF)


def test_html_to_text_drops_tags_scripts_and_navigation(dc) -> None:
    text = dc.html_to_text(HTML)
    assert "<" not in text.replace("int main", "") and ">" not in text
    for gone in ("tracking", "color", "Head title", "Home", "Next page", "Previous topic", "¶", "footer"):
        assert gone not in text
    assert text.startswith("Signals\n")
    assert "A signal is an asynchronous notification & more." in text
    assert "- first item\n" in text and "- second item" in text
    assert "int main(void) {\n    return 0;\n}" in text  # <pre> keeps its layout


def test_manifest_for_a_tiny_corpus_loads_and_prepares(dc, tmp_path) -> None:
    words = {"alpha": "the quick brown fox jumps over the lazy dog. ", "beta": "int main(void) { return 0; } "}
    domains = []
    for name, sentence in words.items():
        (tmp_path / name).mkdir()
        for i in range(6):
            (tmp_path / name / f"doc{i}.txt").write_text(f"{i} " + sentence * 200)
        domains.append(dc.Domain(name, f"{name} documents", (), 1_000_000))
    path = dc.write_manifest(tmp_path, domains)
    assert path == tmp_path / "debian-docs.yaml"
    spec = load_dataset(path)
    assert spec.name == "debian-docs" and spec.tokenizer.kind == "byte"
    assert spec.val_fraction == 0.05 and spec.min_val_tokens == 16384
    assert list(spec.domains) == ["alpha", "beta"]
    assert spec.domains["alpha"].max_bytes == 1_000_000 and spec.domains["beta"].description == "beta documents"
    data = prepare(spec.model_copy(update={"min_val_tokens": 1000}), tmp_path / "prepared")
    for name in words:
        assert data.index["domains"][name]["val_tokens"] > 0 and data.index["domains"][name]["train_tokens"] > 0
