"""``experiment run --task/--seed`` runs a slice of the grid whose runs count when the whole grid runs."""

from __future__ import annotations

import json
import sqlite3

import pytest
from experiment_configs import write_config

from lora_recycle.cli import main


def test_a_slice_runs_first_and_the_whole_grid_resumes_it(tmp_path, world, capsys):
    config = write_config(tmp_path / "grid.yaml", world, target_tasks=["colour", "shade"], seeds=[0, 1],
                          methods=["average"], controls={"in_house": {"tasks": ["colour", "shade", "echo"],
                                                                      "k": [2]}})
    results = tmp_path / "results.db"
    assert main(["experiment", "run", str(config), "--results", str(results), "--task", "shade", "--seed", "1",
                 "--json"]) == 0
    sliced = json.loads(capsys.readouterr().out)
    rows = sqlite3.connect(results).execute("SELECT DISTINCT task, seed FROM runs").fetchall()
    assert rows == [("shade", 1)] and sliced["finished"] == sliced["total"] > 0
    assert main(["experiment", "run", str(config), "--results", str(results), "--json"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert whole["already_done"] == sliced["total"] and whole["total"] == 4 * sliced["total"]
    assert main(["experiment", "run", str(config), "--results", str(results), "--task", "nope"]) == 2
    assert "--task nope: not a target task" in capsys.readouterr().err
    assert main(["experiment", "run", str(config), "--results", str(results), "--seed", "7"]) == 2
    assert "--seed 7:" in capsys.readouterr().err


def test_a_method_slice_keeps_its_baselines_and_counts_in_the_whole_grid(tmp_path, world, capsys):
    """``--method`` runs one method's merges (with the baselines they are compared with) across every cell, the
    same run hashes as the whole grid's; an unknown name is a usage error that names the config's methods."""
    config = write_config(tmp_path / "grid.yaml", world, seeds=[0], methods=["average", "ours"],
                          include_target_lora=False)
    results = tmp_path / "results.db"
    assert main(["experiment", "run", str(config), "--results", str(results), "--method", "average", "--json"]) == 0
    sliced = json.loads(capsys.readouterr().out)
    kinds = sqlite3.connect(results).execute("SELECT kind, method FROM runs ORDER BY kind, method").fetchall()
    assert kinds == [("merge", "average"), ("prompting", "prompting"), ("target_lora", "target_lora")]
    assert sliced["finished"] == sliced["total"] == 3
    assert main(["experiment", "run", str(config), "--results", str(results), "--json"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert (whole["already_done"], whole["finished"]) == (3, 1)
    assert main(["experiment", "run", str(config), "--results", str(results), "--method", "ourz"]) == 2
    assert "--method ourz: not a method of" in capsys.readouterr().err


def test_precision_bf16_runs_merges_and_scoring_under_autocast(tmp_path, world, capsys):
    """``precision: bf16`` is recorded per run and in the target LoRA; fp32 runs keep their old hashes."""
    from lora_recycle.experiments import expand_runs, load_config, resolve_experiment

    config = write_config(tmp_path / "bf16.yaml", world, precision="bf16", methods=["ours"], seeds=[0])
    results = tmp_path / "bf16.db"
    assert main(["experiment", "run", str(config), "--results", str(results)]) == 0
    capsys.readouterr()
    metrics = [json.loads(m) for (m,) in sqlite3.connect(results).execute("SELECT metrics FROM runs")]
    assert {m.get("precision") for m in metrics if "target_lora" not in m or m.get("precision")} == {"bf16"}
    assert any(m.get("target_lora", {}).get("config", {}).get("precision") == "bf16" for m in metrics)
    fp32 = expand_runs(resolve_experiment(load_config(write_config(tmp_path / "fp32.yaml", world))))
    assert all("precision" not in run.to_dict() for run in fp32)
    bf16 = expand_runs(resolve_experiment(load_config(config)))
    assert {r.run_hash for r in bf16}.isdisjoint({r.run_hash for r in fp32})


def test_method_entries_take_their_own_seeds_and_target_choice(tmp_path, world):
    """A study's budget cuts: an entry (or control) on a subset of seeds, a repeated name for more k."""
    from lora_recycle.experiments import expand_runs, load_config, resolve_experiment

    config = write_config(tmp_path / "subsets.yaml", world, seeds=[0, 1], methods=[
        "ours", {"preset": "ours", "k": [3], "seeds": [0], "include_target_lora": True},
        {"preset": "adamerging", "seeds": [1], "include_target_lora": False}],
        controls={"random_init": [{"method": "ours", "k": [3], "seeds": [0]}]})
    runs = expand_runs(resolve_experiment(load_config(config)))
    merges = {(r.method, r.k, r.seed, r.with_target, r.random_init) for r in runs if r.kind == "merge"}
    assert merges == {("ours", 2, s, t, False) for s in (0, 1) for t in (False, True)} | {
        ("ours", 3, 0, True, False), ("adamerging", 2, 1, False, False), ("ours", 3, 0, True, True)}
    assert len(runs) == len({r.run_hash for r in runs})


def test_seed_subsets_and_repeated_names_are_checked(tmp_path, world):
    from lora_recycle.errors import UserError
    from lora_recycle.experiments import load_config

    stray = write_config(tmp_path / "stray.yaml", world, seeds=[0, 1], methods=[{"preset": "ours", "seeds": [2]}])
    with pytest.raises(UserError, match=r"stray.yaml: field .*methods\[0\].seeds: seed\(s\) 2 are not among"):
        load_config(stray)
    clash = write_config(tmp_path / "clash.yaml", world, methods=["ours", {"preset": "ours", "lr": 0.1}])
    with pytest.raises(UserError, match="method name 'ours' is used for different settings"):
        load_config(clash)
