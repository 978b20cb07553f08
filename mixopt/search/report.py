"""`mixopt report JOB`: one self-contained HTML page per job (plotly.js inlined, so it opens offline).

Everything on the page is read from the job folder (run table, spec, recommendation.json); nothing comes from
MLflow. A chart whose data the job does not have (no clusters, no mixing trajectories, too few runs for a
predictor) is replaced by a sentence saying why, so every chart on the page has data.

The page layout (styles, header) is `dashboards/report.html` beside the package; without it (a wheel install)
a bare page is written.
"""

from __future__ import annotations

import html
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mixopt.runs import RunTable
from mixopt.search.store import JobStore

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().parents[2] / "dashboards" / "report.html"
BARE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>{{title}}</title>
<script>{{plotly_js}}</script></head><body><h1>{{title}}</h1>{{summary}}{{charts}}<p>{{generated}}</p></body></html>"""
LOO_MAX = 12  # leave-one-out up to this many runs, 6-fold cross-validation beyond (a refit per fold: the
CV_FOLDS = 6  # report of a 24-run job took minutes under load with leave-one-out)
COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974",
          "#64B5CD"]


class _Page:
    def __init__(self) -> None:
        self.charts: list[str] = []

    def chart(self, title: str, fig: Any, why: str) -> None:
        fig.update_layout(title=None, margin={"l": 60, "r": 20, "t": 30, "b": 50}, height=380,
                          template="plotly_white", legend={"orientation": "h", "y": -0.2})
        div = fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False,
                                                                            "responsive": True})
        self.charts.append(f'<section class="chart"><h2>{html.escape(title)}</h2>'
                           f'<p class="why">{html.escape(why)}</p>{div}</section>')

    def note(self, title: str, text: str) -> None:
        self.charts.append(f'<section class="chart missing"><h2>{html.escape(title)}</h2>'
                           f'<p class="why">{html.escape(text)}</p></section>')


def write_report(store: JobStore, out: Path | None = None) -> Path:
    """Write the job's report (default `report.html` in the job folder) and return its path."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    spec = store.spec
    table = store.run_table()
    df = table.df.copy()
    rec = _read_json(store.path / "recommendation.json")
    domains = table.domains
    y = table.objective(spec.objective) if table.loss_columns else np.full(len(df), np.nan)
    df["objective"] = y
    ok = (df["status"] == "ok").to_numpy() & np.isfinite(y) if len(df) else np.zeros(0, dtype=bool)
    page = _Page()

    _objective_by_run(page, go, df, ok)
    _objective_by_cost(page, go, df, ok)
    _predicted_vs_measured(page, go, store, table, spec)
    _recommendation_vs_baselines(page, go, df, ok, domains, table, rec)
    _ladder(page, go, rec)
    _sensitivity(page, go, df, ok, domains)
    _fidelity_usage(page, go, df, spec)
    _clusters(page, go, spec, rec, domains)
    _trajectories(page, go, df, ok)

    title = f"mixopt report: {store.job_id}"
    body = _summary(store, spec, df, ok, rec)
    template = TEMPLATE.read_text() if TEMPLATE.is_file() else BARE
    generated = f"written {time.strftime('%Y-%m-%d %H:%M:%S')} from {html.escape(str(store.path))}"
    text = (template.replace("{{title}}", html.escape(title)).replace("{{summary}}", body)
            .replace("{{charts}}", "\n".join(page.charts)).replace("{{generated}}", generated))
    text = text.replace("{{plotly_js}}", get_plotlyjs().replace("</script", "<\\/script"))
    out = Path(out) if out is not None else store.path / "report.html"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out


# ---------------------------------------------------------------------------------------------- charts


