"""Connecting to Ray: a local cluster by default, an existing one with an address.

Ray 2.60 enables token authentication by default; a local single-user cluster runs without it unless the user
chose otherwise. Usage statistics are off. A local cluster starts without the dashboard (it costs several
hundred MB and plain tasks do not need it); job submission (`mixopt submit --address http://HEAD:8265`) talks to
a cluster's dashboard, which `ray start --head` runs.
"""

from __future__ import annotations

import logging
import os


def ray_env() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


def connect(address: str | None = None) -> bool:
    """Initialise Ray unless it already is; returns True when this call started it (so it should stop it)."""
    ray_env()
    import ray

    if ray.is_initialized():
        return False
    # Inside a submitted Ray job, RAY_ADDRESS names the cluster the job runs on.
    address = address or os.environ.get("RAY_ADDRESS") or None
    extra = {} if address else {"_node_ip_address": "127.0.0.1"}  # a local cluster stays on loopback
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False, configure_logging=True, **extra)
    return True


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
