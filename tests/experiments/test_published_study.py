"""The published studies (docs/study at the paper's 100 merge steps, the superseded 20-step study, its archived
earlier hub and the budget sweep): tables regenerate, identical, from the committed results databases."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from lora_recycle.experiments.report import write_report
from lora_recycle.serialization import json_safe

STUDY = Path(__file__).resolve().parents[2] / "docs" / "study"


@pytest.mark.parametrize("folder", [STUDY, STUDY / "budget-20", STUDY / "hub-64e318b0c383", STUDY / "budget"],
                         ids=["current", "budget-20", "archived", "budget"])
def test_report_tables_regenerate_from_the_committed_results(tmp_path, folder):
    assert (folder / "results.db").is_file(), f"{folder / 'results.db'} is missing"
    written = write_report(folder / "results.db", tmp_path)
    committed = json.loads((folder / "tables.json").read_text())
    assert json.loads(json.dumps(json_safe(written["tables"]))) == committed
    assert (tmp_path / "report.md").read_text() == (folder / "report.md").read_text()


@pytest.mark.parametrize("folder", [STUDY, STUDY / "budget-20"], ids=["current", "budget-20"])
def test_table_2s_core_covers_six_targets_on_three_seeds(folder):
    """Every row of Table 2's core on 6 targets x 3 seeds, and no target-task LoRA that kept its untrained start."""
    tables = json.loads((folder / "tables.json").read_text())
    assert len(tables["tasks"]) == 6 and tables["seeds"] == [0, 1, 2]
    rows = {row["method"]: row for row in tables["table2"]}
    for name in ("ours (10)", "adamerging (10)", "average (all)", "average_random (10)", "ties (10)", "tsv (10)"):
        for side in ("without_target", "with_target"):
            assert (rows[name][side]["seeds"], rows[name][side]["tasks"]) == (3, 6), (name, side)
    training = tables["target_lora_training"]
    assert len(training) == 18 and not [r for r in training if r["untrained"]]


def test_the_published_study_runs_every_adaptive_merge_at_the_papers_budget():
    """docs/study is the paper's method at its budget: every adaptive merge (LoraHub: evaluations) ran 100 steps."""
    with closing(sqlite3.connect(f"file:{STUDY / 'results.db'}?mode=ro", uri=True)) as conn:
        steps = dict(conn.execute(
            "SELECT method, group_concat(DISTINCT json_extract(spec, '$.settings.steps')) FROM runs "
            "WHERE kind = 'merge' AND json_extract(spec, '$.settings.adaptive') GROUP BY method"))
    assert {"ours", "adamerging", "pi_tuning", "lorahub"} <= set(steps)
    assert set(steps.values()) == {"100"}, steps


def test_the_budget_sweep_reads_every_budget_on_all_six_targets():
    """docs/study/budget: 10 to 200 steps, each with its random-init control, on the same six targets."""
    curve = json.loads((STUDY / "budget" / "tables.json").read_text())["budget"]
    assert [entry["steps"] for entry in curve] == [10, 20, 50, 100, 200]
    assert all(entry["tasks"] == 6 and not entry["incomplete_tasks"] and entry["random_init"] for entry in curve)