def _objective_by_run(page: _Page, go: Any, df: pd.DataFrame, ok: np.ndarray) -> None:
    title = "Objective by run"
    if not ok.any():
        page.note(title, "No successful run yet.")
        return
    d = df[ok]
    fig = go.Figure()
    fig.add_scatter(x=d["idx"], y=d["objective"], mode="markers", name="run", text=d["run_id"],
                    marker={"color": COLORS[0], "size": 8}, hovertemplate="%{text}: %{y:.4f}<extra></extra>")
    best = np.minimum.accumulate(d["objective"].to_numpy())
    fig.add_scatter(x=d["idx"], y=best, mode="lines", name="best so far", line={"shape": "hv", "color": COLORS[1]})
    failed = df[df["status"] == "failed"]
    if len(failed):
        top = float(d["objective"].max())
        fig.add_scatter(x=failed["idx"], y=[top] * len(failed), mode="markers", name="failed (not to scale)",
                        text=[f"{r}: {str(e)[:120]}" for r, e in zip(failed["run_id"], failed["error"], strict=True)],
                        marker={"symbol": "x", "color": COLORS[3], "size": 9}, hovertemplate="%{text}<extra></extra>")
    fig.update_xaxes(title="run (order proposed)")
    fig.update_yaxes(title="objective (lower is better)")
    page.chart(title, fig, "Every successful proxy run, in the order it was proposed, and the best so far. "
               "Failed runs are marked at the top; they count against the budget and never reach a predictor.")


def _cost(df: pd.DataFrame) -> tuple[np.ndarray, str]:
    if "fid_flops" in df.columns and df["fid_flops"].notna().any():
        return df["fid_flops"].fillna(0).to_numpy(dtype=float), "training FLOPs spent"
    if "seconds" in df.columns and df["seconds"].notna().any():
        return df["seconds"].fillna(0).to_numpy(dtype=float), "proxy seconds spent"
    return np.ones(len(df)), "runs"


def _objective_by_cost(page: _Page, go: Any, df: pd.DataFrame, ok: np.ndarray) -> None:
    title = "Best objective vs cost"
    if not ok.any():
        page.note(title, "No successful run yet.")
        return
    done = df[df["status"] != "pending"].sort_values("finished_at" if "finished_at" in df.columns else "idx")
    cost, label = _cost(done)
    cum = np.cumsum(cost)
    obj = done["objective"].to_numpy(dtype=float)
    best = np.fmin.accumulate(np.where(np.isfinite(obj) & (done["status"] == "ok").to_numpy(), obj, np.nan))
    fig = go.Figure()
    good = np.isfinite(obj) & (done["status"] == "ok").to_numpy()
    fig.add_scatter(x=cum[good], y=obj[good], mode="markers", name="run", text=done["run_id"][good],
                    marker={"color": COLORS[0], "size": 7}, hovertemplate="%{text}: %{y:.4f}<extra></extra>")
    fig.add_scatter(x=cum, y=best, mode="lines", name="best so far", line={"shape": "hv", "color": COLORS[1]},
                    connectgaps=True)
    fig.update_xaxes(title=f"cumulative {label} (in order of completion)")
    fig.update_yaxes(title="objective")
    page.chart(title, fig, f"What the search bought with its budget: the best objective against cumulative "
               f"{label}, counting failed runs too.")


def _predicted_vs_measured(page: _Page, go: Any, store: JobStore, table: RunTable, spec: Any) -> None:
    title = "Predicted vs measured"
    usable, y = table.usable(spec.objective)
    model_of = _predictor_factory(spec)
    if model_of is None:
        page.note(title, f"Skipped: optimizer {spec.optimizer.name} has no regression predictor to check.")
        return
    if len(usable) < 5:
        page.note(title, f"Skipped: {len(usable)} successful runs; cross-validation needs at least 5.")
        return
    X, y = usable.weights, np.asarray(y, dtype=float)
    n = len(y)
    folds = n if n <= LOO_MAX else CV_FOLDS
    order = np.random.default_rng(0).permutation(n)
    pred = np.empty(n)
    try:
        for k in range(folds):
            test = order[k::folds]
            train = np.setdiff1d(order, test)
            pred[test] = np.asarray(model_of().fit(X[train], y[train]).predict(X[test]), dtype=float)
    except Exception as e:  # a predictor that cannot fit this table: say so rather than fail the report
        page.note(title, f"Skipped: the predictor could not be cross-validated here ({str(e)[:200]}).")
        return
    from scipy.stats import spearmanr

    rho = float(spearmanr(pred, y).statistic) if n > 2 else math.nan
    mae = float(np.mean(np.abs(pred - y)))
    how = "leave-one-out" if folds == n else f"{folds}-fold cross-validation"
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    fig = go.Figure()
    fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="predicted = measured",
                    line={"dash": "dot", "color": COLORS[7]})
    fig.add_scatter(x=y, y=pred, mode="markers", name=f"runs (Spearman ρ {rho:.3f}, MAE {mae:.4f})",
                    text=usable.run_ids(), marker={"color": COLORS[2], "size": 8},
                    hovertemplate="%{text}: measured %{x:.4f}, predicted %{y:.4f}<extra></extra>")
    fig.update_xaxes(title="measured objective")
    fig.update_yaxes(title="predicted (held out)")
    page.chart(title, fig, f"The optimizer's predictor ({model_of.name}) predicting each run it was not fitted "
               f"on ({how} over {n} runs).")


