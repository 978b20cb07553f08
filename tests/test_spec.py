"""Spec validation: every bad input is one line naming the file, the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mixopt.errors import InputError
from mixopt.search.checks import load_search_spec
from mixopt.spec import ObjectiveSpec, SearchSpec
from tests.conftest import DEMO_DOMAINS, ROOT, run_cli


def write(tmp: Path, data: dict, name: str = "spec.yaml") -> Path:
    p = tmp / name
    p.write_text(yaml.safe_dump(data))
    return p


def base() -> dict:
    return {"name": "t", "dataset": str(ROOT / "datasets" / "demo.yaml"), "optimizer": {"name": "random"}}


def test_demo_spec_loads_and_inlines_references():
    spec = SearchSpec.from_yaml(ROOT / "search" / "demo.yaml")
    assert list(spec.dataset.domains) == DEMO_DOMAINS
    assert spec.optimizer.name == "regmix" and spec.budget.runs >= 16
    again = SearchSpec.model_validate(yaml.safe_load(spec.to_yaml()))
    assert again == spec  # the copy stored in a job folder is self-contained


@pytest.mark.parametrize("patch, field, words", [
    ({"budgett": {"runs": 3}}, "budgett", "unknown key"),
    ({"proxy": {"n_layers": 2}}, "proxy.n_layers", "n_layer"),
    ({"optimizer": {"name": "regmix", "top_kk": 5}}, "optimizer", "top_kk"),
    ({"optimizer": {"name": "regmixx"}}, "optimizer", "known optimizers"),
    ({"include_mixtures": [{"python": 0.5, "prose": 0.4}]}, "include_mixtures", "sum to 0.9"),
    ({"include_mixtures": [{"python": 0.5, "rust": 0.5}]}, "include_mixtures", "unknown domain"),
    ({"objective": {"metrics": ["loss_rust"]}}, "objective", "names no domain"),
    ({"proxy": {"d_model": 30, "n_head": 4}}, "proxy", "multiple of n_head"),
    ({"base": {"weights": {"rust": 1.0}, "tokens": 1000}}, "base.weights", "unknown domain"),
    ({"base": {"weights": {"python": 1.0}}}, "base.tokens", "required"),
    ({"optimizer": {"name": "regmix", "kl_lambda": -0.1}}, "optimizer", "kl_lambda must be ≥ 0"),
    ({"optimizer": {"name": "regmix", "prior": {"python": 0.5, "rust": 0.5}}}, "optimizer", "unknown domain"),
    ({"optimizer": {"name": "regmix", "prior": {"python": 0.5, "prose": 0.3}}}, "optimizer", "summing to 1"),
    ({"optimizer": {"name": "mixing_law", "kl_lambda": -1}}, "optimizer", "kl_lambda"),
    ({"ladder": {"level": 3}}, "ladder", "does not exist"),
    ({"ladder": {"enabled": True, "seeds": 4}, "budget": {"runs": 8}}, "ladder", "larger than the budget"),
    ({"ladder": {"seeds": 1}}, "ladder.seeds", "got 1, must be ≥ 2"),
    ({"proxy": {"tokens": 5000, "tokens_per_param": 50}}, "proxy", "not both"),
    ({"optimizer": {"name": "scaling", "fidelities": [{"level": 0}]}}, "scaling", "two or more scales"),
    ({"budget": {"runs": 3}, "optimizer": {"name": "regmix"}}, "(top level)", "regmix needs at least 4"),
    ({"proxy": {"name": "c", "kind": "command", "tokens": 9, "comand": ["x"]}}, "proxy.comand",
     "did you mean `command`?"),  # the typo first, not the "missing" key it causes
    ({"proxy": {"n_layer": 0}}, "proxy.n_layer", "got 0, must be ≥ 1"),
    ({"proxy": {"lr": "fast"}}, "proxy.lr", "got 'fast', must be a number"),
])
def test_bad_spec_names_file_field_and_fix(tmp_path, patch, field, words):
    path = write(tmp_path, {**base(), **patch})
    with pytest.raises(InputError) as e:
        load_search_spec(path)
    msg = str(e.value)
    assert str(path) in msg and field in msg and words in msg and "fix:" in msg
    assert "\n" not in msg


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        SearchSpec.from_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        SearchSpec.from_yaml(bad)
    ref = write(tmp_path, {**base(), "dataset": "missing.yaml"})
    with pytest.raises(InputError, match="missing.yaml: file not found"):
        SearchSpec.from_yaml(ref)


def test_objective_shorthand_and_description():
    assert ObjectiveSpec.model_validate("loss_prose").metrics == ["loss_prose"]
    assert ObjectiveSpec.model_validate({"metrics": "loss_prose"}).metrics == ["loss_prose"]
    assert ObjectiveSpec().describe() == "mean(loss_*)"
    with pytest.raises(ValueError):
        ObjectiveSpec(metrics=["loss_a", "loss_b"], weights=[1.0])


@pytest.mark.parametrize("patch", [
    {"budgett": 3},
    {"optimizer": {"name": "regmix", "kl_lambda": -1}},
    {"ladder": {"level": 5}},
    {"ladder": {"enabled": True}, "budget": {"runs": 4}},
    {"include_mixtures": [{"python": 0.7, "prose": 0.7}]},
    {"optimizer": {"name": "nope"}},
])
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, patch):
    path = write(tmp_path, {**base(), **patch})
    wd = tmp_path / "wd"
    res = run_cli("submit", str(path), "--workdir", str(wd))
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and str(path) in lines[0], res.stderr
    assert not (wd / "jobs").exists()


def test_cli_missing_spec_and_unknown_job(tmp_path):
    res = run_cli("submit", str(tmp_path / "absent.yaml"), "--workdir", str(tmp_path))
    assert res.returncode == 2 and "file not found" in res.stderr
    res = run_cli("runs", "no-such-job", "--workdir", str(tmp_path))
    assert res.returncode == 2 and "no-such-job" in res.stderr


def test_explicit_nulls_survive_the_job_copy():
    spec = SearchSpec.from_yaml(ROOT / "search" / "demo.yaml")
    data = yaml.safe_load(spec.to_yaml())
    data["optimizer"]["max_epochs"] = None  # "no cap" must not come back as the default cap
    again = SearchSpec.model_validate(yaml.safe_load(SearchSpec.model_validate(data).to_yaml()))
    assert again.optimizer.settings["max_epochs"] is None


def test_cpt_demo_base_reaches_every_proxy_and_a_proxy_keeps_its_own():
    spec = SearchSpec.from_yaml(ROOT / "search" / "cpt-demo.yaml")
    assert [p.name for p in spec.proxies] == ["cpt-s", "cpt-m", "cpt-l"]
    assert all(p.base == spec.base and p.eval_every for p in spec.proxies)
    own = {"weights": {"general": 0.5, "legal": 0.5}, "tokens": 5000}
    mine = SearchSpec.model_validate({"dataset": spec.dataset.model_dump(), "proxy": {"base": own},
                                      "base": {"weights": {"general": 1.0}, "tokens": 1000}})
    assert mine.proxies[0].base.weights == own["weights"]
    again = SearchSpec.model_validate(yaml.safe_load(spec.to_yaml()))
    assert again.proxies == spec.proxies


def test_tokens_per_param_sets_the_budget_from_the_model_size():
    from mixopt.proxies import model_size
    from mixopt.spec import ProxySpec

    p = ProxySpec(n_layer=1, n_head=2, d_model=16, tokens_per_param=100)
    assert p.tokens == 100 * model_size(p, 257).total == 748_800
    assert ProxySpec.model_validate(p.model_dump()) == p  # a job's saved copy (both keys, equal) reloads
    bpe = p.for_vocab(8192)  # the driver re-derives the budget at the prepared dataset's vocabulary
    assert bpe.tokens == 100 * model_size(bpe, 8192).total and bpe.tokens > p.tokens
    nano = SearchSpec.from_yaml(ROOT / "search" / "demo.yaml").proxy
    assert nano.tokens_per_param == 100 and nano.name == "nano"


def test_ladder_defaults_and_shorthand():
    spec = SearchSpec.model_validate({**SearchSpec.from_yaml(ROOT / "search" / "demo.yaml").model_dump(),
                                      "ladder": False})
    assert spec.ladder.enabled is False
    demo = SearchSpec.from_yaml(ROOT / "search" / "demo.yaml")
    assert demo.ladder.enabled == "auto" and demo.ladder_runs() == (3 + 2) * 3 <= demo.budget.runs
