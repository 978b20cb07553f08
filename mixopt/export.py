"""A recommendation in the shape each trainer reads, so the mixture goes to the real run without hand copying.

Every export writes the same weights (the recommendation's, after any re-balancing for the target). Domains
with weight 0 are left out of the trainer formats: OLMo-core refuses a target ratio of 0, and a zero-weight
Megatron blend entry or Hugging Face source only costs an open file. `prefixes` maps a domain to what the
trainer should read (a Megatron data prefix, a dataset name or folder, a glob of numpy files); the default is
the domain's own name, meant to be replaced.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from mixopt.errors import InputError
from mixopt.recommendation import Recommendation

FORMATS = ("json", "yaml", "megatron", "hf", "olmo", "torchtitan")


def export(rec: Recommendation, fmt: str, prefixes: Mapping[str, str] | None = None) -> str:
    """The recommendation as text in format `fmt` (one of FORMATS)."""
    if fmt not in FORMATS:
        raise InputError("--format", f"unknown format {fmt!r}", f"choose one of {', '.join(FORMATS)}")
    paths = resolve_prefixes(list(rec.weights), prefixes)
    if fmt == "json":
        return json.dumps(_plain(rec.to_dict()), indent=2) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(_plain(rec.to_dict()), sort_keys=False)
    return {"megatron": to_megatron, "hf": to_hf, "olmo": to_olmo, "torchtitan": to_torchtitan}[fmt](rec, paths)


def resolve_prefixes(domains: list[str], prefixes: Mapping[str, str] | None) -> dict[str, str]:
    unknown = sorted(set(prefixes or {}) - set(domains))
    if unknown:
        raise InputError("--prefix", f"unknown domain(s) {unknown}", f"use one of {', '.join(domains)}")
    return {d: str((prefixes or {}).get(d, d)) for d in domains}


def _used(rec: Recommendation) -> list[tuple[str, float]]:
    used = [(d, float(w)) for d, w in rec.weights.items() if w > 0]
    total = sum(w for _, w in used)
    return [(d, w / total) for d, w in used]


def _num(w: float) -> str:
    return format(w, ".10g")


def to_megatron(rec: Recommendation, paths: Mapping[str, str]) -> str:
    """Megatron-LM's `--data-path` blend: "w1 prefix1 w2 prefix2 …" (it normalises the weights itself)."""
    return " ".join(f"{_num(w)} {paths[d]}" for d, w in _used(rec)) + "\n"


def to_hf(rec: Recommendation, paths: Mapping[str, str]) -> str:
    """A runnable snippet around `datasets.interleave_datasets(..., probabilities=[...])`."""
    used = _used(rec)
    names = [paths[d] for d, _ in used]
    probs = [float(_num(w)) for _, w in used]
    return (f"# Mixture recommended by mixopt ({rec.method}; objective {rec.objective}).\n"
            "# Domains that need more than one epoch in the target run must be repeated by the caller.\n"
            "from datasets import interleave_datasets, load_dataset\n\n"
            f"domains = {json.dumps([d for d, _ in used])}\n"
            f"sources = {json.dumps(names)}\n"
            f"probabilities = {json.dumps(probs)}\n\n"
            'datasets = [load_dataset(s, split="train", streaming=True) for s in sources]\n'
            "mixed = interleave_datasets(datasets, probabilities=probabilities, seed=0,\n"
            '                            stopping_strategy="first_exhausted")\n')


def to_olmo(rec: Recommendation, paths: Mapping[str, str]) -> str:
    """An OLMo-core `SourceMixtureDatasetConfig`: `source_configs` of source_name, paths, target_ratio,
    max_repetitions; `requested_tokens` from the target. `global_batch_size` is the trainer's to add."""
    target = rec.details.get("target") or {}
    rep = rec.details.get("repetition") or {}
    sources = []
    for d, w in _used(rec):
        src: dict[str, Any] = {"source_name": d, "target_ratio": float(_num(w)), "paths": [paths[d]]}
        if d in rep:  # OLMo-core refuses a source that needs more passes than max_repetitions allows
            src["max_repetitions"] = max(1.0, float(rep[d]["max_epochs"]))
        sources.append(src)
    cfg: dict[str, Any] = {"source_configs": sources}
    if target.get("tokens"):
        cfg["requested_tokens"] = int(target["tokens"])
    head = (f"# OLMo-core SourceMixtureDatasetConfig recommended by mixopt ({rec.method}).\n"
            "# Add global_batch_size (tokens per step) for your run.\n")
    return head + yaml.safe_dump(cfg, sort_keys=False)


def to_torchtitan(rec: Recommendation, paths: Mapping[str, str]) -> str:
    """TOML for a torchtitan job config: one `[[mixture.datasets]]` table per domain (name, path, weight).

    torchtitan has no built-in weighted mixture, so this is the shape a custom dataset builder reads (e.g. with
    `interleave_datasets`); it sits in the job's TOML beside the other sections.
    """
    lines = ["# Dataset weights recommended by mixopt; read by your torchtitan dataset builder.", "[mixture]",
             f"method = {json.dumps(rec.method)}", f"objective = {json.dumps(rec.objective)}", ""]
    for d, w in _used(rec):
        lines += ["[[mixture.datasets]]", f"name = {json.dumps(d)}", f"path = {json.dumps(paths[d])}",
                  f"weight = {_num(w) if '.' in _num(w) or 'e' in _num(w) else _num(w) + '.0'}", ""]
    return "\n".join(lines)


def _plain(x: Any) -> Any:
    """JSON/YAML-safe copy: numpy scalars and tuples become plain Python values."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if hasattr(x, "item") and callable(x.item):
        return x.item()
    return x


__all__ = ["FORMATS", "export", "resolve_prefixes", "to_hf", "to_megatron", "to_olmo", "to_torchtitan"]
