"""The job report in headless Chromium: it loads with no console errors and every chart has data."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mixopt.search import JobStore, Search, ladder
from mixopt.search.report import write_report
from mixopt.search.store import PendingRun
from mixopt.spec import SearchSpec
from tests.reliability.browser import chromium, inspect_page

pytestmark = pytest.mark.slow

CHARTS = 9


def need_chromium() -> None:
    if chromium() is None:
        pytest.skip("headless Chromium is not installed (Debian package `chromium`, which .ci/run installs where "
                    "apt-get works): the report's browser check needs it")


def full_job(corpus, tmp_path) -> JobStore:
    """A finished job with everything a report can show: two fidelities, a failed run, online runs with
    trajectories, domains that came from `mixopt data discover` (clusters), a regmix recommendation."""
    manifest = yaml.safe_load((corpus / "corpus.yaml").read_text())
    for i, d in enumerate(manifest["domains"]):
        manifest["domains"][d]["discovered"] = {
            "documents": 40 + 10 * i, "bytes": 9000 + 100 * i, "origins": {"web": 30, "code": 10 + 10 * i},
            "top_terms": [f"term{i}{j}" for j in range(5)], "examples": ["an example"]}
    (corpus / "clustered.yaml").write_text(yaml.safe_dump(manifest))
    cmd = ["python3", "-c", "pass"]
    spec_path = tmp_path / "full.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "full", "dataset": str(corpus / "clustered.yaml"),
        "proxy": {"name": "small", "kind": "command", "tokens": 1000, "command": cmd},
        "fidelities": [{"name": "large", "kind": "command", "tokens": 8000, "command": cmd}],
        "optimizer": {"name": "regmix", "predictor": "linear", "n_candidates": 2000, "top_k": 8, "min_runs": 4},
        "budget": {"runs": 20}, "seed": 5}))
    spec = SearchSpec.from_yaml(spec_path)
    store = JobStore.create(tmp_path / "wd", spec)
    domains = list(spec.dataset.domains)
    store.set_meta("domains", domains)
    store.set_meta("token_counts", {d: 1e5 * (i + 1) for i, d in enumerate(domains)})
    rng = np.random.default_rng(0)
    for i in range(20):
        w = rng.dirichlet(np.ones(3))
        weights = dict(zip(domains, map(float, w), strict=True))
        level = int(i % 4 == 3)
        store.add_proposals([PendingRun(f"r{i:04d}", i, i // 4, i, weights, {"level": level,
                                        "tokens": 8000 if level else 1000}, "regmix")])
        if i == 7:
            store.add_result("r0007", "failed", {}, {"seconds": 0.3}, "loss of 'alpha' is nan (diverged)")
            continue
        losses = {f"loss_{d}": 2 + (x - 0.4) ** 2 - 0.1 * level + 0.01 * rng.normal() for d, x in weights.items()}
        info = {"seconds": 1.0 + 3 * level, "steps": 100}
        if i % 5 == 0:
            info["trajectory"] = [{"step": s, "weights": dict(zip(domains, map(float, rng.dirichlet(np.ones(3))),
                                                                      strict=True))} for s in (0, 25, 50, 75)]
        store.add_result(f"r{i:04d}", "ok", losses, info, None)
    search = Search(spec, workdir=tmp_path / "wd", store=store)
    rec = search.recommend()
    add_ladder(store, spec, rec.to_dict(), rng)
    store.set_meta("state", "done")
    return store


def add_ladder(store: JobStore, spec: SearchSpec, rec: dict, rng: np.random.Generator) -> None:
    """The ladder's runs as the driver records them (source `ladder:<label>`, paired seeds) and its verdict in the
    recommendation: what a finished job with the ladder on holds."""
    table = store.run_table()
    rungs = ladder.plan(spec, rec["weights"], rec["method"], rec["details"], table)
    seeds = ladder.ladder_seeds(spec)
    idx, round_ = store.n_proposed(), store.next_round()
    for sd in seeds:
        for r in rungs:
            rid = f"r{idx:04d}"
            store.add_proposals([PendingRun(rid, idx, round_, sd, r.weights, {"level": 1, "tokens": 8000},
                                            ladder.LADDER + r.label)])
            store.add_result(rid, "ok", {f"loss_{d}": 1.9 + (x - 0.4) ** 2 + 0.01 * rng.normal()
                                         for d, x in r.weights.items()}, {"seconds": 4.0, "steps": 100}, None)
            idx += 1
    full = store.run_table(ladder=True)
    verdict = ladder.decide(rungs, full.select((full.df["stage"] == "ladder").to_numpy()), spec, table)
    store.write_recommendation({**rec, "details": {**rec["details"], "ladder": verdict}})


def test_report_loads_without_errors_and_every_chart_has_data(corpus, tmp_path, figure):
    need_chromium()
    store = full_job(corpus, tmp_path)
    page = write_report(store)
    size = page.stat().st_size
    text = page.read_text()
    assert "<script src=" not in text and "cdn" not in text.lower().split("<script>")[0]  # nothing fetched
    assert "6-fold cross-validation over 19 runs" in text  # not 19 leave-one-out refits before the page
    out = inspect_page(page.as_uri(), tmp_path / "report.png")
    assert out["errors"] == [], out["errors"]
    assert out["missing"] == 0 and out["sections"] == CHARTS == len(out["charts"]), out
    for c in out["charts"]:
        assert c["traces"] > 0 and c["points"] > 0 and c["drawn"] > 0, c
    assert (tmp_path / "report.png").stat().st_size > 10_000
    figure(f"report: {CHARTS} charts, all with data, 0 console errors in headless Chromium; page "
           f"{size / 1e6:.1f} MB, self-contained")


def test_a_report_of_a_job_that_just_started_says_why_charts_are_missing(corpus, tmp_path):
    need_chromium()
    store = full_job(corpus, tmp_path)
    fresh = JobStore.create(tmp_path / "wd2", store.spec)  # no results, no recommendation yet
    fresh.set_meta("domains", list(store.spec.dataset.domains))
    page = write_report(fresh)
    out = inspect_page(page.as_uri())
    assert out["errors"] == [] and out["sections"] == CHARTS
    assert out["missing"] == CHARTS - 1 and len(out["charts"]) == 1  # only the clusters: they come with the data
    assert out["charts"][0]["points"] > 0
    assert "No successful run yet." in page.read_text()


@pytest.mark.parametrize("width", [1400, 1920])
def test_every_chart_fits_its_card(corpus, tmp_path, width):
    """At 1400 px the grid has two columns and at 1920 px three, each narrower than plotly's default 700 px
    drawing: the first chart once overflowed its card there, cutting off half of its runs."""
    need_chromium()
    page = write_report(full_job(corpus, tmp_path))
    out = inspect_page(page.as_uri(), width=width)
    assert out["errors"] == [] and len(out["charts"]) == CHARTS, out
    assert [c["id"] for c in out["charts"] if c["overflow"] > 0] == [], [(c["id"], c["overflow"])
                                                                         for c in out["charts"]]
