"""The published studies (docs/study, its archived earlier hub, the budget sweep and the 100-step study under
way): tables regenerate, identical, from the committed results databases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora_recycle.experiments.report import write_report
from lora_recycle.serialization import json_safe

STUDY = Path(__file__).resolve().parents[2] / "docs" / "study"


@pytest.mark.parametrize("folder", [STUDY, STUDY / "hub-64e318b0c383", STUDY / "budget", STUDY / "steps-100"],
                         ids=["current", "archived", "budget", "steps-100"])
def test_report_tables_regenerate_from_the_committed_results(tmp_path, folder):
    assert (folder / "results.db").is_file(), f"{folder / 'results.db'} is missing"
    written = write_report(folder / "results.db", tmp_path)
    committed = json.loads((folder / "tables.json").read_text())
    assert json.loads(json.dumps(json_safe(written["tables"]))) == committed
    assert (tmp_path / "report.md").read_text() == (folder / "report.md").read_text()


def test_the_published_study_covers_the_whole_grid():
    """6 targets x 3 seeds, and no target-task LoRA that kept its untrained start."""
    tables = json.loads((STUDY / "tables.json").read_text())
    assert len(tables["tasks"]) == 6 and tables["seeds"] == [0, 1, 2]
    training = tables["target_lora_training"]
    assert len(training) == 18 and not [r for r in training if r["untrained"]]


def test_the_budget_sweep_reads_every_budget_on_all_six_targets():
    """docs/study/budget: 10 to 200 steps, each with its random-init control, on the same six targets."""
    curve = json.loads((STUDY / "budget" / "tables.json").read_text())["budget"]
    assert [entry["steps"] for entry in curve] == [10, 20, 50, 100, 200]
    assert all(entry["tasks"] == 6 and not entry["incomplete_tasks"] and entry["random_init"] for entry in curve)