def _predictor_factory(spec: Any) -> Any:
    """A function returning a fresh, unfitted copy of the optimizer's predictor, or None when it has none."""
    from mixopt.optimizers import get_optimizer
    from mixopt.predictors import PREDICTORS, make_predictor

    opt = get_optimizer(spec.optimizer.name, seed=spec.seed, objective=spec.objective, **spec.optimizer.settings)
    name = getattr(opt.settings, "predictor", None)
    if not isinstance(name, str) or name not in PREDICTORS:
        return None
    from mixopt.optimizers.base import BuildsPredictor

    def fresh() -> Any:  # RegMix-style optimizers build theirs with their own settings
        return opt.predictor(spec.seed) if isinstance(opt, BuildsPredictor) else make_predictor(name, seed=spec.seed)

    fresh.name = name  # type: ignore[attr-defined]
    return fresh


def _recommendation_vs_baselines(page: _Page, go: Any, df: pd.DataFrame, ok: np.ndarray, domains: list[str],
                                 table: RunTable, rec: dict[str, Any] | None) -> None:
    title = "Recommended mixture vs baselines"
    bars: list[tuple[str, list[float]]] = []
    if rec and rec.get("weights"):
        pred = f", predicted {rec['predicted']:.4f}" if rec.get("predicted") is not None else ""
        bars.append((f"recommended ({rec.get('method')}{pred})", [rec["weights"].get(d, 0.0) for d in domains]))
    if ok.any():
        best = df[ok].loc[df[ok]["objective"].idxmin()]
        bars.append((f"best run {best['run_id']} (measured {best['objective']:.4f})",
                     [float(best[f"w_{d}"]) for d in domains]))
    bars.append(("uniform", [1 / len(domains)] * len(domains)))
    prior = table.prior
    if prior is not None:
        bars.append(("natural (∝ tokens)", [float(x) for x in prior]))
    if len(bars) < 2 or not (rec and rec.get("weights")):
        page.note(title, "No recommendation yet (the search has not finished, or nothing could be recommended).")
        return
    fig = go.Figure()
    for i, (name, w) in enumerate(bars):
        fig.add_bar(x=domains, y=w, name=name, marker_color=COLORS[i % len(COLORS)])
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="weight")
    page.chart(title, fig, "The recommendation next to the best run measured, equal weights and the corpus' own "
               "proportions.")


def _ladder(page: _Page, go: Any, rec: dict[str, Any] | None) -> None:
    """The verification ladder: each mixture's objective per paired seed at the larger fidelity, and the verdict."""
    title = "Verification ladder"
    lad = ((rec or {}).get("details") or {}).get("ladder")
    if not lad or not lad.get("rows"):
        page.note(title, "No ladder: it was off, skipped (see the recommendation's notes), or the search has not "
                  "ended.")
        return
    rows = sorted(lad["rows"], key=lambda r: (r["mean"] != r["mean"], r["mean"]))
    fig = go.Figure()
    fig.add_bar(x=[r["label"] for r in rows], y=[r["mean"] for r in rows], name="mean over seeds",
                marker={"color": [COLORS[3] if r["label"] == lad.get("winner") else
                                  COLORS[0] if r["kind"] == "candidate" else COLORS[7] for r in rows]})
    for j, seed in enumerate(lad.get("seeds", [])):
        fig.add_scatter(x=[r["label"] for r in rows], y=[r["values"][j] for r in rows], mode="markers",
                        name=f"seed {seed}", marker={"size": 8, "color": COLORS[(j + 1) % len(COLORS)]})
    vals = [v for r in rows for v in r["values"] if v == v]
    if vals:
        pad = (max(vals) - min(vals)) * 0.5 + 1e-3
        fig.update_yaxes(range=[min(vals) - pad, max(vals) + pad], title="objective at the ladder's fidelity")
    fid = lad.get("fidelity") or {}
    ratio = lad.get("compute_vs_search")
    page.chart(title, fig, f"{lad.get('reason', '')}. Trained at {fid.get('params', 0):,.0f} parameters × "
               f"{fid.get('tokens', 0):,.0f} tokens, every mixture of a seed with the same initialisation and data "
               f"order; the ladder's compute was {ratio:.2f}× the search's." if ratio else lad.get("reason", ""))


