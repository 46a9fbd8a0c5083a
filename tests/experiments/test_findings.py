"""The report's findings and recipe tables: intervals equal direct aggregation of the recorded runs."""

from __future__ import annotations

import statistics

import pytest

from lora_recycle.experiments.findings import findings, paired, per_task_table, recipe_table
from lora_recycle.experiments.results import ResultsStore


@pytest.fixture(scope="module")
def rows(smoke_results):
    with ResultsStore(smoke_results["results"], create=False) as store:
        return store.rows()


def _mean(rows, **where):
    return statistics.fmean(r["accuracy"] for r in rows if all(r[k] == v for k, v in where.items()))


def test_each_finding_compares_the_runs_it_names(rows):
    by_question = {f["question"]: f for f in findings(rows)}
    assert list(by_question) == ["Q1", "Q2", "Q3", "Q4"]
    main = dict(kind="merge", method="ours", k=2, pool="recycled", exclude_top=0)
    # every cell has the same number of test rows, so the pooled difference is the difference of means
    q1 = by_question["Q1"]["interval"]
    assert q1["estimate"] == pytest.approx(_mean(rows, **main, with_target=False, random_init=False)
                                           - _mean(rows, kind="prompting"))
    q2 = by_question["Q2"]["interval"]
    assert q2["estimate"] == pytest.approx(_mean(rows, **main, with_target=True, random_init=False)
                                           - _mean(rows, kind="target_lora"))
    q3 = by_question["Q3"]["interval"]
    assert q3["estimate"] == pytest.approx(_mean(rows, **main, with_target=True, random_init=False)
                                           - _mean(rows, **main, with_target=True, random_init=True))
    q4 = by_question["Q4"]["interval"]
    assert q4["estimate"] == pytest.approx(_mean(rows, kind="merge", pool="in_house", exclude_top=0, k=2)
                                           - _mean(rows, **main, with_target=True, random_init=False))
    for f in by_question.values():
        i = f["interval"]
        assert i["low"] <= i["estimate"] <= i["high"] and i["seeds"] == 2
        assert f["verdict"] in ("holds", "does not hold", "inconclusive")


def test_verdicts_follow_the_interval():
    a = {"kind": "prompting", "task": "t", "seed": 0, "correct": "0" * 40}
    b = {"kind": "target_lora", "task": "t", "seed": 0, "correct": "1" * 40}
    assert paired([b], [a]).low == pytest.approx(1.0)
    assert paired([a], None).estimate == 0.0
    assert paired([a], [dict(b, task="other")]) is None  # no cell in common


def test_recipe_table_counts_wins_against_the_target_lora(rows):
    table = recipe_table(rows)
    assert [(r["method"], r["k"]) for r in table] == [("ours", 2)]
    entry = table[0]
    tasks = sorted({r["task"] for r in rows})
    diffs = {t: _mean(rows, kind="merge", method="ours", k=2, with_target=True, random_init=False,
                      pool="recycled", task=t) - _mean(rows, kind="target_lora", task=t) for t in tasks}
    assert entry["per_task"] == pytest.approx(diffs)
    assert entry["wins"] == sum(d > 0 for d in diffs.values()) and entry["tasks"] == len(tasks)
    assert entry["goal"] is False or entry["vs_control"]["low"] > 0


def test_a_recipe_run_on_fewer_seeds_is_compared_on_its_own_seeds(rows):
    """A recipe on seed 0 only wins or loses a task against the seed-0 target LoRA, not the mean of all seeds."""
    recipe = [r for r in rows if r["kind"] == "merge" and r["method"] == "ours" and r["with_target"]
              and r["pool"] == "recycled" and r["seed"] == 0]
    target = [r for r in rows if r["kind"] == "target_lora"]
    task = recipe[0]["task"]
    # the seed-0 target LoRA far below the recipe, the other seeds' far above: only seed 0 may count
    shifted = [dict(r, accuracy=(0.0 if r["seed"] == 0 else 1.0)) if r["task"] == task else r for r in target]
    others = [r for r in rows if r["kind"] != "target_lora" and not (  # the recipe's other seeds dropped
        r["kind"] == "merge" and r["method"] == "ours" and r["with_target"] and r["pool"] == "recycled")]
    entry = recipe_table(others + recipe + shifted)[0]
    mine = _mean(recipe, task=task)
    assert entry["per_task"][task] == pytest.approx(mine - 0.0)


def test_per_task_table_is_the_mean_over_seeds(rows):
    table = per_task_table(rows)
    for task in table["tasks"]:
        assert table["rows"]["prompting"][task] == pytest.approx(_mean(rows, kind="prompting", task=task))
    assert "ours (2) + target" in table["rows"] and "average (all)" in table["rows"]
