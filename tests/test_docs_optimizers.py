"""docs/optimizers.md's worked example is real code: it runs, registers, validates its settings and recommends."""

from __future__ import annotations

import re
import types

import numpy as np
import pandas as pd
import pytest

from mixopt.optimizers import get_optimizer, list_optimizers, register_optimizer, unregister_optimizer
from mixopt.runs import RunTable
from tests.conftest import ROOT


def _example_module() -> types.ModuleType:
    text = (ROOT / "docs" / "optimizers.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]  # the first block is the optimizer module
    mod = types.ModuleType("docs_temperature")
    exec(compile(code, "docs/optimizers.md", "exec"), mod.__dict__)  # the doc's own example, as a reader would paste it
    return mod


def test_the_worked_example_runs_as_written():
    mod = _example_module()
    register_optimizer("temperature", mod.Temperature)
    try:
        assert "temperature" in list_optimizers()
        counts = {"a": 600.0, "b": 300.0, "c": 100.0}
        opt = get_optimizer("temperature", seed=0, taus=[0.0, 1.0])
        empty = RunTable.empty(list(counts), token_counts=counts)
        props = opt.propose(empty, 2)
        assert props[0].weights == pytest.approx({d: 1 / 3 for d in counts})  # τ = 0: uniform
        assert props[1].weights == pytest.approx({d: n / 1000 for d, n in counts.items()})  # τ = 1: natural
        rows = [{**{f"w_{d}": w for d, w in p.weights.items()}, **{f"loss_{d}": 2.0 + i for d in counts},
                 "status": "ok"} for i, p in enumerate(props)]
        table = RunTable(pd.DataFrame(rows), token_counts=counts)
        rec = opt.recommend(table)
        assert np.allclose(list(rec.weights.values()), 1 / 3) and rec.method == "temperature"
        assert opt.propose(table, 1)[0].weights == props[0].weights  # the grid continues where the table stops
        with pytest.raises(ValueError, match="temperature has no setting 'tau'"):
            get_optimizer("temperature", tau=[0.5])
    finally:
        unregister_optimizer("temperature")
