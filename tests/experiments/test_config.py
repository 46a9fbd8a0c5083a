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


SHIPPED = sorted((REPO / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_expands_against_its_hubs_plan(path):
    """Every committed experiment validates, names tasks of the current suite, fits its profile's pool and
    expands into runs (each method's settings built), without building the hub."""
    from lora_recycle.experiments.config import ResolvedExperiment, check_hub_plan
    from lora_recycle.experiments.grid import expand_runs

    config = load_config(path)
    targets, in_house = check_hub_plan(config, path.name)
    tasks = {name: Path(name) for name in [*targets, *in_house]}
    planned = ResolvedExperiment(config, path.name, Path("model"), None, Path("pool.db"), tasks, targets, 0,
                                 in_house, "model", "pool")
    runs = expand_runs(planned, task_hashes=dict.fromkeys(tasks, "0"))
    assert runs and {run.task for run in runs} == set(targets)


def test_hub_plan_names_an_unknown_task_and_a_k_beyond_the_pool():
    from lora_recycle.experiments.config import check_hub_plan, parse_config

    stale = parse_config({"hub": {"profile": "tiny"}, "target_tasks": ["phrase_sentiment"],
                          "controls": {"in_house": {"tasks": ["phrase_sentiment", "alliteration_choice"]}}}, "s.yaml")
    with pytest.raises(UserError, match="s.yaml: field controls.in_house.tasks: unknown task.s. alliteration_choice"):
        check_hub_plan(stale, "s.yaml")
    with pytest.raises(UserError, match="field k: k=9 is larger than the pool .8 accepted adapters"):
        check_hub_plan(parse_config({"hub": {"profile": "tiny"}, "k": [9]}, "s.yaml"), "s.yaml")


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
