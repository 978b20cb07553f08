"""The `mixopt` command. Bad input ends as one red line naming the file, the field and the fix (exit code 2)."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mixopt.errors import InputError, MixoptError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Data mixture optimization for LM pretraining: train proxy models on mixtures of your "
                       "domains (on Ray), fit a mixture optimizer, get the mixture for the real run.")
console = Console(log_path=False)
err_console = Console(stderr=True)

WorkdirOpt = Annotated[Path, typer.Option("--workdir", "-w", help="Where jobs, prepared data and the MLflow "
                                          "store live.", envvar="MIXOPT_WORKDIR")]
JobArg = Annotated[str | None, typer.Argument(help="Job id (see `mixopt status`) or job folder; default: the "
                                              "newest job.")]
DEFAULT_WD = Path("mixopt-work")


def main() -> None:
    logging.basicConfig(level=os.environ.get("MIXOPT_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    # `mixopt stop` and `ray job stop` send SIGTERM: end like Ctrl-C, so the job is marked interrupted.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app(standalone_mode=False)
    except InputError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except MixoptError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted: finished runs are kept; continue with `mixopt resume`")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # click usage errors carry their own exit code
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


# ---------------------------------------------------------------------------------------------- search


class _Live:
    """Progress bar for a search, fed by the driver's events."""

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[best]}"), console=console)
        self.task: Any = None
        self.best = math.inf
        self.path: Path | None = None  # where the job's recommendation.json is, once the job folder exists
        self.shown = False  # the recommendation was printed when it came

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        p = self.progress
        if event == "prepare":
            console.log(f"prepared domain [cyan]{data['domain']}[/] ({data['i']}/{data['n']})")
        elif event == "job":
            console.log(f"job [bold]{data['job_id']}[/] in {data['path']}")
            self.path = Path(data["path"]) / "recommendation.json"
            if data.get("best") is not None:  # a resumed job: its earlier sessions' runs count too
                self.best = float(data["best"])
            self.task = p.add_task("proxy runs", total=data["budget"], completed=data["done"],
                                   best=f"best {self.best:.4f}" if math.isfinite(self.best) else "")
        elif event == "ladder":
            fid = data["fidelity"]
            console.log(f"verification ladder: {len(data['mixtures'])} mixtures at {fid.get('params', 0):,.0f} "
                        f"params × {fid.get('tokens', 0):,.0f} tokens ({', '.join(data['mixtures'])})")
            self.ladder = p.add_task("ladder runs", total=data["runs"], completed=data["runs"] - data["todo"], best="")
        elif event == "result" and data.get("stage") == "ladder" and getattr(self, "ladder", None) is not None:
            obj = data.get("objective")
            p.console.log(f"ladder {data['run_id']} " + (f"[green]ok[/] objective {obj:.4f}" if obj is not None
                                                         else f"[red]failed[/]: {data.get('error')}"))
            p.update(self.ladder, advance=1)
        elif event == "result" and self.task is not None:
            obj = data.get("objective")
            if obj is not None:
                self.best = min(self.best, obj)
            where = f"[{data['done']}/{data['budget']}] " if "done" in data else ""
            line = (f"{where}{data['run_id']} [green]ok[/] objective {obj:.4f} ({data.get('seconds') or 0:.1f}s)"
                    if data["status"] == "ok" else f"{where}{data['run_id']} [red]failed[/]: {data.get('error')}")
            p.console.log(line)
            p.update(self.task, advance=1, best=f"best {self.best:.4f}" if math.isfinite(self.best) else "")
        elif event == "warning":
            p.console.log(f"[yellow]warning:[/] {data['message']}")
        elif event == "recommendation" and self.path is not None:
            # Shown the moment it exists: the report and the MLflow upload that follow can take a while.
            self.progress.stop()
            _print_recommendation(data, self.path)
            self.shown = True
        elif event == "report":
            console.print("[dim]writing the job report (cross-validated predictions, charts) …[/]")


def _run_search(search: Any) -> None:
    live = _Live()
    search.on_event = live
    with live.progress:
        rec = search.run()
    if not live.shown:
        _print_recommendation(rec.to_dict(), search.store.path / "recommendation.json")


AddressOpt = Annotated[str | None, typer.Option(
    "--address", envvar="MIXOPT_ADDRESS", help="A Ray dashboard URL (http://HEAD:8265): the job runs on the "
    "cluster (job submission; you may disconnect). A Ray address (HOST:6379, ray://...): the driver runs here "
    "on that cluster. Default: a local Ray.")]


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="Search spec YAML, e.g. search/demo.yaml.")],
    workdir: WorkdirOpt = DEFAULT_WD,
    address: AddressOpt = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: a SQLite file in the "
                                                     "workdir), e.g. http://mlflow.internal:5000.")] = None,
    job_id: Annotated[str | None, typer.Option(hidden=True, help="Job id chosen by the submitting side.")] = None,
) -> None:
    """Validate a search spec, then run it: proxies on Ray, results in the job's run table and MLflow."""
    from mixopt.search import jobs
    from mixopt.search.checks import load_search_spec

    s = load_search_spec(spec)  # data sources are checked by prepare, before any job folder exists
    if jobs.is_job_address(address):
        assert address is not None
        remote_wd = None if workdir == DEFAULT_WD else str(workdir)
        jid = jobs.submit_job(s, address, remote_wd, tracking_uri)
        console.print(f"submitted job [bold]{jid}[/] to {address}")
        console.print(f"  follow it:  mixopt logs {jid} --address {address} --follow")
        console.print(f"  progress:   mixopt status {jid} --address {address}")
        console.print(f"  stop it:    mixopt stop {jid} --address {address}")
        return
    from mixopt.search.driver import Search

    _run_search(Search(s, workdir=workdir, ray_address=address, tracking_uri=tracking_uri, job_id=job_id))


