"""SIGKILL mid-grid, restart: exactly one result per run and an intact database."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from experiment_configs import write_config


def _count(db) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(db, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:  # the table does not exist yet
        return 0


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from lora_recycle.cli import main; sys.exit(main(sys.argv[1:]))", *args]


def test_sigkill_then_restart_keeps_one_row_per_run(tmp_path, world):
    config = write_config(tmp_path / "exp.yaml", world, target_tasks=["colour", "shade"],
                          controls={"random_init": {"k": [2]}})
    results = tmp_path / "results.db"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(_cli("experiment", "run", str(config), "--results", str(results)), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while _count(results) == 0:
            assert process.poll() is None, "the runner ended before recording a run"
            assert time.monotonic() < deadline, "no result row appeared"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    recorded = _count(results)
    total = 2 * (2 + 2 + 1)  # tasks x (baselines, ours w/o and w/ target LoRA, random-init control)
    assert 1 <= recorded < total
    done = subprocess.run(_cli("experiment", "run", str(config), "--results", str(results), "--json"), env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    conn = sqlite3.connect(results)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT run_hash) FROM runs").fetchone() == (total, total)
    cells = conn.execute("SELECT COUNT(DISTINCT task || kind || method || with_target || random_init) FROM runs")
    assert cells.fetchone()[0] == total
    conn.close()
    assert '"already_done": ' + str(recorded) in done.stdout
