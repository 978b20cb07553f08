"""Files users copy and edit must stay valid: the cluster config and every shipped YAML."""

from __future__ import annotations

import yaml

from mixopt.search.checks import load_search_spec
from mixopt.spec import ProxySpec, load_dataset
from tests.conftest import ROOT


def test_ray_cluster_yaml_is_a_valid_launcher_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = prepare_config(yaml.safe_load((ROOT / "ray_cluster.yaml").read_text()))
    validate_config(cfg)
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"].get("GPU", 0) == 0
    assert any(t["resources"].get("GPU", 0) >= 1 for t in types.values())
    assert any("pip install" in c and "mixopt" in c for c in cfg["setup_commands"])


# Recipes over discovered domains read the manifest `mixopt data discover` writes (git-ignored); until it exists,
# tests/test_climb.py validates them against a manifest discovered from a small corpus.
DISCOVERED = {"climb-demo.yaml": ROOT / "datasets" / "demo-clusters.yaml"}


def test_shipped_yaml_files_validate():
    for p in (ROOT / "search").glob("*.yaml"):
        if p.name in DISCOVERED and not DISCOVERED[p.name].is_file():
            continue
        load_search_spec(p)
    for p in (ROOT / "datasets").glob("*.yaml"):
        load_dataset(p)
    for p in (ROOT / "proxies").glob("*.yaml"):
        ProxySpec.model_validate(yaml.safe_load(p.read_text()))
