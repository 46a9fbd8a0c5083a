"""Experiment files: one-line errors naming the file and the field; the shipped configs validate."""

from __future__ import annotations

from pathlib import Path

import pytest
from experiment_configs import write_config

from lora_recycle.cli import main
from lora_recycle.errors import UserError
from lora_recycle.experiments import load_config, resolve_experiment

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"methodz": ["ours"]}, "methodz", "unknown key"),
    ({"budget": {"merge_steps": 2, "tset_limit": 3}}, "budget.tset_limit", "unknown key"),
    ({"seeds": "zero"}, "seeds", "list"),
    ({"budget": {"merge_steps": "many"}}, "budget.merge_steps", "integer"),
    ({"include_target_lora": "sometimes"}, "include_target_lora", "both"),
    ({"methods": ["ours", {"preset": "ourz"}]}, "methods[1].preset", "unknown preset 'ourz'"),
    ({"methods": [{"preset": "ours", "granularity": "atom"}]}, "methods[0].granularity", "module"),
    ({"methods": [{"preset": "pi_tuning", "init": "first"}]}, "methods[0]", "init first"),
    ({"methods": [{"preset": "ours", "init": "first", "activation": "softmax"}]}, "methods[0]", "not softmax"),
    ({"controls": {"random_init": {"k": [2], "colour": 1}}}, "controls.random_init.colour", "unknown key"),
])
def test_schema_errors_are_one_line_with_file_and_field(capsys, tmp_path, world, fields, field, words):
    path = write_config(tmp_path / "bad.yaml", world, **fields)
    code = main(["experiment", "run", str(path), "--results", str(tmp_path / "r.db")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {path}: field {field}:") and words in err, err
    assert not (tmp_path / "r.db").exists()


@pytest.mark.parametrize(("fields", "field"), [
    ({"k": [2, 5]}, "k"),
    ({"methods": [{"preset": "ours", "k": [9]}]}, "methods[0].k"),
    ({"controls": {"random_init": {"k": [7]}}}, "controls.random_init.k"),
    ({"controls": {"in_house": {"k": [4]}}}, "controls.in_house.k"),
])
def test_k_larger_than_the_pool(capsys, tmp_path, world, fields, field):
    path = write_config(tmp_path / "big.yaml", world, **fields)
    with pytest.raises(UserError) as info:
        resolve_experiment(load_config(path), str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: field {field}: k=")
    assert "larger than the pool" in message or "the in-house pool has" in message
    assert "\n" not in message
    code = main(["experiment", "run", str(path), "--results", str(tmp_path / "r.db")])
    assert code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_invalid_yaml_and_missing_file(capsys, tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("methods: [ours\nk: 2\n")
    assert main(["experiment", "run", str(bad), "--results", str(tmp_path / "r.db")]) == 2
    assert f"{bad}:" in capsys.readouterr().err
    assert main(["experiment", "run", str(tmp_path / "nope.yaml"), "--results", str(tmp_path / "r.db")]) == 2
    assert "not found" in capsys.readouterr().err


def test_hub_and_paths_are_exclusive(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text("hub: {profile: tiny}\nmodel: m\n")
    with pytest.raises(UserError, match="field \\(top level\\): give either hub or model/db/tasks"):
        load_config(path)


@pytest.mark.parametrize("name", ["smoke.yaml", "paper.yaml", "study.yaml"])
def test_shipped_configs_validate(name):
    config = load_config(REPO / "experiments" / name)
    assert config.hub is not None and config.methods
    assert config.hub.profile == ("tiny" if name == "smoke.yaml" else "full")


def test_random_init_controls_one_per_method(tmp_path):
    """``controls.random_init`` takes a list: each controlled method gets its own random-init runs."""
    from lora_recycle.experiments.config import parse_config

    config = parse_config({"model": "m", "db": "d.db", "tasks": {"t": "t"},
                           "methods": ["ours", {"preset": "ours", "name": "ours_refine", "refine_steps": 5}],
                           "controls": {"random_init": [{"method": "ours"}, {"method": "ours_refine", "k": [3]}]}},
                          "study.yaml")
    assert [(c.method, c.k) for c in config.controls.random_init] == [("ours", None), ("ours_refine", [3])]
    with pytest.raises(UserError, match=r"study.yaml: .*controls.random_init\[1\].method 'nope' is neither"):
        parse_config({"model": "m", "db": "d.db", "tasks": {"t": "t"},
                      "controls": {"random_init": [{"method": "ours"}, {"method": "nope"}]}}, "study.yaml")