@app.command()
def resume(job: JobArg = None, workdir: WorkdirOpt = DEFAULT_WD,
           address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None) -> None:
    """Continue a job from its run table: pending runs first (same mixture, same seed), then new rounds."""
    from mixopt.search import jobs
    from mixopt.search.driver import Search

    if jobs.is_job_address(address):
        raise InputError(f"--address {address}", "resume runs the driver where the job folder is",
                         f"on the head: `ray job submit --address {address} -- mixopt resume {job or 'JOB'} "
                         "--workdir WORKDIR`")
    _run_search(Search.resume(job, workdir=workdir, ray_address=address))


@app.command()
def status(job: JobArg = None, workdir: WorkdirOpt = DEFAULT_WD,
           all_jobs: Annotated[bool, typer.Option("--all", help="List every job, not only one.")] = False,
           address: AddressOpt = None) -> None:
    """Jobs in the workdir with their progress; with JOB, that job in detail. With --address (a dashboard URL),
    the jobs submitted to that cluster."""
    from mixopt.search.store import JobStore, list_jobs

    if address is not None:
        _cluster_status(address, job)
        return
    if job is None or all_jobs:
        jobs = list_jobs(workdir)
        if not jobs:
            console.print(f"no jobs in {workdir}/jobs — start one with `mixopt submit search/demo.yaml`")
            return
        # Compact enough for 80 columns; a job id is what the user copies, so it is never cut (a unique prefix
        # also works wherever a job is asked for).
        t = Table(title=f"jobs in {workdir}", box=None, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False,
                  header_style="bold")
        t.add_column("job", no_wrap=True, min_width=max(len(j.job_id) for j in jobs))
        for c in ("optimizer", "state"):  # words may fold onto a second line; ids and numbers never do
            t.add_column(c, overflow="fold")
        for c, w in (("ok/budget", 5), ("failed", 3), ("best", 6)):
            t.add_column(c, justify="right", no_wrap=True, min_width=w)
        for st in jobs:
            job_id, opt, state, ok, failed, pending, budget, best = _job_summary(st)
            t.add_row(job_id, opt, state, f"{ok}/{budget}" + (f" +{pending}" if pending not in ("", "0") else ""),
                      failed, best)
        console.print(t)
        return
    st = JobStore.open(workdir, job)
    row = _job_summary(st)
    for k, v in zip(("job", "optimizer", "state", "ok", "failed", "pending", "budget", "best objective"), row,
                    strict=True):
        console.print(f"[bold]{k:>15}[/]: {v}")
    eta = _eta(st)
    if eta:
        console.print(f"[bold]{'time left':>15}[/]: {eta}")
        flying = _in_flight(st)
        if flying:
            console.print(f"[bold]{'in flight':>15}[/]: {flying}", highlight=False)
    console.print(f"[bold]{'folder':>15}[/]: {st.path}")
    if (st.path / "recommendation.json").is_file():
        console.print(f"[bold]{'recommendation':>15}[/]: {st.path / 'recommendation.json'}")


def _job_summary(st: Any) -> tuple[str, ...]:
    import sqlite3

    try:
        spec = st.spec
        table = st.run_table()
        state = _state(st)
    except (InputError, sqlite3.DatabaseError) as e:
        return (st.path.name, "?", f"unreadable: {e}", "", "", "", "", "")
    counts = table.df["status"].value_counts().to_dict()
    best = ""
    if counts.get("ok"):
        _, y = table.usable(spec.objective)
        best = f"{y.min():.4f}" if len(y) else ""
    return (st.job_id, spec.optimizer.name, state, str(counts.get("ok", 0)),
            str(counts.get("failed", 0)), str(counts.get("pending", 0)), str(spec.budget.runs), best)


