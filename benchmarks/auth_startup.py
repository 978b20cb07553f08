"""What token authentication costs a local search at start-up: Ray's default (token) against RAY_AUTH_MODE=disabled.

    python benchmarks/auth_startup.py            # 4 rounds, each mode once per round, alternating
    python benchmarks/auth_startup.py --json

Each sample is a fresh interpreter doing what a search does first: start a local Ray cluster through
`mixopt.search.cluster.connect()`, run one task, shut down. The modes alternate within each round so load on
the machine falls on both alike; the figure to read is the ratio of medians measured in this one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import emit  # noqa: E402

PROBE = """
import time
t0 = time.perf_counter()
from mixopt.search import cluster
cluster.connect()
import ray
ray.get(ray.remote(lambda: 1).remote())
t1 = time.perf_counter()
cluster.shutdown()
print(t1 - t0)
"""

MODES = {"token (Ray's default)": None, "disabled": "disabled"}


def sample(mode: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    env.update(RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT))
    if mode:
        env["RAY_AUTH_MODE"] = mode
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here too")
    args = ap.parse_args(argv)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    t0 = time.perf_counter()
    for r in range(args.rounds):
        for name in (list(MODES) if r % 2 == 0 else list(MODES)[::-1]):
            times[name].append(sample(MODES[name]))
    med = {m: statistics.median(v) for m, v in times.items()}
    ratio = med["token (Ray's default)"] / med["disabled"]
    out = sys.stderr if args.json else sys.stdout
    print(f"{'mode':<24}{'median s':>10}  samples", file=out)
    for m, v in times.items():
        print(f"{m:<24}{med[m]:>10.2f}  {', '.join(f'{x:.2f}' for x in v)}", file=out)
    print(f"token ÷ disabled: {ratio:.2f}× (ratio of medians, {args.rounds} rounds, this run)", file=out)
    result = {"seconds": times, "median_seconds": med, "ratio_token_vs_disabled": ratio,
              "rounds": args.rounds, "wall_seconds": time.perf_counter() - t0}
    return emit(result, args.out, args.json)


if __name__ == "__main__":
    main()
