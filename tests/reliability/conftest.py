"""Fixtures of the reliability suite: a tiny corpus, a scriptable trainer, a Ray head with its dashboard and an
MLflow server — all real processes on 127.0.0.1, started and stopped here (by process group, never `ray stop`).

Proxies are external-command proxies running `trainer.py` below, so a run takes a fraction of a second and can
be told to succeed, diverge (NaN), raise, hang or kill its Ray worker. Figures the tests measure are printed in
a "reliability figures" section at the end of the pytest run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

FIGURES: list[str] = []

TRAINER = r'''
import json, math, os, sys, time
mixture, metrics, plan_path = sys.argv[1:4]
m = json.load(open(mixture))
w = m["weights"]
run_dir = os.path.dirname(mixture)
run = os.path.basename(run_dir)
plan = json.load(open(plan_path)) if os.path.exists(plan_path) else {}
mode = plan.get(run, plan.get("*", "ok"))
parent = os.getppid()
with open(plan.get("_log", os.devnull), "a") as f:
    f.write(json.dumps({"run": run, "seed": m["seed"], "weights": w, "job": os.path.basename(
        os.path.dirname(os.path.dirname(run_dir))), "mode": mode, "t": time.time()}) + "\n")

def nap(seconds):
    end = time.time() + seconds
    while time.time() < end:
        if os.getppid() != parent:  # the Ray worker is gone (driver killed): do not outlive it
            sys.exit(3)
        time.sleep(0.05)

if mode == "raise":
    print("Traceback (most recent call last):\nRuntimeError: trainer blew up at step 3", file=sys.stderr)
    sys.exit(1)
if mode == "hang":
    nap(3600)
if mode == "kill-worker-once" and not os.path.exists(os.path.join(run_dir, "killed")):
    open(os.path.join(run_dir, "killed"), "w").write(str(parent))
    os.kill(parent, 9)  # SIGKILL the Ray worker running this proxy: a system failure
    sys.exit(3)
nap(float(plan.get("_slow", 3.0) if mode == "slow" else plan.get("_sleep", 0.2)))
losses = {d: 2.0 + (v - 0.4) ** 2 + 0.05 * i for i, (d, v) in enumerate(sorted(w.items()))}
if mode == "nan":
    losses[sorted(w)[0]] = float("nan")
json.dump({"losses": losses}, open(metrics, "w"))
'''


@pytest.fixture(scope="session")
def figure():
    """`figure(line)`: a measured figure, printed at the end of the run. (A fixture, not an import: pytest and
    the test modules may load this file under two module names, and the list must be pytest's.)"""
    return FIGURES.append


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    if FIGURES:
        terminalreporter.section("reliability figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


def results(db: Path | None) -> dict[str, float]:
    """run_id -> finished_at of the recorded results, read straight from a job's SQLite run table."""
    if db is None or not db.is_file():
        return {}
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return dict(con.execute("SELECT run_id, finished_at FROM results").fetchall())
        finally:
            con.close()
    except sqlite3.OperationalError:  # the tables are not there yet
        return {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):  # up, and asking for the token this probe does not send
                return
            if proc.poll() is not None or time.time() > deadline:
                raise
            time.sleep(0.5)
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before {url} answered") from None
            if time.time() > deadline:
                raise TimeoutError(f"{url} did not answer in {timeout:.0f} s") from None
            time.sleep(0.5)


def stop_group(proc: subprocess.Popen, grace: float = 15) -> None:
    """End a process we started in its own session, with everything it started (SIGTERM, then SIGKILL)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers left in the group
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-domain manifest over a few KB of generated text (prepared in milliseconds)."""
    root = tmp_path_factory.mktemp("corpus")
    words = {"alpha": ["aaa", "abc", "acrobat"], "beta": ["bbb", "bob", "baobab"], "gamma": ["ggg", "gig", "gag"]}
    for d, ws in words.items():
        (root / d).mkdir()
        for i in range(12):
            (root / d / f"doc{i}.txt").write_text(" ".join(f"{ws[(i + j) % 3]}{(i * 31 + j * 7) % 97}"
                                                          for j in range(300)))
    (root / "corpus.yaml").write_text("name: small\nval_fraction: 0.2\nmin_val_tokens: 1000\ndomains:\n" + "".join(
        f"  {d}: {{sources: [{{glob: '{d}/*.txt'}}]}}\n" for d in words))
    (root / "trainer.py").write_text(TRAINER)
    return root


def command_spec(corpus: Path, tmp: Path, name: str = "rel", runs: int = 8, parallelism: int = 3,
                 optimizer: str = "random", plan: dict | None = None, timeout_s: float = 60, extra: str = "",
                 per_task: int = 1) -> Path:
    """A search spec whose proxies run trainer.py; `plan` maps run ids (or "*") to a trainer mode (ok, slow,
    nan, raise, hang, kill-worker-once) and `_sleep`/`_log` to its run time and an execution log. `optimizer` is a
    name or an inline YAML mapping."""
    import json

    plan_path = tmp / f"{name}-plan.json"
    plan_path.write_text(json.dumps(plan or {}))
    spec = tmp / f"{name}.yaml"
    cmd = [sys.executable, str(corpus / "trainer.py"), "{mixture_json}", "{metrics_json}", str(plan_path)]
    spec.write_text(f"""
name: {name}
dataset: {corpus / 'corpus.yaml'}
proxy: {{name: cmd, kind: command, tokens: 1000, timeout_s: {timeout_s}, proxies_per_task: {per_task},
        command: {json.dumps(cmd)}}}
optimizer: {optimizer if optimizer.startswith("{") else "{name: " + optimizer + "}"}
budget: {{runs: {runs}}}
ladder: false  # these tests count the search's own runs; the ladder's fault handling is tested in test_search
parallelism: {parallelism}
seed: 3
{extra}
""")
    return spec


@pytest.fixture(scope="session")
def shared_wd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One workdir for the tests that do not count jobs: the corpus is prepared and the MLflow store created
    (its schema migrations take seconds) once."""
    return tmp_path_factory.mktemp("shared-wd")


@pytest.fixture(scope="session")
def ray_head(figure) -> Iterator[dict[str, str]]:
    """A Ray head with its dashboard (job submission), like a cluster's, in its own process group."""
    ray = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # Ray's socket paths must stay short
    port, dash = free_port(), free_port()
    # Token authentication, as ray_cluster.yaml starts a head: the token is Ray's default one (~/.ray/auth_token,
    # which Ray's own tooling writes when it is missing), so the clients below find it where a user's would.
    subprocess.run([ray, "get-auth-token", "--generate"], check=True, capture_output=True)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_AUTH_TOKEN", None)
    t0 = time.time()
    proc = subprocess.Popen([ray, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                             "--num-cpus=4", "--num-gpus=0", "--object-store-memory=100000000",
                             f"--temp-dir={temp}", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{dash}/api/version", proc, timeout=180)
        figure(f"Ray head with dashboard up in {time.time() - t0:.1f} s")
        yield {"gcs": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dash}", "temp": temp}
    finally:
        stop_group(proc)
        shutil.rmtree(temp, ignore_errors=True)


class MlflowServer:
    """`mlflow server` on 127.0.0.1 over a SQLite store; stop() and start() it at will (same store, same port)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        mlflow = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(
            [mlflow, "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1", "--artifacts-destination",
             (self.root / "artifacts").as_uri()],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        wait_http(self.uri + "/health", self.proc, timeout=120)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, grace=5)
            self.proc = None


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path / "mlflow-server")
    server.root.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mixopt.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200", **(env or {})})