def _eta(st: Any, recent: int = 8) -> str:
    """About how long a running job's search has left: the remaining runs at the pace of its last `recent`
    finished runs (the ladder, which trains a larger proxy, comes after and is not counted)."""
    if str(st.get_meta("state")) != "running":
        return ""
    df = st.frame()
    if "stage" in df.columns:
        df = df[df["stage"] != "ladder"]
    done = df[df["status"].isin(["ok", "failed"])].sort_values("finished_at") if len(df) else df
    left = int(st.spec.budget.runs) - (int((df["status"] == "ok").sum()) if len(df) else 0)
    if left <= 0:
        return "the search's runs are done (the ladder or the recommendation is next)"
    if len(done) < 2:
        return f"{left} runs to go; a pace needs two finished runs"
    last = done.tail(recent + 1)
    per_run = (float(last["finished_at"].iloc[-1]) - float(last["finished_at"].iloc[0])) / (len(last) - 1)
    minutes = left * per_run / 60
    return (f"about {minutes:.0f} min for the search's {left} remaining runs (the last {len(last) - 1} runs' pace)"
            + (", then the ladder" if st.spec.ladder.enabled is not False else ""))


def _in_flight(st: Any, most: int = 6) -> str:
    """The runs a running job has proposed and not finished, and how long the oldest has been out: what the
    pending count stands for, and a run that hangs shows up here."""
    import time

    df = st.frame()
    pending = df[df["status"] == "pending"].sort_values("created_at") if len(df) else df
    if not len(pending):
        return ""
    ids = list(pending["run_id"])
    since = (time.time() - float(pending["created_at"].iloc[0])) / 60
    return (", ".join(ids[:most]) + (f" and {len(ids) - most} more" if len(ids) > most else "")
            + f" (the oldest proposed {since:.0f} min ago)")


def _state(st: Any) -> str:
    """The job's state; a `running` job whose driver died on this machine shows as such."""
    import socket

    from mixopt.search.store import alive

    state = str(st.get_meta("state"))
    driver = st.get_meta("driver") or {}
    if state == "running" and driver.get("host") == socket.gethostname() and not alive(driver.get("pid")):
        return "running (driver gone: `mixopt resume`)"
    return state


def _cluster_status(address: str, job: str | None) -> None:
    from mixopt.search import jobs

    if job is None:
        rows = jobs.list_cluster_jobs(address)
        if not rows:
            console.print(f"no mixopt jobs on {address}")
            return
        t = Table(title=f"mixopt jobs on {address}")
        for c in ("job", "spec", "status"):
            t.add_column(c)
        for r in rows:
            t.add_row(r["job"], r["spec"], r["status"])
        console.print(t)
        return
    info = jobs.job_info(address, job)
    for k in ("job", "status", "runs", "message", "last_line"):
        if info.get(k):
            console.print(f"[bold]{k.replace('_', ' '):>10}[/]: {info[k]}", highlight=False)


