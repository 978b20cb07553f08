"""Connecting to Ray: a local cluster by default, an existing one with an address; token authentication on.

Authentication is Ray's own, left at its default: a local cluster that `ray.init()` starts uses a token (Ray
generates it once and keeps it in `~/.ray/auth_token`), so another user of a shared machine cannot reach its
loopback ports and run code as you. A client of an existing cluster (`--address`) sends the token its
environment provides — `RAY_AUTH_TOKEN`, the file `RAY_AUTH_TOKEN_PATH` names, or `~/.ray/auth_token` — and a
cluster that refuses it ends in one line naming the variable to set. `RAY_AUTH_MODE=disabled` still opts out;
mixopt then warns, because the cluster is open to anyone who can reach its ports.

Usage statistics are off. A local cluster starts without the dashboard (it costs several hundred MB and plain
tasks do not need it); job submission (`mixopt submit --address http://HEAD:8265`) talks to a cluster's
dashboard, which `ray start --head` runs.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from mixopt.errors import InputError

log = logging.getLogger(__name__)

#: What a user sets to reach a cluster with token authentication, named in every refusal.
TOKEN_HELP = ("set RAY_AUTH_TOKEN to the cluster's token (on the head: `ray get-auth-token`), or "
              "RAY_AUTH_TOKEN_PATH to a file that holds it")


def ray_env() -> None:
    """Process-wide Ray settings: usage statistics off, uv off, and the workers of a local cluster at the
    driver's own priority. Authentication is left to Ray.

    Ray starts workers at niceness 15, so beside any other CPU work on the machine the proxies starve (the demo
    took over 14 minutes beside three busy jobs, ~3½ alone); a search is the user's foreground work. Set
    `RAY_worker_niceness` (added to the driver's niceness) to run them lower."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_worker_niceness", "0")  # an increment over the raylet's, which is the driver's


def token_available() -> bool:
    """Whether this environment holds a Ray token, where Ray itself looks for one."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return Path(path).expanduser().is_file()
    return (Path.home() / ".ray" / "auth_token").is_file()


def client_auth() -> None:
    """Before talking to an existing cluster: token mode whenever a token is at hand and the user did not choose
    a mode, so every request carries it (Ray's own rule for `ray start`; its HTTP clients otherwise send none)."""
    ray_env()
    if "RAY_AUTH_MODE" in os.environ or not token_available():
        return
    try:  # Ray's function: it also refreshes the configuration Ray caches when it is imported
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )

        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    except ImportError:  # another Ray version: the variable is what it reads
        os.environ["RAY_AUTH_MODE"] = "token"


def auth_refusal(e: BaseException) -> bool:
    """Whether an error from Ray is a refusal for want of the right token: HTTP 401/403 from the job server, or
    the GCS's Unauthenticated / InvalidAuthToken, which Ray wraps in a ConnectionError (the chain is searched)."""
    seen: BaseException | None = e
    for _ in range(8):
        if seen is None:
            break
        text = f"{type(seen).__name__}: {seen}".lower()
        if re.search(r"\b40[13]\b", text) or any(
                k in text for k in ("authenticationerror", "unauthorized", "unauthenticated", "invalidauthtoken",
                                    "authentication token", "token authentication")):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def warn_if_open() -> None:
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        log.warning("Ray token authentication is off (RAY_AUTH_MODE=disabled): anyone who can reach this "
                    "cluster's ports can run code as you; unset RAY_AUTH_MODE to turn it back on")


def connect(address: str | None = None) -> bool:
    """Initialise Ray unless it already is; returns True when this call started it (so it should stop it)."""
    ray_env()
    import ray

    if ray.is_initialized():
        return False
    # Inside a submitted Ray job, RAY_ADDRESS names the cluster the job runs on.
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        client_auth()
    warn_if_open()
    extra = {} if address else {"_node_ip_address": "127.0.0.1"}  # a local cluster stays on loopback
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False, configure_logging=True, **extra)
    except Exception as e:
        if address and auth_refusal(e):
            raise InputError("RAY_AUTH_TOKEN", f"the Ray cluster at {address} refused this client's token "
                             f"(or its lack of one)", TOKEN_HELP) from None
        raise
    return True


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
