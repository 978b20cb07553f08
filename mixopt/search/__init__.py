"""Running searches: the driver loop on Ray, the job store, MLflow tracking, resume, job submission, reports.

The names are loaded on first use, so commands that only talk to a cluster or read a job folder do not pay for
importing the driver (and with it torch).
"""

from __future__ import annotations

from typing import Any

_LAZY = {"DEFAULT_WORKDIR": "mixopt.search.driver", "Search": "mixopt.search.driver",
         "submit": "mixopt.search.driver", "JobStore": "mixopt.search.store", "list_jobs": "mixopt.search.store"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mixopt.search' has no attribute {name!r}")


__all__ = ["DEFAULT_WORKDIR", "JobStore", "Search", "list_jobs", "submit"]
