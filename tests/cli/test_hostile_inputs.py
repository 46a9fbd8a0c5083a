"""Smaller hostile inputs of issue 16, through the installed console script: exit 2 with one error line."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess

import pytest
from test_console_script import SCRIPT, assert_usage_error, console

from lora_recycle.errors import UserError
from lora_recycle.tasks.format import load_task


def _write_task(directory, rows, kind="multiple_choice"):
    directory.mkdir(parents=True)
    (directory / "task.yaml").write_text(f"name: t\ntype: {kind}\ntemplate: 'Q: {{input}}'\n")
    (directory / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_evaluate_limit_must_be_positive(limit, tmp_path):
    assert_usage_error(console("evaluate", "--model", tmp_path, "--task", tmp_path, "--limit", limit), "--limit")


def test_evaluate_task_refuses_a_non_positive_limit(colour_task_dir):
    from lora_recycle.tasks.scoring import evaluate_task

    for limit in (0, -1):
        with pytest.raises(UserError, match="positive number"):
            evaluate_task(None, None, load_task(colour_task_dir), "test", "cpu", limit)


@pytest.mark.parametrize("choices, problem", [(["", "red"], "empty choice"), (["  ", "red"], "empty choice"),
                                              (["red", "red"], "repeats a choice")])
def test_choices_must_be_distinct_and_not_empty(tmp_path, colour_task_dir, tiny_model_dir, choices, problem):
    task = _write_task(tmp_path / "task", [{"input": "x", "target": "red", "choices": choices}] * 3)
    with pytest.raises(UserError, match=problem):
        load_task(task)
    line = assert_usage_error(console("evaluate", "--model", tiny_model_dir, "--task", task), problem)
    assert "train.jsonl:1" in line


def test_no_training_rows_is_one_line_for_train_lora_and_merge(tmp_path, tiny_model_dir, adapter_dirs):
    rows = [{"input": "x", "target": "red", "choices": ["red", "blue"], "split": "validation"}] * 4
    task = _write_task(tmp_path / "task", rows)
    assert_usage_error(console("train-lora", "--model", tiny_model_dir, "--task", task, "--out", tmp_path / "o1",
                               "--steps", "1"), "no train rows")
    assert_usage_error(console("merge", "--model", tiny_model_dir, "--task", task, "--adapters",
                               adapter_dirs["all_r4"], "--method", "ours", "--out", tmp_path / "o2"), "no train rows")


def test_report_on_a_pool_catalog_is_refused(tmp_path):
    from lora_recycle.experiments.results import ResultsStore
    from lora_recycle.pool import Catalog

    with Catalog(tmp_path / "pool.db"):
        pass
    line = assert_usage_error(console("report", tmp_path / "pool.db", "--out", tmp_path / "report"))
    assert "pool catalog" in line
    with pytest.raises(UserError, match="pool catalog"):  # nor may a run write its results into one
        ResultsStore(tmp_path / "pool.db")


def test_pool_scan_never_adds_tables_to_an_unrelated_sqlite_file(tmp_path, tiny_model_dir):
    other = tmp_path / "app.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('format_version', '1')")
        conn.execute("CREATE TABLE users (name TEXT)")
    before = other.read_bytes()
    source = tmp_path / "empty-pool"
    source.mkdir()
    line = assert_usage_error(console("pool", "scan", source, "--base-model", tiny_model_dir, "--db", other))
    assert "not a pool catalog" in line
    assert other.read_bytes() == before


def test_train_lora_writes_target_modules_in_a_stable_order(tmp_path, tiny_model_dir, echo_task_dir):
    texts = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        out = tmp_path / f"lora-{seed}"
        proc = subprocess.run([str(SCRIPT), "train-lora", "--model", str(tiny_model_dir), "--task", str(echo_task_dir),
                               "--out", str(out), "--steps", "1", "--rank", "2"], capture_output=True, text=True,
                              env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        texts.append((out / "adapter_config.json").read_text())
    assert texts[0] == texts[1]
    modules = json.loads(texts[0])["target_modules"]
    assert modules == sorted(modules) and len(modules) == 7
