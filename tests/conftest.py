from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "benchmarks"
REGMIX_TRAIN = SHARED / "regmix" / "runs_1m_train.csv"
MIXINGLAWS = SHARED / "mixinglaws"
DEMO_DOMAINS = ["python", "c_headers", "cpp", "prose", "licenses", "package_docs", "data"]

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def need_regmix() -> Path:
    if not REGMIX_TRAIN.is_file():
        pytest.skip(f"released RegMix runs not found at {REGMIX_TRAIN} (../shared is absent)")
    return REGMIX_TRAIN


def need_mixinglaws() -> Path:
    if not (MIXINGLAWS / "5mix.csv").is_file():
        pytest.skip(f"released data mixing laws runs not found at {MIXINGLAWS} (../shared is absent)")
    return MIXINGLAWS


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One workdir for the session, so the demo corpus is prepared once."""
    return tmp_path_factory.mktemp("mixopt-work")


@pytest.fixture(scope="session")
def demo_dataset():
    from mixopt.spec import load_dataset

    return load_dataset(ROOT / "datasets" / "demo.yaml")


@pytest.fixture(scope="session")
def prepared(workdir: Path, demo_dataset):
    from mixopt.data import prepare

    return prepare(demo_dataset, workdir / "data")


def tiny_spec_yaml(tmp: Path, runs: int = 4, parallelism: int = 2, optimizer: str = "regmix",
                   tokens: int = 8192, extra: str = "") -> Path:
    """A search spec that trains proxies for a few steps only (seconds)."""
    p = tmp / f"tiny-{runs}-{optimizer}.yaml"
    p.write_text(f"""
name: tiny
dataset: {ROOT / 'datasets' / 'demo.yaml'}
proxy:
  n_layer: 1
  d_model: 32
  n_head: 2
  seq_len: 64
  batch_size: 8
  tokens: {tokens}
  eval_windows: 4
optimizer:
  name: {optimizer}
budget:
  runs: {runs}
parallelism: {parallelism}
seed: 1
{extra}
""")
    return p


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300, columns: int = 200
            ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mixopt.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": str(columns)})
