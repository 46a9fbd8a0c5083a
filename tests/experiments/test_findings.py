"""The report's findings and recipe tables: intervals equal direct aggregation of the recorded runs."""

from __future__ import annotations

import statistics

import pytest

from lora_recycle.experiments.bootstrap import Interval
from lora_recycle.experiments.findings import (
    ABOUT_THE_SAME,
    IMPROVES,
    MEANINGFUL_GAIN,
    Claim,
    findings,
    paired,
    per_task_table,
    recipe_table,
)
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
        assert f["verdict"] in f["outcomes"]


def test_verdicts_follow_the_interval():
    a = {"kind": "prompting", "task": "t", "seed": 0, "correct": "0" * 40}
    b = {"kind": "target_lora", "task": "t", "seed": 0, "correct": "1" * 40}
    assert paired([b], [a]).low == pytest.approx(1.0)
    assert paired([a], None).estimate == 0.0
    assert paired([a], [dict(b, task="other")]) is None  # no cell in common


def test_a_seed_under_way_is_left_out_not_cutting_the_others_to_its_tasks():
    """Seeds 0 and 1 ran both tasks, seed 2 only "t": the interval reads seeds 0-1 on both tasks (as Table 2's
    cells do), not all three seeds on "t" alone; with no seed complete, the tasks all seeds share."""
    def row(kind, task, seed, marks):
        return {"kind": kind, "task": task, "seed": seed, "correct": marks}

    cells = [(task, seed) for seed in (0, 1) for task in ("t", "u")] + [("t", 2)]
    merged = [row("merge", task, seed, "1" * 10 if task == "u" else "0" * 10) for task, seed in cells]
    target = [row("target_lora", task, seed, "0" * 10) for task, seed in cells]
    interval = paired(merged, target, resamples=50)
    assert interval.seeds == 2 and interval.estimate == pytest.approx(0.5)
    skewed = [("t", 0), ("u", 0), ("u", 1), ("v", 1)]  # no seed ran every task: both seeds on "u" alone
    interval = paired([row("merge", t, s, "1" * 10) for t, s in skewed],
                      [row("target_lora", t, s, "0" * 10 if t == "u" else "1" * 10) for t, s in skewed], resamples=50)
    assert (interval.seeds, interval.examples, interval.estimate) == (2, 10, pytest.approx(1.0))  # per seed


def test_recipe_table_counts_wins_against_the_target_lora(rows):
    """Every merge run with the target LoRA gets a row; only one with a random-init control can meet the goal."""
    table = {r["method"]: r for r in recipe_table(rows)}
    assert [(r["method"], r["k"]) for r in table.values()] == [("average", None), ("ours", 2)]
    tasks = sorted({r["task"] for r in rows})
    for method, entry in table.items():
        diffs = {t: _mean(rows, kind="merge", method=method, k=entry["k"], with_target=True, random_init=False,
                          pool="recycled", task=t) - _mean(rows, kind="target_lora", task=t) for t in tasks}
        assert entry["per_task"] == pytest.approx(diffs)
        assert entry["wins"] == sum(d > 0 for d in diffs.values()) and entry["tasks"] == len(tasks)
        assert entry["vs_target_lora"]["estimate"] == pytest.approx(statistics.fmean(diffs.values()))
        assert entry["seeds"] == 2
    assert table["ours"]["controlled"] and table["ours"]["vs_control"] is not None
    assert table["ours"]["goal"] is False or table["ours"]["vs_control"]["low"] > 0
    average = table["average"]  # no control ran: the goal cannot be met however it does
    assert not average["controlled"] and average["vs_control"] is None and average["goal"] is False


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
    entry = next(r for r in recipe_table(others + recipe + shifted) if r["method"] == "ours")
    mine = _mean(recipe, task=task)
    assert entry["per_task"][task] == pytest.approx(mine - 0.0)


def test_per_task_table_is_the_mean_over_seeds(rows):
    table = per_task_table(rows)
    for task in table["tasks"]:
        assert table["rows"]["prompting"][task] == pytest.approx(_mean(rows, kind="prompting", task=task))
    assert "ours (2) + target" in table["rows"] and "average (all)" in table["rows"]


