"""What every benchmark does at its end: write its JSON result where `--out` says and print it for `--json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(result: dict[str, Any], out: Path | None, as_json: bool) -> dict[str, Any]:
    if out:
        out.write_text(json.dumps(result, indent=1))
    if as_json:
        print(json.dumps(result))
    return result
