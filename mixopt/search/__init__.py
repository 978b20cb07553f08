"""Running searches: the driver loop on Ray, the job store, MLflow tracking, resume."""

from mixopt.search.driver import DEFAULT_WORKDIR, Search, submit
from mixopt.search.store import JobStore, list_jobs

__all__ = ["DEFAULT_WORKDIR", "JobStore", "Search", "list_jobs", "submit"]
