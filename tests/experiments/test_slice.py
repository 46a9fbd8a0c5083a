"""``experiment run --task/--seed`` runs a slice of the grid whose runs count when the whole grid runs."""

from __future__ import annotations

import json
import sqlite3

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
