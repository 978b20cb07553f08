"""A local cluster as mixopt starts it: token authentication on (Ray's default), workers at the driver's priority."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

PROBE = """
import json, os
from mixopt.search import cluster
cluster.connect()
import ray
from ray._private.authentication.authentication_utils import is_token_auth_enabled
nice = ray.get(ray.remote(lambda: os.nice(0)).remote())
print(json.dumps({"worker_nice": nice, "driver_nice": os.nice(0), "token": is_token_auth_enabled()}))
cluster.shutdown()
"""


@pytest.mark.parametrize("driver_nice, lower", [(0, None), (5, None), (0, 7)])
def test_local_workers_run_at_the_drivers_priority_with_token_auth(driver_nice, lower):
    """Workers at the driver's niceness, or `RAY_worker_niceness` steps below it where the user sets that."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_worker_niceness")}
    env["PYTHONPATH"] = str(ROOT)
    if lower is not None:
        env["RAY_worker_niceness"] = str(lower)
    cmd = [sys.executable, "-c", PROBE]
    if driver_nice:
        cmd = ["nice", "-n", str(driver_nice), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    base = os.nice(0)
    assert got == {"worker_nice": base + driver_nice + (lower or 0), "driver_nice": base + driver_nice,
                   "token": True}, got


def test_opting_out_of_token_auth_still_works_and_warns():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_worker_niceness",)}
    env.update(PYTHONPATH=str(ROOT), RAY_AUTH_MODE="disabled")
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["token"] is False
    assert "token authentication is off (RAY_AUTH_MODE=disabled)" in out.stderr
