"""The shipped smoke study end to end on the tiny mini-hub, through the CLI, then its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora_recycle.cli import main

SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "smoke.yaml"


@pytest.mark.slow  # builds the tiny mini-hub (8 pool adapters) first: ~1-3 minutes on 2 busy cores
def test_smoke_yaml_on_the_tiny_hub(capsys, tmp_path, cache_dir):
    results = tmp_path / "smoke.db"
    assert main(["experiment", "run", str(SMOKE), "--results", str(results), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["failed"] == 0 and summary["finished"] == summary["total"] == 44
    assert main(["report", str(results), "--out", str(tmp_path / "report"), "--json"]) == 0
    tables = json.loads(capsys.readouterr().out)
    assert tables["skipped"] == {} and len(tables["tasks"]) == 2 and tables["seeds"] == [0, 1]
    assert {e["method"] for e in tables["table2"]} == {"ours (2)", "ours_random (2)", "average (all)", "prompting",
                                                       "target_lora"}
