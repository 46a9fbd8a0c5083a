"""The published study (docs/study): its tables regenerate, identical, from the committed results database."""

from __future__ import annotations

import json
from pathlib import Path

from lora_recycle.experiments.report import write_report
from lora_recycle.serialization import json_safe

STUDY = Path(__file__).resolve().parents[2] / "docs" / "study"


def test_report_tables_regenerate_from_the_committed_results(tmp_path):
    assert (STUDY / "results.db").is_file(), "docs/study/results.db is missing"
    written = write_report(STUDY / "results.db", tmp_path)
    committed = json.loads((STUDY / "tables.json").read_text())
    assert json.loads(json.dumps(json_safe(written["tables"]))) == committed
    assert (tmp_path / "report.md").read_text() == (STUDY / "report.md").read_text()
