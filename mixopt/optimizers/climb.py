"""`climb`: CLIMB (arXiv 2504.13161) — iterative bootstrapping over (clustered) domains.

Rounds of proxy runs, each one pruning the search space with a predictor (docs/methods.md §3b):

- round 1: RegMix's sampler around the tempered token prior, under the repetition caps (§1a);
- round r > 1: fit the predictor on every usable run of the rounds before it, score `n_candidates` mixtures
  drawn from Dirichlet(prior) (untempered, strength 1) within the caps, keep the `keep` best-predicted
  (CLIMB: max(n², 128) for a round of n), and draw the round's n mixtures from those uniformly without
  replacement; a round of one mixture takes the single best candidate;
- recommend: the predictor fitted on all usable runs, the best of `n_candidates` feasible candidates
  (`top_k: 1`, CLIMB's final argmax; caps re-applied, §3e).

The default schedule is CLIMB's recipe: 64 + 32 + 16 runs. Rounds after the last listed one repeat its size.

Pure function of the run table: the run at position i belongs to the round that position falls in, so which
round a search is in, and how much of it is left, is read off the history's length. A round's mixtures are a
function of the seed, the round and the runs of the rounds before it only; `propose(history, n)` returns the
next ≤ n of them and never crosses into the next round (that round needs these runs' results first). So a
search resumed mid-round, or run with any parallelism, proposes exactly the same mixtures.

The domains are usually clusters found by `mixopt data discover`; with `manifest` set to that manifest, the
recommendation's details describe each cluster (size, top terms, example snippets) next to its weight.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from mixopt.errors import InputError
from mixopt.optimizers._surrogate import SurrogateOptimizer, SurrogateSettings
from mixopt.optimizers.base import Proposal, Recommendation, mixture_dict
from mixopt.predictors import make_predictor
from mixopt.runs import RunTable
from mixopt.simplex import clean_mixtures, sample_mixtures
from mixopt.spec import TargetSpec

log = logging.getLogger(__name__)

#: CLIMB's predictor (docs/methods.md §3b): LightGBM, regularised, shallow, early-stopped on a 10 % hold-out.
CLIMB_LIGHTGBM = dict(reg_alpha=1.0, reg_lambda=1.0, max_depth=4, valid_fraction=0.1)
CLIMB_MIN_CHILD_SAMPLES = 5


class ClimbSettings(SurrogateSettings):
    predictor: Literal["climb", "lightgbm", "linear", "gp", "ensemble"] = Field(
        default="ensemble", description="climb = the paper's LightGBM (L1/L2 1.0, depth 4, 5 runs a leaf, early "
        "stopping on a 10% hold-out); ensemble = mean of lightgbm and gp (RegMix's default; benchmarks/climb_pool.py)")
    rounds: list[Annotated[int, Field(ge=1)]] = Field(
        default=[64, 32, 16], min_length=1, description="proxy runs per round (CLIMB: 64, 32, 16); rounds "
        "after the last repeat its size")
    keep: int | None = Field(default=None, ge=1, description="best-predicted candidates a later round draws "
                             "its mixtures from (the pruned search space); null: CLIMB's max(n², 128)")
    n_candidates: int = Field(default=100_000, ge=1, description="simulated mixtures scored per round and for "
                              "the recommendation (CLIMB: 100k)")
    top_k: int = Field(default=1, ge=1, description="the recommendation: 1 = the best candidate (CLIMB); k > 1 "
                       "= the mean of the k best (RegMix)")
    manifest: str | None = Field(default=None, description="the manifest `mixopt data discover` wrote for these "
                                 "domains: its cluster descriptions go into the recommendation")

    @field_validator("keep")
    @classmethod
    def _keep_covers_rounds(cls, keep: int | None, info: ValidationInfo) -> int | None:
        later = (info.data.get("rounds") or [])[1:]
        if keep is not None and later and keep < max(later):
            raise ValueError(f"must be at least the largest later round ({max(later)}): a round draws its "
                             "mixtures from the kept candidates")
        return keep


class Climb(SurrogateOptimizer):
    name = "climb"
    Settings = ClimbSettings
    settings: ClimbSettings

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._cache: tuple[str, np.ndarray] | None = None  # the last later round computed (a memo, not state)

    # ------------------------------------------------------------------------------------------ rounds

    def round_at(self, position: int) -> tuple[int, int, int]:
        """(round index from 0, position of its first run, its size) of the run at `position` in the history."""
        sizes = self.settings.rounds
        r = start = 0
        while True:
            size = sizes[min(r, len(sizes) - 1)]
            if position < start + size:
                return r, start, size
            start += size
            r += 1

    def round_mixtures(self, history: RunTable, r: int, start: int, size: int) -> np.ndarray:
        """All `size` mixtures of round `r`: a function of the seed and the first `start` runs only."""
        earlier = history.head(start)
        rng = self.rng(earlier, f"round{r}")
        prior, _ = self.prior(history)
        caps, _ = self.caps(history, prior, None)
        if r == 0:
            return sample_mixtures(prior, size, rng, self.settings, caps=caps)
        if (earlier.df["status"] == "pending").any():
            log.warning("climb round %d is proposed while runs of earlier rounds are pending; it uses the "
                        "finished ones only", r + 1)
        ok, y = earlier.usable(self.objective)
        key = hashlib.sha256(f"{r}|{start}|{size}".encode() + ok.weights.tobytes() + y.tobytes() + prior.tobytes()
                             + (caps.tobytes() if caps is not None else b"")).hexdigest()
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        model, _, _ = self._fit(earlier)
        keep = self.settings.keep or max(size * size, 128)
        pool, _, _, _ = self._simulate(model, prior, caps, rng, k=keep)
        pool = clean_mixtures(pool, self.settings)
        if len(pool) < size:
            raise InputError("optimizer", f"climb round {r + 1} needs {size} candidates, only {len(pool)} are "
                             "within the caps", "raise n_candidates or max_epochs")
        W = pool[:1] if size == 1 else pool[rng.choice(len(pool), size=size, replace=False)]
        self._cache = (key, W)
        return W

    # ------------------------------------------------------------------------------------------ contract

    def propose(self, history: RunTable, n: int) -> list[Proposal]:
        r, start, size = self.round_at(len(history))
        offset = len(history) - start
        W = self.round_mixtures(history, r, start, size)[offset:offset + n]
        return [Proposal(mixture_dict(history.domains, w)) for w in W]

    def wait_for_pending(self, history: RunTable) -> bool:
        """At the first run of a round, every earlier run must have its result: the round is fitted on them."""
        r, start, _ = self.round_at(len(history))
        return r > 0 and len(history) == start and bool((history.df["status"] == "pending").any())

    def recommend(self, history: RunTable, target: TargetSpec | None = None) -> Recommendation:
        rec = super().recommend(history, target)
        rec.details["rounds"] = self._rounds_summary(history)
        last = rec.details["rounds"][-1]
        if last["runs"] < last["planned"]:
            rec.notes.append(f"round {last['round']} is incomplete: {last['runs']} of {last['planned']} runs")
        clusters, note = self._clusters(history, rec.weights)
        if clusters:
            rec.details["clusters"] = clusters
        if note:
            rec.notes.append(note)
        return rec

    def predictor(self, seed: int):
        s = self.settings
        if s.predictor == "climb":
            return make_predictor("lightgbm", n_estimators=s.n_estimators, learning_rate=s.learning_rate,
                                  min_child_samples=s.min_child_samples or CLIMB_MIN_CHILD_SAMPLES, seed=seed,
                                  **CLIMB_LIGHTGBM)
        return super().predictor(seed)

    # ------------------------------------------------------------------------------------------ details

    def _rounds_summary(self, history: RunTable) -> list[dict[str, Any]]:
        y = history.objective(self.objective)
        ok = (history.df["status"] == "ok").to_numpy() & np.isfinite(y)
        out: list[dict[str, Any]] = []
        pos = 0
        while pos < len(history):
            r, start, size = self.round_at(pos)
            end = min(start + size, len(history))
            good = y[start:end][ok[start:end]]
            out.append({"round": r + 1, "planned": size, "runs": end - start, "ok": int(len(good)),
                        "best": float(good.min()) if len(good) else None,
                        "median": float(np.median(good)) if len(good) else None})
            pos = end
        return out

    def _clusters(self, history: RunTable, weights: dict[str, float]) -> tuple[dict[str, Any], str | None]:
        """Size, top terms and example snippets of each clustered domain, from the discovered manifest."""
        if self.settings.manifest is None:
            return {}, None
        import yaml
        from pydantic import ValidationError

        from mixopt.spec import DatasetSpec

        path = Path(self.settings.manifest)
        try:
            spec = DatasetSpec.model_validate(yaml.safe_load(path.read_text()))
        except (OSError, yaml.YAMLError, ValidationError) as e:
            first = str(e).splitlines()[0]
            return {}, f"cluster descriptions left out: {path} could not be read as a dataset manifest ({first})"
        out = {}
        for d, w in sorted(weights.items(), key=lambda kv: -kv[1]):
            dom = spec.domains.get(d)
            if dom is None or dom.discovered is None:
                continue
            info = dom.discovered
            out[d] = {"weight": w, "documents": info.documents, "bytes": info.bytes, "top_terms": info.top_terms,
                      "examples": info.examples, "origins": info.origins}
        missing = [d for d in history.domains if d not in out]
        if not out:
            return {}, f"cluster descriptions left out: {path} describes none of the run table's domains"
        if missing:
            return out, f"{path} has no cluster description for: {', '.join(missing)}"
        return out, None
