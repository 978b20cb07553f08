"""External-command proxies: a user's own trainer (Megatron-LM, torchtitan, lit-gpt …) as a proxy run.

The contract is files, not a shell: mixopt writes the mixture to `mixture.json` in a fresh run folder, runs the
command as an argument list (placeholders filled in, no shell, so a weight or path can never inject anything),
and reads the losses back from `metrics.json`. Whatever goes wrong — a non-zero exit, a timeout, a missing or
malformed metrics file, a non-finite loss — becomes a failed run whose error says what happened and carries the
tail of stderr, because the run table must record every attempt.

mixture.json: {"weights": {domain: w}, "seed": int, "tokens": int, "domains": [...], "schedule": {...} | null}
metrics.json: {"losses": {domain: loss, ...}}, or a flat {"loss_<domain>": loss, ...}.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from mixopt.proxies.train import ProxyResult
from mixopt.spec import ProxySpec

PLACEHOLDERS = ("mixture_json", "metrics_json", "run_dir", "seed", "tokens")


def _fill(arg: str, values: dict[str, str]) -> str:
    out = arg
    for key, val in values.items():
        out = out.replace("{" + key + "}", val)
    return out


def _tail(text: str | bytes | None, n: int = 2000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "").strip()[-n:]


def _die_with_parent() -> None:
    """Linux: the trainer gets SIGKILL when the process that started it dies (a killed Ray worker), so an
    orphan can never race a retried run on metrics.json. Elsewhere a no-op."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def parse_metrics(path: Path) -> dict[str, float]:
    """Losses per domain from a metrics file; raises ValueError with the reason when it is unusable."""
    if not path.exists():
        raise ValueError(f"the command wrote no metrics file {path.name}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"metrics file {path.name} is not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"metrics file {path.name} must hold a JSON object with a `losses` object")
    if "losses" in data:
        raw = data["losses"]
        if not isinstance(raw, dict):
            raise ValueError(f"`losses` in {path.name} must be an object {{domain: loss}}")
    else:
        raw = {k[len("loss_"):]: v for k, v in data.items() if k.startswith("loss_")}
    if not raw:
        raise ValueError(f"metrics file {path.name} has no losses (expected {{\"losses\": {{domain: loss}}}})")
    losses = {}
    for d, v in raw.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"loss of {d!r} in {path.name} is {v!r}, not a number")
        if not math.isfinite(v):
            raise ValueError(f"loss of {d!r} in {path.name} is {v} (diverged)")
        losses[str(d)] = float(v)
    return losses


def run_command_proxy(spec: ProxySpec, weights: dict[str, float], seed: int, domains: list[str],
                      run_dir: str | Path | None = None, schedule: dict[str, Any] | None = None) -> ProxyResult:
    assert spec.command, "kind: command needs a command"
    base = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="mixopt-proxy-"))
    base.mkdir(parents=True, exist_ok=True)
    mixture, metrics = base / "mixture.json", base / "metrics.json"
    metrics.unlink(missing_ok=True)  # a retried run must not read its predecessor's numbers
    mixture.write_text(json.dumps({"weights": weights, "seed": seed, "tokens": spec.tokens, "domains": domains,
                                   "schedule": schedule}, indent=1))
    values = {"mixture_json": str(mixture), "metrics_json": str(metrics), "run_dir": str(base),
              "seed": str(seed), "tokens": str(spec.tokens)}
    argv = [_fill(a, values) for a in spec.command]
    t0 = time.perf_counter()
    result = ProxyResult(status="failed")
    try:
        proc = subprocess.run(argv, cwd=base, capture_output=True, timeout=spec.timeout_s, check=False,
                              preexec_fn=_die_with_parent)
    except subprocess.TimeoutExpired as e:
        result.error = f"timed out after {spec.timeout_s:g} s; stderr tail: {_tail(e.stderr)}"
    except OSError as e:  # the program does not exist or cannot be executed
        result.error = f"could not start {argv[0]!r}: {e.strerror or e}"
    else:
        if proc.returncode != 0:
            result.error = f"exit code {proc.returncode}; stderr tail: {_tail(proc.stderr)}"
        else:
            try:
                result.losses = parse_metrics(metrics)
                result.status = "ok"
                result.tokens = spec.tokens
            except ValueError as e:
                result.error = f"{e}; stderr tail: {_tail(proc.stderr)}"
    result.seconds = time.perf_counter() - t0
    result.tokens_per_s = result.tokens / result.seconds if result.seconds > 0 and result.tokens else 0.0
    return result
