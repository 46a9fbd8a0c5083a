"""`experiment status`: a grid's runs recorded and to do, priced at the recorded runs' median times."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

from experiment_configs import write_config

sys.path.insert(0, str(Path(__file__).parents[1] / "cli"))
from test_console_script import assert_usage_error, console  # noqa: E402


def test_status_counts_and_prices_the_rest_of_a_half_run_grid(tmp_path, world):
    config = write_config(tmp_path / "exp.yaml", world, seeds=[0, 1], methods=["ours", "average"],
                          include_target_lora=False)
    results = tmp_path / "results.db"
    empty = console("experiment", "status", config, "--results", results, "--json")
    assert empty.returncode == 0, empty.stderr
    data = json.loads(empty.stdout)
    assert (data["total"], data["recorded"], data["todo"], data["unpriced"]) == (8, 0, 8, 8)
    assert not results.exists()  # status never creates the results file

    assert console("experiment", "run", config, "--results", results, "--seed", "0").returncode == 0
    data = json.loads(console("experiment", "status", config, "--results", results, "--json", "--workers", "2").stdout)
    assert (data["total"], data["recorded"], data["todo"], data["unpriced"]) == (8, 4, 4, 0)
    conn = sqlite3.connect(results)
    seconds = {(kind, method): json.loads(t)["total"]
               for kind, method, t in conn.execute("SELECT kind, method, timings FROM runs")}
    cells = {c["cell"]: c for c in data["cells"]}
    assert set(cells) == {"prompting", "target_lora", "ours k=2", "average all"}
    for cell, key in (("prompting", ("prompting", "prompting")), ("ours k=2", ("merge", "ours"))):
        assert (cells[cell]["recorded"], cells[cell]["todo"]) == (1, 1)
        assert abs(cells[cell]["seconds_per_run"] - seconds[key]) < 1e-9
    assert abs(data["todo_seconds"] - sum(seconds.values())) < 1e-6  # seed 1 costs what seed 0 did
    assert abs(data["wall_minutes"] - data["todo_seconds"] / 2 / 60) < 1e-9
    sliced = json.loads(console("experiment", "status", config, "--results", results, "--json", "--seed", "1").stdout)
    assert (sliced["total"], sliced["recorded"], sliced["todo"], sliced["unpriced"]) == (4, 0, 4, 0)
    assert abs(sliced["todo_seconds"] - data["todo_seconds"]) < 1e-6  # the slice is priced from seed 0's runs

    table = console("experiment", "status", config, "--results", results)
    assert table.returncode == 0 and "| ours k=2 | 1 | 1 |" in table.stdout
    assert "8 runs, 4 recorded" in table.stdout
    assert_usage_error(console("experiment", "status", config, "--results", results, "--seed", "7"), "--seed 7")


def test_status_and_prune_never_build_a_missing_hub(tmp_path):
    """Reading commands refuse a mini-hub that is not built (one line naming it and how to build it), rather than
    start its build: the `full` hub trains for tens of minutes."""
    cache = tmp_path / "cache"
    config = tmp_path / "hub.yaml"
    config.write_text(f"name: hubbed\nhub: {{profile: tiny, seed: 0, cache_dir: {cache}}}\nseeds: [0]\n"
                      "methods:\n  - {preset: average, k: 2}\n")
    results = tmp_path / "results.db"
    for command in (("status",), ("prune", "--dry-run")):
        done = console("experiment", *command, config, "--results", results)
        assert_usage_error(done, "the tiny mini-hub (seed 0) is not built")
        assert "experiment run` builds it" in done.stderr
        assert not (cache / "hub").exists() or not any((cache / "hub").iterdir())
    assert not results.exists()
