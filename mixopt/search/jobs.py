"""Searches as Ray jobs: the driver runs on the cluster's head, so the laptop that submitted it may disconnect.

`mixopt submit SPEC --address http://HEAD:8265` hands the resolved spec (self-contained YAML) to Ray's job
submission API, with an entrypoint that runs the same `mixopt submit` on the head. The Ray submission id is the
mixopt job id, so `mixopt status|logs|stop JOB --address ...` and the job folder on the head share one name.

The cluster needs mixopt installed (ray_cluster.yaml's setup does it) and the dataset's files at the paths the
spec names (file mounts or a shared file system). Requests carry the Ray token the environment provides
(`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`; see `cluster.py`); a cluster that refuses it
ends in one line naming the variable to set.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mixopt.errors import InputError, MixoptError
from mixopt.search import cluster
from mixopt.search.store import new_job_id
from mixopt.spec import SearchSpec

#: Lines of the driver's output that carry progress (`[12/24] r0011 ok ...`), for `mixopt status`.
PROGRESS = re.compile(r"\[(\d+)/(\d+)\]")
DEFAULT_REMOTE_WORKDIR = "$HOME/mixopt-work"
AGENT_WAIT_S = 180.0  # a head under load can take minutes to start its job agent


def is_job_address(address: str | None) -> bool:
    """A dashboard URL means job submission; anything else (host:port, ray://) is a cluster to drive from here."""
    return bool(address) and str(address).startswith(("http://", "https://"))


def client(address: str) -> Any:
    cluster.client_auth()
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as e:  # connection refused, not a Ray dashboard, auth
        if cluster.auth_refusal(e):
            raise refused(address) from None
        raise InputError(f"--address {address}", f"no Ray job server answered ({_first_line(e)})",
                         "give the dashboard URL of the head, e.g. http://127.0.0.1:8265 (`ray dashboard "
                         "ray_cluster.yaml` forwards it from a launched cluster)") from None


def submit_job(spec: SearchSpec, address: str, workdir: str | None = None, tracking_uri: str | None = None) -> str:
    """Submit the driver of `spec` as a Ray job; returns the job id (also the Ray submission id).

    The entrypoint asks for no resources, so Ray runs it on the head node, where the job folder should live
    (workers come and go with autoscaling)."""
    job_id = new_job_id(spec.name)
    wd = _remote_workdir(workdir)
    args = ["python", "-m", "mixopt.cli", "submit", "spec.yaml", "--job-id", job_id]
    if tracking_uri:
        args += ["--tracking-uri", tracking_uri]
    entrypoint = " ".join(shlex.quote(a) for a in args) + f" --workdir {wd}"
    with tempfile.TemporaryDirectory(prefix="mixopt-submit-") as tmp:
        (Path(tmp) / "spec.yaml").write_text(spec.to_yaml())
        runtime_env = {"working_dir": tmp, "env_vars": {"PYTHONUNBUFFERED": "1", "COLUMNS": "160"}}
        c = client(address)
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                return c.submit_job(entrypoint=entrypoint, submission_id=job_id, runtime_env=runtime_env,
                                    metadata={"mixopt.job_id": job_id, "mixopt.spec": spec.name})
            except Exception as e:
                # A head that has just started answers before its job agent is up: wait for it a little.
                if "No available agent" in str(e) and time.monotonic() < deadline:
                    time.sleep(2.0)
                    continue
                if cluster.auth_refusal(e):
                    raise refused(address) from None
                raise MixoptError(f"the cluster at {address} refused the job: {_first_line(e)}") from None


def refused(address: str) -> InputError:
    """The one-line error for a cluster that wants a token this client does not have (or has wrong)."""
    given = "RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else (
        "RAY_AUTH_TOKEN_PATH" if os.environ.get("RAY_AUTH_TOKEN_PATH") else None)
    what = f"refused the token in {given}" if given else "requires a token and none was found"
    return InputError("RAY_AUTH_TOKEN", f"the Ray cluster at {address} {what}", cluster.TOKEN_HELP)


def _remote_workdir(workdir: str | None) -> str:
    """The job folder root on the head: absolute paths as given, anything else under the head user's home."""
    if not workdir:
        return f'"{DEFAULT_REMOTE_WORKDIR}"'
    if workdir.startswith("/"):
        return shlex.quote(workdir)
    if not re.fullmatch(r"[A-Za-z0-9_./-]+", workdir):
        raise InputError(f"--workdir {workdir}", "a remote workdir must be an absolute path or a plain relative "
                         "path (letters, digits, _ . / -)", "e.g. --workdir /shared/mixopt-work")
    return f'"$HOME/{workdir}"'


def job_info(address: str, job_id: str) -> dict[str, Any]:
    c = client(address)
    try:
        info = c.get_job_info(job_id)
    except Exception as e:
        if cluster.auth_refusal(e):
            raise refused(address) from None
        raise InputError(f"job {job_id}", f"not known to the cluster at {address} ({_first_line(e)})",
                         "list the cluster's jobs with `mixopt status --address ADDR`") from None
    out = {"job": job_id, "status": str(info.status.value if hasattr(info.status, "value") else info.status),
           "message": info.message or "", "start": info.start_time, "end": info.end_time}
    try:
        logs = c.get_job_logs(job_id)
    except Exception:
        logs = ""
    done = PROGRESS.findall(logs)
    if done:
        out["runs"] = f"{done[-1][0]}/{done[-1][1]}"
    lines = [ln for ln in logs.splitlines() if ln.strip()]
    out["last_line"] = lines[-1][-200:] if lines else ""
    return out


def list_cluster_jobs(address: str) -> list[dict[str, Any]]:
    out = []
    for j in client(address).list_jobs():
        meta = j.metadata or {}
        if "mixopt.job_id" not in meta:
            continue  # other people's Ray jobs on the same cluster
        out.append({"job": j.submission_id, "status": str(getattr(j.status, "value", j.status)),
                    "spec": meta.get("mixopt.spec", ""), "start": j.start_time, "end": j.end_time})
    return sorted(out, key=lambda r: r["start"] or 0)


def logs(address: str, job_id: str, write: Callable[[str], Any], follow: bool = False) -> None:
    """The job's output so far; with `follow`, streamed until the job ends."""
    c = client(address)
    job_info(address, job_id)  # a clear error for an unknown job
    if not follow:
        write(c.get_job_logs(job_id))
        return
    import asyncio

    async def tail() -> None:
        async for chunk in c.tail_job_logs(job_id):
            write(chunk)

    asyncio.run(tail())


def stop(address: str, job_id: str) -> bool:
    job_info(address, job_id)
    return bool(client(address).stop_job(job_id))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]