def _sensitivity(page: _Page, go: Any, df: pd.DataFrame, ok: np.ndarray, domains: list[str]) -> None:
    title = "Per-domain sensitivity"
    if ok.sum() < 4:
        page.note(title, f"Skipped: {int(ok.sum())} successful runs; a rank correlation needs at least 4.")
        return
    from scipy.stats import spearmanr

    d = df[ok]
    rho = []
    for dom in domains:
        w = d[f"w_{dom}"].to_numpy(dtype=float)
        rho.append(0.0 if np.ptp(w) == 0 else float(spearmanr(w, d["objective"]).statistic))
    fig = go.Figure()
    fig.add_bar(x=domains, y=rho, marker_color=[COLORS[2] if r < 0 else COLORS[3] for r in rho],
                hovertemplate="%{x}: ρ = %{y:.3f}<extra></extra>", name="Spearman ρ")
    fig.update_yaxes(title="Spearman ρ(weight, objective)", range=[-1, 1])
    page.chart(title, fig, "Rank correlation between each domain's weight and the objective over the successful "
               "runs: negative (green) means more of that domain went with a lower loss.")


def _fidelity_usage(page: _Page, go: Any, df: pd.DataFrame, spec: Any) -> None:
    title = "Fidelity usage"
    done = df[df["status"] != "pending"]
    if not len(done):
        page.note(title, "No finished run yet.")
        return
    names = [p.name for p in spec.proxies]
    level = done["fid_level"].fillna(0).astype(int) if "fid_level" in done.columns else pd.Series(0, done.index)
    label = [f"{names[i] if i < len(names) else i} (level {i})" for i in level]
    cost, what = _cost(done)
    g = pd.DataFrame({"fidelity": label, "status": done["status"].to_numpy(), "cost": cost})
    fig = go.Figure()
    for i, st in enumerate(("ok", "failed")):
        counts = g[g["status"] == st].groupby("fidelity").size()
        if len(counts):
            fig.add_bar(x=counts.index, y=counts.to_numpy(), name=f"{st} runs", marker_color=COLORS[2 if i == 0 else 3])
    share = g.groupby("fidelity")["cost"].sum()
    fig.add_scatter(x=share.index, y=(share / max(share.sum(), 1e-12) * 100).to_numpy(), mode="markers+text",
                    name=f"% of {what}", yaxis="y2", marker={"size": 12, "color": COLORS[1]},
                    text=[f"{v:.0f}%" for v in share / max(share.sum(), 1e-12) * 100], textposition="top center")
    fig.update_layout(barmode="stack", yaxis={"title": "runs"},
                      yaxis2={"title": f"% of {what}", "overlaying": "y", "side": "right", "range": [0, 110]})
    page.chart(title, fig, f"Runs per proxy size/budget and the share of {what} each took.")


def _clusters(page: _Page, go: Any, spec: Any, rec: dict[str, Any] | None, domains: list[str]) -> None:
    title = "Clusters"
    clusters = dict((rec or {}).get("details", {}).get("clusters") or {})
    if not clusters:  # a dataset from `mixopt data discover` describes its clusters itself
        for d, dom in spec.dataset.domains.items():
            if dom.discovered is not None:
                info = dom.discovered
                clusters[d] = {"documents": info.documents, "bytes": info.bytes, "top_terms": info.top_terms,
                               "origins": info.origins,
                               "weight": (rec or {}).get("weights", {}).get(d)}
    if not clusters:
        page.note(title, "Not a clustered dataset: the domains were not found by `mixopt data discover` (CLIMB).")
        return
    names = [d for d in domains if d in clusters] or list(clusters)
    origins = sorted({o for c in clusters.values() for o in (c.get("origins") or {})})
    fig = go.Figure()
    hover = [", ".join((clusters[d].get("top_terms") or [])[:8]) for d in names]
    if origins:
        for i, o in enumerate(origins):
            fig.add_bar(x=names, y=[(clusters[d].get("origins") or {}).get(o, 0) for d in names], name=o,
                        marker_color=COLORS[i % len(COLORS)], customdata=hover,
                        hovertemplate=f"%{{x}}: %{{y}} documents from {html.escape(o)}<br>%{{customdata}}"
                                      "<extra></extra>")
        fig.update_layout(barmode="stack")
    else:
        fig.add_bar(x=names, y=[clusters[d].get("documents", 0) for d in names], name="documents",
                    customdata=hover, hovertemplate="%{x}: %{y} documents<br>%{customdata}<extra></extra>")
    w = [clusters[d].get("weight") for d in names]
    if any(v is not None for v in w):
        fig.add_scatter(x=names, y=[v if v is not None else 0 for v in w], yaxis="y2", mode="markers",
                        name="recommended weight", marker={"size": 12, "symbol": "diamond", "color": "black"})
        fig.update_layout(yaxis2={"title": "weight", "overlaying": "y", "side": "right", "rangemode": "tozero"})
    fig.update_layout(yaxis={"title": "documents"})
    page.chart(title, fig, "Each clustered domain: its documents by the input domain they came from (hover for "
               "top terms) and its recommended weight.")