@app.command()
def logs(job: Annotated[str, typer.Argument(help="Job id, as `mixopt submit --address` printed it.")],
         address: AddressOpt = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream until the job ends.")] = False) -> None:
    """The output of a job submitted to a cluster."""
    from mixopt.search import jobs

    if not jobs.is_job_address(address):
        raise InputError("--address", "logs are kept by the cluster that runs the job",
                         "pass the dashboard URL the job was submitted to, e.g. --address http://127.0.0.1:8265")
    assert address is not None
    jobs.logs(address, job, lambda text: (sys.stdout.write(text), sys.stdout.flush()), follow)


@app.command()
def stop(job: Annotated[str, typer.Argument(help="Job id.")], workdir: WorkdirOpt = DEFAULT_WD,
         address: AddressOpt = None) -> None:
    """Stop a running job: finished runs are kept; `mixopt resume` continues it."""
    import socket

    from mixopt.search import jobs
    from mixopt.search.store import JobStore, alive

    if jobs.is_job_address(address):
        assert address is not None
        stopped = jobs.stop(address, job)
        console.print(f"{job}: {'stop requested' if stopped else 'not running'}")
        return
    st = JobStore.open(workdir, job)
    driver = st.get_meta("driver") or {}
    if st.get_meta("state") != "running" or not alive(driver.get("pid")):
        console.print(f"{st.job_id}: not running (state {st.get_meta('state')})")
        return
    if driver.get("host") != socket.gethostname():
        raise InputError(f"job {st.job_id}", f"its driver runs on {driver.get('host')}, not here",
                         "stop it from that machine, or with --address if it was submitted to a cluster")
    os.kill(int(driver["pid"]), signal.SIGTERM)
    console.print(f"{st.job_id}: stop requested (driver pid {driver['pid']})")


@app.command()
def sync(job: JobArg = None, workdir: WorkdirOpt = DEFAULT_WD,
         tracking_uri: Annotated[str | None, typer.Option(help="MLflow to mirror to (default: the one the job "
                                                          "used).")] = None) -> None:
    """Restore a job's MLflow view from its run table (after MLflow was down, or into another server)."""
    from mixopt.search.driver import Search

    search = Search.resume(job, workdir=workdir, tracking_uri=tracking_uri)
    with console.status(f"mirroring {search.store.job_id} to {search.tracking_uri}"):
        out = search.sync()
    console.print(f"{search.store.job_id} → {search.tracking_uri}: {out['runs_created']} MLflow runs created, "
                  f"{out['results_sent']} results sent"
                  + (", parent run finished" if out["parent_closed"] else "")
                  + (f"; {out['still_missing']} still missing" if out["still_missing"] else ""))


@app.command()
def report(job: JobArg = None, workdir: WorkdirOpt = DEFAULT_WD,
           out: Annotated[Path | None, typer.Option(help="HTML file to write (default: report.html in the job "
                                                    "folder).")] = None) -> None:
    """One self-contained HTML page (works offline) with the job's charts: objective vs runs and cost, the
    predictor against measurements, the recommendation against baselines, sensitivity, fidelities, clusters,
    mixing trajectories."""
    from mixopt.search.report import write_report
    from mixopt.search.store import JobStore

    st = JobStore.open(workdir, job)
    with console.status("writing the report"):
        path = write_report(st, out)
    console.print(f"report written to {path}")


@app.command()
def runs(job: JobArg = None, workdir: WorkdirOpt = DEFAULT_WD,
         fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv or json.")] = "table") -> None:
    """The job's run table: one row per proxy run (the same runs MLflow shows under the job's parent run)."""
    from mixopt.search.store import JobStore

    st = JobStore.open(workdir, job)
    table = st.run_table(ladder=True)  # the verification ladder's runs too, with their stage
    # csv/json carry the corpus token counts (tokens_<domain>), so recommending from the export gives the same
    # prior and caps as the job
    df = table.with_token_columns() if fmt in ("csv", "json") else table.df.copy()
    if len(df) and table.loss_columns:
        df["objective"] = table.objective(st.spec.objective)
    if fmt == "csv":
        sys.stdout.write(df.to_csv(index=False))
        return
    if fmt == "json":
        sys.stdout.write(df.to_json(orient="records", indent=1) + "\n")
        return
    if fmt != "table":
        raise InputError("--format", f"unknown format {fmt!r}", "use table, csv or json")
    from rich import box

    # Weights as percentages (3 characters), so that a run's mixture fits an 80-column terminal; the per-domain
    # losses only where the terminal is wide enough for them (every number of a table is then shown whole).
    wcols, lcols = table.weight_columns, table.loss_columns
    show_losses = bool(lcols) and console.width >= 18 + 7 * (len(wcols) + len(lcols)) + 10
    t = Table(title=f"{st.job_id}: {len(df)} runs, objective = {st.spec.objective.describe()}",
              box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False)
    t.add_column("run_id", no_wrap=True)
    t.add_column("status", no_wrap=True)
    for i, c in enumerate(wcols):  # long domain names fold in the header; the numbers never do
        t.add_column(("w% " if i == 0 else "") + c.removeprefix("w_"), justify="right", overflow="fold",
                     min_width=3)
    for i, c in enumerate(lcols if show_losses else []):
        t.add_column(("loss " if i == 0 else "") + c.removeprefix("loss_"), justify="right", overflow="fold",
                     min_width=5)
    t.add_column("objective", justify="right", no_wrap=True)
    for _, r in df.iterrows():
        t.add_row(str(r["run_id"]), str(r["status"]), *[f"{100 * float(r[c]):.0f}" for c in wcols],
                  *[_fmt(r.get(c)) for c in (lcols if show_losses else [])], _fmt(r.get("objective")))
    console.print(t)
    if lcols and not show_losses:
        console.print(f"per-domain losses left out at {console.width} columns: widen the terminal, or "
                      "`--format csv`")
    failed = df[df["status"] == "failed"]
    for _, r in failed.iterrows():  # why each failed run failed (the run table keeps the whole message)
        console.print(f"[red]failed[/] {r['run_id']}: {str(r.get('error') or 'no reason recorded')[:200]}")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.3f}"
    return "" if v is None else str(v)


@app.command()
def recommend(job: JobArg = None, workdir: WorkdirOpt = DEFAULT_WD,
              optimizer: Annotated[str | None, typer.Option(help="Recommend with another optimizer than the "
                                                            "job's (e.g. random = best observed run).")] = None,
              as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
              fmt: Annotated[str | None, typer.Option("--format", "-f", help="Export for a trainer: json, yaml, "
                                                      "megatron, hf, olmo, torchtitan.")] = None,
              target: Annotated[Path | None, typer.Option(help="Target run YAML (e.g. search/targets/moe-7b.yaml); "
                                                          "default: the spec's target block.")] = None,
              prefix: Annotated[list[str] | None, typer.Option(help="DOMAIN=PATH: what the trainer reads for a "
                                                               "domain (default: the domain name); repeatable.")
                                ] = None,
              out: Annotated[Path | None, typer.Option(help="Write the export here instead of stdout.")] = None,
              setting: Annotated[list[str] | None, typer.Option(
                  "--set", "-s", help="Optimizer setting KEY=VALUE (YAML value), over the job's own settings when "
                  "the optimizer is the job's, e.g. --optimizer cmr -s general=general -s domain=legal.")] = None,
              ) -> None:
    """Recommend a mixture from a job's runs so far, checked against the target run; export it for a trainer.

    With the job's own optimizer and settings, a finished job shows its recommendation.json (written once by the
    search, after its verification ladder); anything else is a what-if that is printed and never overwrites it.
    With --format and no --out,
    stdout holds only the export and the explanation (re-balancing, epochs, effective tokens) goes to stderr.
    """
    import yaml

    from mixopt.export import FORMATS, export
    from mixopt.optimizers import get_optimizer, list_optimizers
    from mixopt.search.store import JobStore
    from mixopt.spec import TargetSpec
    from mixopt.target import apply_target

    if fmt is not None and fmt not in FORMATS:
        raise InputError("--format", f"unknown format {fmt!r}", f"choose one of {', '.join(FORMATS)}")
    prefixes = _pairs(prefix or [], "--prefix", "--prefix web=/data/web_text_document")
    st = JobStore.open(workdir, job)
    saved = st.path / "recommendation.json"
    if out is not None and out.resolve() == saved.resolve():
        raise InputError(f"--out {out}", "that is the job's own recommendation.json (the search writes it once)",
                         "name another file for the export")
    spec = st.spec
    tgt = TargetSpec.from_yaml(target) if target is not None else spec.target
    if optimizer is not None and optimizer not in list_optimizers():
        raise InputError("--optimizer", f"unknown optimizer {optimizer!r}",
                         f"choose one of {', '.join(list_optimizers())}")
    name = optimizer or spec.optimizer.name
    settings = spec.optimizer.settings if name == spec.optimizer.name else {}
    settings |= {k: yaml.safe_load(v) for k, v in _pairs(setting or [], "--set", "--set epsilon=0.05").items()}
    try:
        opt = get_optimizer(name, seed=spec.seed, objective=spec.objective, **settings)
    except ValueError as e:
        raise InputError("--set / --optimizer", str(e), "see `mixopt optimizers`") from None
    table = st.run_table()
    path = None
    if name == spec.optimizer.name and not setting and target is None and saved.is_file():
        # The job's own result, verified by its ladder, is written once by the search; shown as it is.
        from mixopt.optimizers.base import Recommendation

        result = Recommendation(**json.loads(saved.read_text()))
        path = saved
    else:  # a what-if (another optimizer, other settings or target, or a job still running): printed only
        result = apply_target(opt.recommend(table, tgt), table.token_counts, tgt)
    rec = result.to_dict()
    if fmt is None and as_json:
        fmt = "json"
    if fmt is None:
        _print_recommendation(rec, path)
        return
    text = export(result, fmt, prefixes)
    if out is not None:
        out.write_text(text)
        _print_recommendation(rec, path)
        console.print(f"{fmt} export written to {out}")
        return
    sys.stdout.write(text)
    if fmt not in ("json", "yaml"):
        for n in rec.get("notes", []):
            err_console.print(f"• {n}", highlight=False, soft_wrap=True)


def _pairs(items: list[str], option: str, example: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise InputError(f"{option} {item}", "expected KEY=VALUE", f"e.g. {example}")
        pairs[key.strip()] = value.strip()
    return pairs


@app.command("recommend-table")
def recommend_table(
    runs_file: Annotated[Path, typer.Argument(help="CSV or Parquet with w_<domain> and loss_<domain> columns.")],
    optimizer: Annotated[str, typer.Option(help="Optimizer to recommend with.")] = "regmix",
    objective: Annotated[list[str] | None, typer.Option(help="Loss column to minimise; repeat for their mean. "
                                                        "Default: the mean of every loss_ column.")] = None,
    token_counts: Annotated[Path | None, typer.Option(help="YAML/JSON mapping domain -> tokens (gives the "
                                                      "prior and the repetition caps).")] = None,
    setting: Annotated[list[str] | None, typer.Option("--set", "-s", help="Optimizer setting KEY=VALUE (YAML "
                                                      "value), e.g. -s predictor=gp -s n_candidates=100000.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulation.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Recommend a mixture from runs you already have — no search, no proxies (e.g. RegMix's released runs)."""
    import yaml
    from pydantic import ValidationError

    from mixopt.optimizers import get_optimizer
    from mixopt.spec import ObjectiveSpec, validation_to_input_error

    counts = None
    if token_counts is not None:
        if not token_counts.is_file():
            raise InputError(str(token_counts), "file not found", "check the path")
        counts = yaml.safe_load(token_counts.read_text())
        if not isinstance(counts, dict):
            raise InputError(str(token_counts), "expected a mapping domain: tokens", "write one line per domain")
    table = _read_table(runs_file, counts)
    settings: dict[str, Any] = {k: yaml.safe_load(v) for k, v in
                                _pairs(setting or [], "--set", "--set predictor=gp").items()}
    try:
        obj = ObjectiveSpec(metrics=list(objective)) if objective else ObjectiveSpec()
    except ValidationError as e:
        raise validation_to_input_error(e, "--objective") from None
    try:
        opt = get_optimizer(optimizer, seed=seed, objective=obj, **settings)
    except ValueError as e:
        raise InputError("--set / --optimizer", str(e), "see `mixopt optimizers`") from None
    rec = opt.recommend(table).to_dict()
    if as_json:
        sys.stdout.write(json.dumps(rec, indent=2) + "\n")
    else:
        _print_recommendation(rec, None)


def _read_table(path: Path, counts: dict[str, Any] | None) -> Any:
    """A run table from a user's file; whatever pandas cannot parse becomes one line, not a traceback."""
    from mixopt.runs import RunTable

    try:
        return RunTable.from_file(path, token_counts=counts)
    except MixoptError:
        raise
    except (ValueError, UnicodeDecodeError, OSError, TypeError) as e:  # pandas/pyarrow parse errors are these
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise InputError(str(path), f"not a readable CSV/Parquet run table ({first})",
                         "write one row per run with w_<domain> and loss_<domain> columns") from None


def _print_recommendation(rec: dict[str, Any], path: Path | None) -> None:
    t = Table(title=f"recommended mixture ({rec['method']}, objective {rec['objective']})")
    t.add_column("domain")
    t.add_column("weight", justify="right")
    t.add_column("", justify="left")
    for d, w in sorted(rec["weights"].items(), key=lambda kv: -kv[1]):
        t.add_row(d, f"{w:.4f}", "█" * int(round(w * 40)))
    console.print(t)
    if rec.get("predicted") is not None:
        unc = f" ± {rec['uncertainty']:.4f}" if rec.get("uncertainty") is not None else ""
        console.print(f"predicted objective: [bold]{rec['predicted']:.4f}[/]{unc}  "
                      f"(from {len(rec.get('runs_used', []))} runs)")
    details = rec.get("details") or {}
    evidence = []
    if details.get("oof_spearman") is not None:
        evidence.append(f"out-of-fold ρ {details['oof_spearman']:.2f}")
    if details.get("best_run"):
        evidence.append(f"best measured run {details['best_run']['run_id']} {details['best_run']['objective']:.4f}")
    if details.get("distance_to_prior"):
        dp = details["distance_to_prior"]
        evidence.append(f"from the prior: KL {dp['kl']:.3f}, L1 {dp['l1']:.3f}")
    if details.get("kl_lambda") is not None:
        evidence.append(f"kl_lambda {details['kl_lambda']:g} ({details.get('kl_lambda_choice', 'set')})")
    if evidence:
        console.print("evidence: " + "; ".join(evidence), highlight=False)
    notes = rec.get("notes", [])
    for n in notes:  # what says not to trust it comes beside the evidence, not after the tables
        if n.startswith("warning:"):
            console.print(f"[bold yellow]warning:[/] {escape(n.removeprefix('warning:').strip())}", highlight=False)
    lad = details.get("ladder")
    if lad and lad.get("rows"):
        fid = lad.get("fidelity") or {}
        lt = Table(title=f"verification ladder: {fid.get('params', 0):,.0f} params × {fid.get('tokens', 0):,.0f} "
                         f"tokens, {len(lad.get('seeds', []))} paired seeds")
        for c in ("mixture", "kind", "objective per seed", "mean", ""):
            lt.add_column(c, justify="right" if c == "mean" else "left")
        for r in sorted(lad["rows"], key=lambda r: (r["mean"] != r["mean"], r["mean"])):
            vals = ", ".join("failed" if v != v else f"{v:.4f}" for v in r["values"])
            lt.add_row(r["label"], r["kind"], vals, f"{r['mean']:.4f}", "◀ recommended" if r["label"] ==
                       lad.get("winner") else "")
        console.print(lt)
    clusters = details.get("clusters")
    if clusters:  # discovered domains (climb with `manifest`): what each cluster holds, next to its weight
        ct = Table(title="the clusters", show_lines=True)
        for c in ("domain", "weight", "documents", "top terms", "example"):
            ct.add_column(c, justify="right" if c in ("weight", "documents") else "left", overflow="fold")
        for d, c in clusters.items():
            example = escape(c["examples"][0][:120]) if c.get("examples") else ""  # snippets may hold [markup]
            ct.add_row(d, f"{c['weight']:.4f}", f"{c['documents']:,}", escape(", ".join(c["top_terms"][:8])),
                       example)
        console.print(ct)
    for n in notes:
        if not n.startswith("warning:"):
            console.print(f"  • {n}", highlight=False)
    if path:
        console.print(f"the job's recommendation: {path}")


@app.command()
def optimizers() -> None:
    """The registered mixture optimizers and their settings."""
    from mixopt.optimizers import list_optimizers, optimizer_class

    t = Table(title="optimizers")
    t.add_column("name")
    t.add_column("what it does")
    t.add_column("settings (default)")
    for name in list_optimizers():
        cls = optimizer_class(name)
        # A plug-in may have no docstring at all: its module's, else its class's, else a dash.
        text = getattr(sys.modules.get(cls.__module__), "__doc__", None) or cls.__doc__ or "—"
        doc = text.strip().splitlines()[0] if text.strip() else "—"
        settings = ", ".join(f"{k}={f.default}" for k, f in cls.Settings.model_fields.items()) or "—"
        t.add_row(name, doc.split(":", 1)[-1].strip(), settings)
    console.print(t)


@app.command()
def proxies(
    files: Annotated[list[Path] | None, typer.Argument(help="Proxy specs to describe (default: the zoo, "
                                                            "proxies/*.yaml beside this installation).")] = None,
    vocab: Annotated[int, typer.Option(help="Vocabulary size to count embeddings with (257 = bytes).")] = 257,
) -> None:
    """The proxy zoo: parameters (total and active), FLOPs per token, budget and steps of each proxy spec."""
    import yaml

    from mixopt.proxies import model_size
    from mixopt.spec import ProxySpec, _validate

    if not files:
        files = sorted((Path(__file__).resolve().parents[1] / "proxies").glob("*.yaml"))
    t = Table(title=f"proxies (vocabulary {vocab:,})")
    for c in ("file", "name", "kind", "layers×d", "params", "active", "non-emb", "MFLOP/tok", "tokens",
              "steps", "batch×ctx"):
        t.add_column(c, justify="left" if c in ("file", "name", "kind") else "right")
    for f in files:
        if not f.is_file():
            raise InputError(str(f), "file not found", "give a proxy spec such as proxies/tiny.yaml")
        spec = _validate(ProxySpec, yaml.safe_load(f.read_text()) or {}, f)
        if spec.kind == "command":
            t.add_row(f.name, spec.name, "command", "—", "—", "—", "—", "—", f"{spec.tokens:,}", "—", "—")
            continue
        size = model_size(spec, vocab)
        t.add_row(f.name, spec.name, spec.kind, f"{spec.n_layer}×{spec.d_model}", _count(size.total),
                  _count(size.active), _count(size.non_embedding), f"{size.flops_per_token / 1e6:.2f}",
                  f"{spec.tokens:,}", f"{spec.steps:,}", f"{spec.batch_size}×{spec.seq_len}")
    console.print(t)


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


@app.command()
def ui(workdir: WorkdirOpt = DEFAULT_WD,
       port: Annotated[int, typer.Option(help="Port to serve on.")] = 5000,
       host: Annotated[str, typer.Option(help="Interface; keep 127.0.0.1 unless you mean to share it.")] = "127.0.0.1",
       tracking_uri: Annotated[str | None, typer.Option(help="MLflow store (default: the workdir's).")] = None,
       ) -> None:
    """Serve the MLflow UI on the workdir's store (one lightweight worker)."""
    from mixopt.search.tracking import default_tracking_uri

    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[yellow]warning:[/] serving on {host}: anyone who reaches this port can read and change "
                          "every run of the store, since MLflow's server has no login unless you enable it (README, "
                          "'A shared MLflow server')")
    uri = tracking_uri or default_tracking_uri(workdir)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise InputError(str(workdir), "no MLflow store here yet", "run a search first, or pass --workdir")
    mlflow = shutil.which("mlflow") or "mlflow"
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    cmd = [mlflow, "server", "--backend-store-uri", uri, "--host", host, "--port", str(port), "--workers", "1",
           "--default-artifact-root", (Path(workdir) / "mlartifacts").resolve().as_uri()]
    console.print(f"MLflow UI on http://{host}:{port} (store {uri}); Ctrl-C to stop")
    raise typer.Exit(subprocess.call(cmd, env=env))


# ---------------------------------------------------------------------------------------------- data

data_app = typer.Typer(no_args_is_help=True, help="Prepare dataset manifests into packed token arrays; "
                       "discover domains by clustering documents.")
app.add_typer(data_app, name="data")


@data_app.command("prepare")
def data_prepare(manifest: Annotated[Path, typer.Argument(help="Dataset manifest, e.g. datasets/demo.yaml.")],
                 workdir: WorkdirOpt = DEFAULT_WD) -> None:
    """Read, de-duplicate, split and tokenize every domain into WORKDIR/data (a no-op when nothing changed)."""
    from mixopt.data import prepare
    from mixopt.data.prepare import fingerprint
    from mixopt.spec import load_dataset

    spec = load_dataset(manifest)
    out = workdir / "data" / f"{spec.name}-{fingerprint(spec)}"
    reused = (out / "index.json").is_file()
    progress = Progress(TextColumn("[bold]{task.description:<14}"), BarColumn(), TextColumn("{task.fields[what]}"),
                        TimeElapsedColumn(), console=console)
    tasks = {d: progress.add_task(d, total=None, what="waiting") for d in spec.domains}

    def on_progress(domain: str, phase: str, done: int, total: int | None) -> None:
        what = f"read {done:,} documents" if phase == "read" else f"tokenized {done / 1e6:.1f}/{total / 1e6:.1f} MB"
        progress.update(tasks[domain], completed=done, total=total, what=what)

    def on_domain(domain: str, i: int, n: int) -> None:
        progress.update(tasks[domain], completed=1, total=1, what="done")

    with progress:
        data = prepare(spec, workdir / "data", on_domain=on_domain, on_progress=on_progress)
        for t in tasks.values():
            progress.update(t, completed=1, total=1, what="done")
    t = Table(title=f"{spec.name}: {'already prepared' if reused else 'prepared'} in {data.path} "
                    f"(tokenizer {data.index['tokenizer']['kind']}, vocab {data.vocab_size})")
    for c in ("domain", "files", "documents", "duplicates", "train tokens", "val tokens (docs)"):
        t.add_column(c, justify="left" if c == "domain" else "right")
    for d, v in data.index["domains"].items():
        split = v.get("split_files") or {}
        files = f"{v['text_files']:,}" if v.get("text_files") else "—"
        if split:
            files += f" ({len(split)} split)"
        t.add_row(d, files, f"{v['train_docs'] + v['val_docs']:,}", f"{v['source_docs'] - v['distinct_docs']:,}",
                  f"{v['train_tokens']:,}", f"{v['val_tokens']:,} ({v['val_docs']:,})")
    console.print(t)


@data_app.command("demo")
def data_demo(workdir: WorkdirOpt = DEFAULT_WD) -> None:
    """Prepare the built-in demo corpus (datasets/demo.yaml): text every mixopt installation has, 7 domains."""
    from mixopt.spec import load_dataset

    manifest = Path(__file__).resolve().parents[1] / "datasets" / "demo.yaml"
    if not manifest.is_file():
        raise InputError(str(manifest), "the demo manifest is not beside this installation",
                         "install mixopt from its source tree (pip install -e .) or pass a manifest to "
                         "`mixopt data prepare`")
    spec = load_dataset(manifest)
    t = Table(title=f"demo corpus ({manifest})")
    t.add_column("domain")
    t.add_column("what it holds")
    for name, dom in spec.domains.items():
        t.add_row(name, dom.description or "")
    console.print(t)
    data_prepare(manifest, workdir)


@data_app.command("discover")
def data_discover(
    manifest: Annotated[Path, typer.Argument(help="Dataset manifest whose documents to cluster.")],
    k: Annotated[int, typer.Option("--k", min=2, help="Initial k-means clusters (before pruning and merging).")],
    out: Annotated[Path | None, typer.Option(help="Manifest to write (default: NAME-clusters.yaml beside "
                                             "MANIFEST); cluster documents go to a folder of the same name.")
                   ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: the manifest's).")] = None,
    embedder: Annotated[str, typer.Option(help="tfidf (hashed n-gram TF-IDF + SVD), or the folder of a local "
                                          "sentence-transformers model.")] = "tfidf",
    merge_distance: Annotated[float, typer.Option(help="Merge clusters whose Ward distance on centroids is "
                                                  "below this.")] = 1.0,
    final_k: Annotated[int | None, typer.Option(help="Merge down to this many clusters instead.")] = None,
    min_cluster_frac: Annotated[float, typer.Option(help="Prune clusters smaller than this share of the "
                                                    "average cluster.")] = 0.2,
    chunk_chars: Annotated[int, typer.Option(min=0, help="Cluster pieces of at most this many characters, cut "
                                             "at line breaks (0: whole documents, each embedded by its start)."
                                             )] = 4000,
) -> None:
    """Cluster the manifest's documents (CLIMB-style) and write a new manifest whose domains are the clusters.

    Documents are cut into pieces of about a page (--chunk-chars) before they are embedded, so a domain of a
    few large files spreads over the clusters its text belongs to. Shares are in bytes of text.
    """
    from mixopt.data.discover import cluster_name, discover
    from mixopt.spec import load_dataset

    spec = load_dataset(manifest)
    out = out or manifest.with_name(f"{spec.name}-clusters.yaml")
    with console.status("discovering") as st:
        d = discover(spec, k=k, out=out, seed=seed, embedder=embedder, merge_distance=merge_distance,
                     final_k=final_k, min_cluster_frac=min_cluster_frac, on_stage=lambda s: st.update(s),
                     chunk_chars=chunk_chars)
    total = sum(i.bytes for i in d.clusters) or 1
    t = Table(title=f"{len(d.clusters)} domains from {len(d.labels):,} pieces in {d.seconds['total']:.1f}s")
    for c in ("domain", "share", "MB", "pieces", "mostly from (bytes)", "top terms"):
        t.add_column(c, justify="right" if c in ("share", "MB", "pieces") else "left",
                     overflow="fold" if c == "top terms" else "ellipsis")
    for c, info in enumerate(d.clusters):
        main_origin, n = next(iter(info.origin_bytes.items()))
        t.add_row(cluster_name(c, len(d.clusters)), f"{info.bytes / total:.0%}", f"{info.bytes / 1e6:.2f}",
                  f"{info.documents:,}", f"{main_origin} ({n / max(1, info.bytes):.0%})",
                  escape(", ".join(info.top_terms[:6])))
    console.print(t)
    console.print(f"written to {out} (prepare it with `mixopt data prepare {out}`)")


if __name__ == "__main__":
    main()
