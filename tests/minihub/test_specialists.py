"""The specialist table: gains, medians (all and multiple-choice), adapters below the base."""

import pytest

from lora_recycle.minihub.specialists import SpecialistScore, render_table, summary


def test_summary_and_table():
    scores = [SpecialistScore("a", "t1", "multiple_choice", 0.60, 0.40),
              SpecialistScore("b", "t1", "multiple_choice", 0.45, 0.40),
              SpecialistScore("c", "t2", "generation", 0.30, 0.00),
              SpecialistScore("d", "t3", "generation", 0.10, 0.20)]
    stats = summary(scores)
    assert stats["median_gain"] == pytest.approx((0.05 + 0.20) / 2)
    assert stats["median_gain_multiple_choice"] == pytest.approx((0.20 + 0.05) / 2)
    assert stats["below_base"] == 1 and stats["adapters"] == 4
    table = render_table(scores)
    assert "+30.0" in table and "-10.0" in table
    assert table.splitlines()[-1].startswith("median gain +12.5 points over 4 adapters; multiple choice +12.5; 1 below")


@pytest.mark.parametrize(("test_rows", "expected"), [
    (400, "test[100:200]"),  # the 100 rows after the reported ones
    (160, "test[100:160]"),  # fewer left, still enough
    (78, "validation[:]"),   # wine_cultivar: too few test rows left after the reported ones
])
def test_the_retry_gate_never_looks_at_the_reported_rows(tmp_path, test_rows, expected):
    """Pool and in-house adapters alike gate on test rows the card never reports."""
    from lora_recycle.minihub.specialists import gate_rows
    from lora_recycle.tasks import load_task
    from lora_recycle.tasks.format import Example, TaskSpec, write_task

    rows = [Example(f"x{i}", "a", choices=["a", "b"]) for i in range(100 + test_rows)]
    spec = TaskSpec(name="t", type="multiple_choice", template="{input}")
    task = load_task(write_task(tmp_path / "t", spec, rows[:100], rows[100:]))
    assert gate_rows(task, 100).label() == expected
