"""The cluster path: job submission to a Ray head with its dashboard, status/logs/stop, the launcher config,
and `mixopt ui` bound to loopback."""

from __future__ import annotations

import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mixopt.search import JobStore, jobs
from tests.conftest import ROOT
from tests.reliability.conftest import cli, command_spec, free_port, stop_group, wait_http

pytestmark = pytest.mark.slow


def wait_status(job: str, address: str, want: set[str], timeout: float = 240) -> str:
    """Poll the cluster (in-process: a CLI call per poll would cost an interpreter start each)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = jobs.job_info(address, job)["status"]
        if status in want:
            return status
        time.sleep(0.5)
    raise AssertionError(f"job {job} did not reach {want}: {status}")


def test_submit_to_a_ray_head_then_status_logs_and_stop(corpus, tmp_path, ray_head, figure):
    address = ray_head["dashboard"]
    wd = tmp_path / "head-workdir"  # the job folder lives on the head (here: this machine)
    spec = command_spec(corpus, tmp_path, name="remote", runs=6, parallelism=2, plan={"_sleep": 0.2})
    t0 = time.time()
    res = cli("submit", str(spec), "--address", address, "--workdir", str(wd))
    assert res.returncode == 0, res.stdout + res.stderr
    job = re.search(r"submitted job (\S+)", res.stdout).group(1)
    submitted = time.time() - t0
    assert wait_status(job, address, {"SUCCEEDED", "FAILED", "STOPPED"}) == "SUCCEEDED", jobs.job_info(address, job)
    took = time.time() - t0
    out = cli("status", job, "--address", address)
    assert out.returncode == 0 and re.search(r"status: SUCCEEDED", out.stdout) and "6/6" in out.stdout, out.stdout
    for follow in ([], ["--follow"]):  # --follow streams until the job ends (here: at once)
        logs = cli("logs", job, "--address", address, *follow, timeout=120)
        assert logs.returncode == 0 and "recommended mixture" in logs.stdout and "[6/6]" in logs.stdout
    store = JobStore.open(wd, job)  # submission id = job id = job folder
    assert list(store.run_table().df["status"]) == ["ok"] * 6 and store.get_meta("state") == "done"
    listing = cli("status", "--address", address)
    assert listing.returncode == 0 and job in listing.stdout
    figure(f"job submission: `mixopt submit --address` returned in {submitted:.1f} s; the 6-run job SUCCEEDED "
           f"{took:.1f} s after submission")

    # A job that hangs: `mixopt stop` ends it; the job folder says interrupted; nothing recorded is lost.
    spec2 = command_spec(corpus, tmp_path, name="stopme", runs=4, parallelism=2, plan={"r0001": "hang",
                                                                                       "_sleep": 0.2})
    res = cli("submit", str(spec2), "--address", address, "--workdir", str(wd))
    job2 = re.search(r"submitted job (\S+)", res.stdout).group(1)
    deadline = time.time() + 180
    while time.time() < deadline:
        folder = wd / "jobs" / job2 / "runs.sqlite"
        if folder.is_file() and JobStore(folder.parent).n_finished() >= 1:
            break
        time.sleep(0.5)
    assert cli("stop", job2, "--address", address).returncode == 0
    assert wait_status(job2, address, {"STOPPED", "FAILED", "SUCCEEDED"}, timeout=60) == "STOPPED"
    time.sleep(1)
    st = JobStore(wd / "jobs" / job2)
    assert st.get_meta("state") == "interrupted" and st.n_finished() >= 1
    bad = cli("logs", "nope-123", "--address", address)
    assert bad.returncode == 2 and "not known to the cluster" in bad.stderr and "Traceback" not in bad.stderr


def test_a_client_without_the_token_or_with_a_wrong_one_is_refused_in_one_line(corpus, tmp_path, ray_head):
    """The head runs with token authentication (as ray_cluster.yaml starts it); the submission above carried
    Ray's default token. Without it, or with a wrong one, every cluster command is refused before anything is
    submitted: one line naming the variable to set, exit code 2, no traceback, no hang."""
    address = ray_head["dashboard"]
    spec = command_spec(corpus, tmp_path, name="intruder", runs=2, parallelism=1)
    home = tmp_path / "home-without-a-token"
    home.mkdir()
    no_token = {"HOME": str(home), "RAY_AUTH_TOKEN": "", "RAY_AUTH_TOKEN_PATH": ""}
    wrong = {"RAY_AUTH_TOKEN": "0" * 64}
    for env, says in ((no_token, "requires a token and none was found"), (wrong, "refused the token in "
                                                                                 "RAY_AUTH_TOKEN")):
        for args in (("submit", str(spec), "--address", address, "--workdir", str(tmp_path / "wd")),
                     ("status", "--address", address)):
            t0 = time.time()
            res = cli(*args, env=env, timeout=120)
            assert res.returncode == 2, (args, env, res.stdout, res.stderr)
            lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
            assert len(lines) == 1 and says in lines[0] and "RAY_AUTH_TOKEN" in lines[0], res.stderr
            assert "Traceback" not in res.stderr and time.time() - t0 < 60
    # Driving the search from here against the cluster's GCS port: refused the same way, before the data is
    # prepared or a job folder exists.
    res = cli("submit", str(spec), "--address", ray_head["gcs"], "--workdir", str(tmp_path / "wd"), env=no_token,
              timeout=180)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode == 2 and len(lines) == 1 and "refused" in lines[0] and "RAY_AUTH_TOKEN" in lines[0], \
        res.stderr[-2000:]
    assert "Traceback" not in res.stderr and not (tmp_path / "wd").exists()
    listing = [j for j in jobs.list_cluster_jobs(address) if j["spec"] == "intruder"]
    assert listing == [], listing  # nothing reached the cluster


def test_a_search_with_a_token_leaves_no_trace_of_it(corpus, tmp_path):
    """A local search under token authentication, with the token in the environment: the job folder, its
    logs, the run table, the report and the MLflow store never hold it."""
    token = secrets.token_hex(32)
    spec = command_spec(corpus, tmp_path, name="secret", runs=3, parallelism=2)
    wd = tmp_path / "wd"
    res = cli("submit", str(spec), "--workdir", str(wd), env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    assert res.returncode == 0, res.stdout + res.stderr
    assert token not in res.stdout + res.stderr
    files = [f for f in wd.rglob("*") if f.is_file()]
    assert any(f.name == "runs.sqlite" for f in files) and any(f.suffix == ".db" for f in files), files
    held = [str(f.relative_to(wd)) for f in files if token.encode() in f.read_bytes()]
    assert held == [], held


def test_ray_cluster_yaml_is_valid_for_the_cluster_launcher():
    pytest.importorskip("jsonschema", reason="Ray validates cluster configs with jsonschema (test extra)")
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    validate_config(prepare_config(cfg))  # Ray's own schema, with its defaults filled in
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    gpu = [t for name, t in types.items() if t.get("resources", {}).get("GPU", 0) >= 1]
    assert head["resources"].get("GPU", 0) == 0 and gpu, "a CPU head and a GPU worker group"
    assert all(0 <= t["min_workers"] <= t["max_workers"] <= cfg["max_workers"] for t in gpu)
    assert any("pip install" in c and "mixopt" in c for c in cfg["setup_commands"])
    assert any("datasets" in src for src in cfg["file_mounts"].values())
    assert any("--dashboard-host=127.0.0.1" in c for c in cfg["head_start_ray_commands"])
    # Token authentication on every node; the token travels as a file from where `ray up` runs, never inline.
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cfg[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), (key, starts)
    assert cfg["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    assert any("auth_token" in c for c in cfg["head_setup_commands"])


def test_nothing_in_the_repository_holds_a_ray_token():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    local = Path.home() / ".ray" / "auth_token"
    mine = local.read_text().strip() if local.is_file() else None
    inline = re.compile(r"RAY_AUTH_TOKEN\s*[=:]\s*['\"]?[0-9a-f]{16,}", re.I)
    for name in tracked:
        path = ROOT / name
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        text = path.read_text(errors="ignore")
        assert not inline.search(text), f"{name} sets RAY_AUTH_TOKEN to a value"
        assert not mine or mine not in text, f"{name} holds this machine's Ray token"


def test_mlflow_ui_listens_on_loopback_only(tmp_path):
    from mixopt.search.tracking import Tracker, default_tracking_uri

    Tracker(default_tracking_uri(tmp_path), "ui", tmp_path / "mlartifacts")  # a store for it to serve
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "mixopt.cli", "ui", "--workdir", str(tmp_path), "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", ui, timeout=120)
        listening = _listening(port)
        assert listening and listening <= {"127.0.0.1"}, listening
    finally:
        stop_group(ui, grace=10)
    assert ui.returncode in (0, -signal.SIGTERM, 130, 143, -signal.SIGKILL)


def test_mlflow_ui_on_another_interface_only_when_asked_and_with_a_warning(tmp_path):
    res = cli("ui", "--workdir", str(tmp_path / "empty"), "--host", "0.0.0.0", timeout=60)
    assert "warning: serving on 0.0.0.0" in res.stderr and "no login" in res.stderr
    assert res.returncode == 2 and "no MLflow store here yet" in res.stderr  # and nothing was served


def _listening(port: int) -> set[str]:
    """Local addresses with a socket listening on `port`, from /proc/net/tcp and tcp6."""
    out = set()
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.is_file():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.rsplit(":", 1)
            if state == "0A" and int(p, 16) == port:  # 0A = LISTEN
                if len(addr) == 8:
                    out.add(".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0)))
                else:
                    out.add("::" if set(addr) == {"0"} else f"ipv6:{addr}")
    return out