def _interval(low: float, high: float) -> Interval:
    return Interval((low + high) / 2, low, high, 0.95, 3, 100, 2000)


@pytest.mark.parametrize(("low", "high", "expected"), [
    (-0.09, -0.03, "does not hold: below"),  # wholly below -0.02
    (-0.05, -0.01, "inconclusive"),  # straddles -0.02
    (-0.015, 0.015, "holds"),  # wholly within +/- 0.02
    (-0.02, 0.02, "holds"),  # the margin itself is within
    (0.01, 0.05, "inconclusive"),  # straddles +0.02
    (0.03, 0.09, "does not hold: above"),  # wholly above +0.02
    (-0.05, 0.05, "inconclusive"),  # straddles both
])
def test_an_equivalence_claim_holds_only_when_the_whole_interval_is_within_the_margin(low, high, expected):
    assert (ABOUT_THE_SAME.test, ABOUT_THE_SAME.margin) == ("equivalence", MEANINGFUL_GAIN) and MEANINGFUL_GAIN == 0.02
    assert Claim("above", 0.0) == IMPROVES
    assert ABOUT_THE_SAME.verdict(_interval(low, high)) == expected
    assert expected in ABOUT_THE_SAME.outcomes()


@pytest.mark.parametrize(("low", "high", "expected"), [
    (0.01, 0.2, "holds"), (-0.2, -0.01, "does not hold: below"), (-0.01, 0.01, "inconclusive"),
    (0.0, 0.1, "inconclusive"),
])
def test_a_one_sided_claim_holds_when_the_interval_is_above_zero(low, high, expected):
    assert IMPROVES.verdict(_interval(low, high)) == expected
    assert set(IMPROVES.outcomes()) == {"holds", "does not hold: below", "inconclusive"}
    assert IMPROVES.verdict(None) == "not run"


def _cells(kind: str, marks: str, method: str = "", with_target: bool = False, random_init: bool = False,
           k: int | None = None, pool: str = "recycled") -> list[dict]:
    return [{"kind": kind, "method": method or kind, "k": k, "with_target": with_target, "random_init": random_init,
             "pool": pool if kind == "merge" else "none", "exclude_top": 0, "seed": seed, "task": "t",
             "correct": marks, "accuracy": marks.count("1") / len(marks)} for seed in (0, 1, 2)]


# ours + target LoRA against the target LoRA's "10" * 50 (and the random-init control, also "10" * 50)
SIDES = {"below": "00" * 50, "within": "10" * 50, "above": "11" * 50, "inconclusive": "1001" * 25}


@pytest.mark.parametrize("side", list(SIDES))
def test_q2_and_q3_read_the_interval_against_the_margin_on_both_sides(side):
    """Synthetic runs: ours + target LoRA 50 points below, level with, 50 above the target LoRA (and the control),
    or level on average with every example flipped (an interval wide across both margins)."""
    ours = dict(method="ours", k=10)
    rows = (_cells("prompting", "0" * 100) + _cells("target_lora", SIDES["within"])
            + _cells("merge", "10" * 50, **ours) + _cells("merge", SIDES[side], with_target=True, **ours)
            + _cells("merge", SIDES["within"], with_target=True, random_init=True, **ours))
    by_question = {f["question"]: f for f in findings(rows)}
    expected = {"below": "does not hold: below", "within": "holds", "above": "does not hold: above",
                "inconclusive": "inconclusive"}[side]
    for question in ("Q2", "Q3"):
        finding = by_question[question]
        assert (finding["test"], finding["margin"]) == ("equivalence", 0.02)
        assert finding["verdict"] == expected, (question, finding["interval"])
        assert set(finding["outcomes"]) == {"holds", "does not hold: below", "does not hold: above", "inconclusive"}
    assert by_question["Q1"]["verdict"] == "holds" and by_question["Q4"]["verdict"] == "not run"
    assert by_question["Q1"]["paper"] == pytest.approx(0.185) and by_question["Q2"]["paper"] == pytest.approx(0.018)
