"""Selection on Ray: a driver SIGKILLed mid-run resumes from the catalog's cache and scores only what was missing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

SCRIPT = Path(sys.executable).parent / "lora-recycle"
# twice as many shards of 8 as local Ray has workers (one per core): a second wave runs when the first lands
POOL = 8 * 2 * max(2, os.cpu_count() or 1)


def _cached(db: Path) -> dict[str, float]:
    """``{adapter id: created}`` of the evaluation scores in the catalog."""
    with sqlite3.connect(db) as connection:
        return dict(connection.execute("SELECT adapter_id, created FROM scores WHERE kind = 'evaluation'"))


def _select(db: Path, model: Path, task: Path) -> list[str]:
    return [str(SCRIPT), "select", "--model", str(model), "--db", str(db), "--task", str(task), "--k", "3",
            "--executor", "ray", "--json"]


def test_a_killed_ray_selection_resumes_and_scores_only_what_was_missing(tmp_path, tiny_model_dir, adapter_dirs,
                                                                           colour_task_dir, derived_pool_factory):
    _, db = derived_pool_factory(tmp_path, tiny_model_dir, adapter_dirs, POOL, seed=1)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    # its own session: the local Ray it starts shares the driver's process group, cleaned up below
    driver = subprocess.Popen(_select(db, tiny_model_dir, colour_task_dir), env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not _cached(db) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    before = _cached(db)
    assert 0 < len(before) < POOL, driver.stderr.read()

    resumed = subprocess.run(_select(db, tiny_model_dir, colour_task_dir), env=env, capture_output=True, text=True,
                             timeout=600, start_new_session=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(before)} of {POOL} cached, scoring {POOL - len(before)}" in resumed.stderr
    after = _cached(db)
    assert len(after) == POOL
    assert {i: after[i] for i in before} == before  # never scored (nor written) again
    data = json.loads(resumed.stdout)
    assert len(data["scores"]) == POOL
    assert data["selected"] == sorted(data["scores"], key=lambda i: (-data["scores"][i], i))[:3]

    from lora_recycle.models.loading import load_base_model
    from lora_recycle.pool import load_pool_adapters
    from lora_recycle.selection.evaluation import evaluation_scores
    from lora_recycle.tasks import load_task

    model, tokenizer = load_base_model(tiny_model_dir)
    checked = sorted(before)[:1] + sorted(set(after) - set(before))[:1]  # one from each run, scored in-process
    local = evaluation_scores(model, tokenizer, load_task(colour_task_dir), checked,
                              lambda i: load_pool_adapters(db, [i])[0])
    assert local == pytest.approx({i: data["scores"][i] for i in checked}, abs=1e-9)
