"""`experiment prune`: recorded runs a changed grid no longer holds are listed, then removed; the grid's stay."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path

from experiment_configs import write_config

from lora_recycle.experiments import expand_runs, load_config, resolve_experiment
from lora_recycle.tasks.format import load_task, write_task

sys.path.insert(0, str(Path(__file__).parents[1] / "cli"))
from test_console_script import assert_usage_error, console  # noqa: E402


def _hashes(results: Path) -> set[str]:
    return {h for (h,) in sqlite3.connect(results).execute("SELECT run_hash FROM runs")}


def test_prune_removes_only_runs_outside_the_grid(tmp_path, world):
    config = write_config(tmp_path / "exp.yaml", world, seeds=[0, 1], methods=["average"], include_target_lora=False)
    results = tmp_path / "results.db"
    assert console("experiment", "run", config, "--results", results).returncode == 0
    before = _hashes(results)
    assert len(before) == 6  # prompting, target LoRA, average: two seeds

    write_config(config, world, seeds=[0], methods=["average"], include_target_lora=False)  # seed 1 dropped
    kept = {r.run_hash for r in expand_runs(resolve_experiment(load_config(config)))}
    dry = console("experiment", "prune", config, "--results", results, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == {"stale": 3, "removed": 0, "runs": {
        "colour seed 1: average": 1, "colour seed 1: prompting": 1, "colour seed 1: target_lora": 1}}
    assert _hashes(results) == before

    done = console("experiment", "prune", config, "--results", results)
    assert done.returncode == 0, done.stderr
    assert "3 recorded run(s) outside the grid" in done.stderr and "removed 3" in done.stderr
    assert _hashes(results) == kept and kept < before
    again = console("experiment", "prune", config, "--results", results, "--json")
    assert json.loads(again.stdout)["stale"] == 0
    assert_usage_error(console("experiment", "prune", config, "--results", tmp_path / "none.db"), "none.db")


def test_in_house_runs_name_their_pool_tasks_data(tmp_path, world):
    """Q4's in-house pool is the other tasks' target-task LoRAs: changing one task's data renames the in-house
    runs that draw on it (they become stale), while every other run keeps its hash."""
    tasks = {name: tmp_path / "tasks" / name for name in world["tasks"]}
    for name, path in tasks.items():
        shutil.copytree(world["tasks"][name], path)
    mine = {**world, "tasks": {k: str(v) for k, v in tasks.items()}}
    grid = {"target_tasks": ["colour", "shade"], "methods": ["average"], "include_target_lora": False,
            "controls": {"in_house": {"tasks": ["colour", "shade", "echo"], "k": [2], "exclude_top": [1],
                                      "exclude_k": 2}}}
    config = write_config(tmp_path / "exp.yaml", mine, **grid)
    before = {r.run_hash: r for r in expand_runs(resolve_experiment(load_config(config)))}
    echo = load_task(tasks["echo"])
    write_task(tasks["echo"], echo.spec, echo.split("train")[::-1], echo.split("test"))  # same rows, new order
    after = {r.run_hash: r for r in expand_runs(resolve_experiment(load_config(config)))}
    changed = {r.label for h, r in before.items() if h not in after}
    assert changed == {r.label for r in before.values() if r.pool == "in_house"} and len(changed) == 4
    assert {h for h, r in before.items() if r.pool != "in_house"} <= set(after)
