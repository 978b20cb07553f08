"""The house's structure, checked: one-way layers, reading a job loads no torch, one registry of optimizers."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points

import pytest

from mixopt.optimizers import GROUP, list_optimizers, optimizer_class, register_optimizer, unregister_optimizer
from mixopt.optimizers.base import OptimizerBase
from mixopt.schedules import SCHEDULES
from mixopt.search.checks import load_search_spec
from mixopt.search.store import JobStore, PendingRun
from tests.conftest import ROOT, tiny_spec_yaml

HEAVY = ("torch", "botorch", "gpytorch", "lightgbm", "faiss", "ray", "mlflow", "mixopt.optimizers.regmix")


def test_layers_contract_holds():
    """pyproject's [tool.importlinter] layers: a module imports only its own layer's package and those below."""
    probe = ("import sys\nfrom importlinter.cli import lint_imports\n"
             f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True, no_logo=True))")
    res = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "0 broken" in res.stdout, res.stdout[-3000:] + res.stderr[-2000:]


def _finished_job(tmp_path):
    """A job folder as a finished search leaves it: its spec, two runs with results, a recommendation."""
    spec = load_search_spec(tiny_spec_yaml(tmp_path, runs=4, optimizer="regmix", extra="ladder: false"))
    store = JobStore.create(tmp_path / "wd", spec, job_id="done")
    domains = list(spec.dataset.domains)
    runs = [PendingRun(f"r{i:04d}", i, 0, 1, {d: 1 / len(domains) if i == 0 else float(d == domains[i % len(domains)])
                                               for d in domains}, None, "random") for i in range(4)]
    store.add_proposals(runs)
    for i, r in enumerate(runs):
        store.add_result(r.run_id, "ok", {f"loss_{d}": 3.0 + 0.1 * i + 0.01 * j for j, d in enumerate(domains)},
                         {"seconds": 1.0}, None)
    store.set_meta("state", "done")
    store.write_recommendation({"weights": runs[0].weights, "method": "regmix"})
    return store


@pytest.mark.parametrize("command", ["status", "runs"])
def test_reading_a_job_imports_no_torch(tmp_path, command):
    """`mixopt status` / `runs` parse the job's spec and run table only: no optimizer, no torch, no Ray."""
    store = _finished_job(tmp_path)
    probe = (f"import json, sys\nsys.argv = ['mixopt', {command!r}, 'done', '--workdir', {str(tmp_path / 'wd')!r}]\n"
             "from mixopt.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
             f"else:\n    code = 0\nprint(json.dumps({{'code': code, 'loaded': [m for m in {HEAVY!r} "
             "if m in sys.modules]}))\n")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", **_python_env()})
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["code"] in (0, None), res.stdout + res.stderr
    assert "done" in res.stdout and out["loaded"] == [], out
    assert store.path.is_dir()


def _python_env():
    import os

    return {k: v for k, v in os.environ.items() if k.startswith(("PYTHON", "HOME", "VIRTUAL_ENV", "LANG"))}


def test_the_builtins_are_the_entry_points_of_pyproject():
    """One registry list: pyproject's entry points are what the installed package resolves, nothing else."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][GROUP]
    installed = {ep.name: ep.value for ep in entry_points(group=GROUP) if ep.value.startswith("mixopt.")}
    assert installed == declared, "reinstall (pip install -e .) after editing the entry points"
    modules = {p.stem for p in (ROOT / "mixopt" / "optimizers").glob("*.py")}
    public = {m for m in modules if not m.startswith("_") and m not in ("base", "pool")}
    assert {v.split(":")[0].rsplit(".", 1)[1] for v in declared.values()} == public, \
        "every public module of mixopt/optimizers is one registered optimizer (helpers start with _)"
    for name in declared:
        assert issubclass(optimizer_class(name), OptimizerBase)
    schedules = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["mixopt.schedules"]
    assert {ep.name: ep.value for ep in entry_points(group="mixopt.schedules")} == schedules == SCHEDULES


def test_register_optimizer_for_this_process_only():
    class Constant(OptimizerBase):
        name = "constant-test"

        def propose(self, history, n):
            return []

        def recommend(self, history, target=None):
            return self._recommendation([1.0] * len(history.domains), history)

    register_optimizer("constant-test", Constant)
    try:
        assert "constant-test" in list_optimizers() and optimizer_class("constant-test") is Constant
    finally:
        unregister_optimizer("constant-test")
    assert "constant-test" not in list_optimizers()
    with pytest.raises(ValueError, match="unknown optimizer 'constant-test'"):
        optimizer_class("constant-test")


@pytest.mark.slow
def test_optimizers_command_lists_a_plugin_without_docstrings(tmp_path):
    """`mixopt optimizers` must not fail on a third-party optimizer whose module has no docstring."""
    pkg = tmp_path / "nodoc_opt"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from mixopt.optimizers.uniform import Uniform\n\n\nclass NoDoc(Uniform):\n"
                                     "    name = 'nodoc'\n")
    dist = tmp_path / "nodoc_opt-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nodoc-opt\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{GROUP}]\nnodoc = nodoc_opt:NoDoc\n")
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "mixopt.cli", "optimizers"], capture_output=True, text=True,
                         timeout=120, env={**env, "COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    assert "nodoc" in res.stdout and "regmix" in res.stdout