def _trajectories(page: _Page, go: Any, df: pd.DataFrame, ok: np.ndarray) -> None:
    title = "Mixing trajectories"
    if "trajectory" not in df.columns:
        page.note(title, "No online runs: every proxy trained on a fixed mixture (trajectories come from Aioli-"
                  "style schedules).")
        return
    has = df["trajectory"].apply(lambda t: isinstance(t, list) and len(t) > 1).to_numpy()
    if not has.any():
        page.note(title, "No online runs: every proxy trained on a fixed mixture (trajectories come from Aioli-"
                  "style schedules).")
        return
    cand = df[has & ok] if (has & ok).any() else df[has]
    row = cand.loc[cand["objective"].idxmin()] if cand["objective"].notna().any() else cand.iloc[0]
    traj = row["trajectory"]
    end = int(row["steps"]) if "steps" in row and pd.notna(row.get("steps")) else int(traj[-1]["step"])
    steps = [int(p["step"]) for p in traj] + [max(end, int(traj[-1]["step"]))]
    fig = go.Figure()
    for i, dom in enumerate(traj[0]["weights"]):
        ws = [float(p["weights"].get(dom, 0.0)) for p in traj]
        fig.add_scatter(x=steps, y=ws + [ws[-1]], mode="lines", name=dom, line={"shape": "hv"},
                        marker_color=COLORS[i % len(COLORS)])
    fig.update_xaxes(title="training step")
    fig.update_yaxes(title="proportion")
    page.chart(f"{title} ({row['run_id']})", fig, f"Domain proportions along training in run {row['run_id']}, the "
               f"best of the {int(has.sum())} runs with an online schedule.")


# ---------------------------------------------------------------------------------------------- summary


def _summary(store: JobStore, spec: Any, df: pd.DataFrame, ok: np.ndarray, rec: dict[str, Any] | None) -> str:
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    best = f"{df[ok]['objective'].min():.4f}" if ok.any() else "—"
    rows = [("job", store.job_id), ("optimizer", spec.optimizer.name), ("state", str(store.get_meta("state"))),
            ("objective", spec.objective.describe()),
            ("runs", f"{counts.get('ok', 0)} ok, {counts.get('failed', 0)} failed, {counts.get('pending', 0)} "
                     f"pending of a budget of {spec.budget.runs}"),
            ("best measured", best)]
    if rec:
        ws = ", ".join(f"{d} {w:.3f}" for d, w in sorted(rec["weights"].items(), key=lambda kv: -kv[1]))
        rows.append(("recommended", ws))
    out = ['<table class="summary">'] + [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                                         for k, v in rows] + ["</table>"]
    if rec and rec.get("notes"):
        out.append("<ul class=\"notes\">" + "".join(f"<li>{html.escape(str(n))}</li>" for n in rec["notes"])
                   + "</ul>")
    failed = df[df["status"] == "failed"]
    if len(failed):
        out.append(f"<details><summary>{len(failed)} failed run(s)</summary><table class=\"failed\">"
                   + "".join(f"<tr><td>{html.escape(str(r))}</td><td>{html.escape(str(e)[:300])}</td></tr>"
                             for r, e in zip(failed["run_id"], failed["error"], strict=True))
                   + "</table></details>")
    return "\n".join(out)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
