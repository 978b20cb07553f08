"""What every benchmark does at its end: write its JSON result where `--out` says and print it for `--json`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def emit(result: dict[str, Any], out: Path | None, as_json: bool) -> dict[str, Any]:
    if out:
        out.write_text(json.dumps(result, indent=1))
    if as_json:
        print(json.dumps(result))
    return result


def training_args(ap: argparse.ArgumentParser, workers: int = 2) -> None:
    """The options every training benchmark shares: parallel one-thread processes, the seconds-long path its
    test runs, JSON out, and where it works."""
    ap.add_argument("--workers", type=int, default=workers, help="parallel processes (one thread each)")
    ap.add_argument("--toy", action="store_true", help="seconds of training; for the test that keeps this working")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here too")
    ap.add_argument("--workdir", type=Path, default=None, help="work dir (default: a temporary folder)")


def prepared(args: argparse.Namespace, prefix: str) -> tuple[Any, Any]:
    """The manifest `--dataset` names and its prepared data, under `--workdir` or a new temporary folder."""
    import tempfile

    from mixopt.data import prepare
    from mixopt.spec import load_dataset

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=prefix))
    dataset = load_dataset(args.dataset)
    return dataset, prepare(dataset, workdir / "data")
