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
