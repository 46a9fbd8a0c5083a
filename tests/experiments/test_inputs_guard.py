"""A results file remembers the pool it was recorded on: resuming on a changed pool is a one-line error."""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

from experiment_configs import write_config

sys.path.insert(0, str(Path(__file__).parents[1] / "cli"))
from test_console_script import assert_usage_error, console  # noqa: E402


def test_resuming_on_a_changed_pool_is_refused(tmp_path, world, tiny_model_dir):
    pool = tmp_path / "pool"
    shutil.copytree(Path(world["db"]).parent / "pool", pool)
    db = tmp_path / "pool.db"
    scan = ["pool", "scan", pool, "--base-model", tiny_model_dir, "--db", db, "--no-require-license"]
    assert console(*scan).returncode == 0
    mine = {**world, "db": str(db)}
    config = write_config(tmp_path / "exp.yaml", mine, methods=["average"])
    results = tmp_path / "results.db"
    first = console("experiment", "run", config, "--results", results)
    assert first.returncode == 0, first.stderr
    conn = sqlite3.connect(results)
    recorded = conn.execute("SELECT value FROM meta WHERE key = 'inputs'").fetchone()[0]
    before = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    conn.close()
    again = console("experiment", "run", config, "--results", results)  # nothing to run: fine, unchanged
    assert again.returncode == 0, again.stderr

    some = sorted(p for p in pool.iterdir() if p.is_dir())[0]
    shutil.copytree(some, pool / "newcomer")  # one more accepted adapter: "average of all" would change
    assert console(*scan).returncode == 0
    write_config(config, mine, methods=["average"], seeds=[0, 1])  # a new seed: runs to do on the new pool
    line = assert_usage_error(console("experiment", "run", config, "--results", results), str(results),
                              recorded, "give a new --results file")
    assert "another base model or pool" in line
    rows = sqlite3.connect(results).execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert rows == before == 4  # prompting, target LoRA, average without and with it: none added since

    fresh = console("experiment", "run", config, "--results", tmp_path / "new.db")
    assert fresh.returncode == 0, fresh.stderr
