"""Every Python example in the README runs as written, and prints what its `# ...` comment says it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, need_regmix

pytestmark = pytest.mark.slow

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)


def test_the_readme_has_python_examples():
    assert BLOCKS


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_a_readme_python_example_runs_and_prints_what_it_says(block):
    if "../shared/benchmarks/regmix" in block:
        need_regmix()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", block], cwd=ROOT, capture_output=True, text=True, timeout=900,
                         env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    # A comment line that starts with "# {" right under a print() is that print's output, verbatim.
    lines = block.splitlines()
    expected = [lines[i + 1][2:] for i in range(len(lines) - 1)
                if lines[i].startswith("print(") and lines[i + 1].startswith("# {")]
    printed = res.stdout.splitlines()
    for want in expected:
        assert want in printed, (want, printed)


def test_the_readmes_own_text_example_prepares_one_file_domains_by_default(tmp_path, caplog):
    """The README's worked example for a user's own text (one to three files per domain, `mine.yaml`) prepares as
    written, its one-file domain cut into documents with a validation split of ten or more of them, and the
    output it shows warns about the domains that warn."""
    from mixopt.data import prepare
    from mixopt.spec import load_dataset

    readme = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, flags=re.DOTALL) if b.startswith("# mine.yaml"))
    shown = readme[readme.index("$ mixopt data prepare mine.yaml"):].split("```")[0]
    (tmp_path / "mine.yaml").write_text(block)
    with caplog.at_level("WARNING"):
        data = prepare(load_dataset(tmp_path / "mine.yaml"), tmp_path / "data")
    warned = re.findall(r"(domains\.\w+): validation holds", " ".join(r.getMessage() for r in caplog.records))
    assert warned == re.findall(r"(domains\.\w+): validation holds", shown)
    ref = data.index["domains"]["reference"]
    assert ref["text_files"] == 1 and len(ref["split_files"]) == 1 and ref["val_docs"] >= 10, ref
    assert all(d["val_tokens"] > 0 and d["train_tokens"] > 0 for d in data.index["domains"].values())
