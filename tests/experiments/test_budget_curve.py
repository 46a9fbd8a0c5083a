"""The budget sweep's table: one entry per step budget, numbers straight from the runs it groups."""

from __future__ import annotations

import pytest

from lora_recycle.experiments.budget_curve import budget_curve
from lora_recycle.experiments.findings import BELOW, HOLDS
from lora_recycle.recipe import TARGET_ADAPTER_ID

TASKS = ("a", "b")
N = 200  # test rows per task: enough for the bootstrap to separate 0.2 from 0


def _marks(accuracy: float) -> str:
    right = round(accuracy * N)
    return "1" * right + "0" * (N - right)


def _merge(task: str, steps: int, accuracy: float, random_init: bool = False, target_coef: float = 0.5,
           best: int | None = None, method: str = "ours", seed: int = 0) -> dict:
    settings = {"method": method, "adaptive": True, "steps": steps, "seed": seed, "lr": 0.05, "k": 3}
    coefficients = {"0.q_proj": {TARGET_ADAPTER_ID: target_coef, "x": 0.1},
                    "0.v_proj": {TARGET_ADAPTER_ID: target_coef / 2, "x": 0.2}}
    return {"kind": "merge", "pool": "recycled", "with_target": True, "exclude_top": 0, "random_init": random_init,
            "task": task, "seed": seed, "k": 3, "method": f"{method}_s{steps}", "accuracy": accuracy,
            "correct": _marks(accuracy), "spec": {"settings": settings}, "selected": [TARGET_ADAPTER_ID, "x"],
            "scores": {"x": 0.5}, "coefficients": coefficients, "metrics": {"best_step": best or steps}}


def _rows(budgets: dict[int, float]) -> list[dict]:
    rows = [{"kind": "target_lora", "task": t, "seed": 0, "accuracy": 0.6, "correct": _marks(0.6), "spec": {}}
            for t in TASKS]
    for steps, accuracy in budgets.items():
        for t in TASKS:
            rows.append(_merge(t, steps, accuracy, target_coef=steps / 100, best=steps // 2 if t == "a" else None))
            rows.append(_merge(t, steps, 0.3, random_init=True))
    return rows


def test_one_entry_per_budget_with_its_runs_numbers():
    entries = budget_curve(_rows({10: 0.3, 20: 0.5, 100: 0.6}))
    assert [e["steps"] for e in entries] == [10, 20, 100]
    first, _, last = entries
    assert first["accuracy"]["mean"] == pytest.approx(0.3) and first["random_init"]["mean"] == pytest.approx(0.3)
    assert first["tasks"] == 2 and first["labels"] == ["ours_s10"]
    # best steps: half the budget on task a, the last step on b
    assert first["best_step"] == pytest.approx(7.5) and first["last_step_best"] == 1 and first["runs"] == 2
    # the target LoRA's value: mean over groups (0.1 and 0.05 at 10 steps), max over groups
    assert first["target_coefficient"]["mean"] == pytest.approx(0.075)
    assert first["target_coefficient"]["max"] == pytest.approx(0.1)
    assert first["vs_target_lora"]["estimate"] == pytest.approx(-0.3)
    assert first["vs_target_lora_verdict"] == BELOW
    assert last["vs_target_lora"]["estimate"] == pytest.approx(0.0) and last["vs_target_lora_verdict"] == HOLDS
    assert last["vs_random_init"]["estimate"] == pytest.approx(0.3)


def test_fewer_than_three_budgets_is_no_sweep():
    assert budget_curve(_rows({20: 0.5})) == []
    assert budget_curve(_rows({20: 0.5, 100: 0.6})) == []


def test_methods_with_other_settings_are_separate_sweeps():
    rows = _rows({10: 0.3, 20: 0.5, 50: 0.6})
    rows += [_merge(t, s, 0.4, method="adamerging") for t in TASKS for s in (10, 20)]
    entries = budget_curve(rows)
    assert {e["method"] for e in entries} == {"ours"}  # adamerging ran at two budgets only


def test_a_sweep_under_way_reads_every_budget_on_the_same_tasks():
    rows = _rows({10: 0.3, 20: 0.5, 50: 0.6})
    # task c: its 10- and 20-step runs are in, its 50-step run and every control are not
    rows.append({"kind": "target_lora", "task": "c", "seed": 0, "accuracy": 1.0, "correct": _marks(1.0), "spec": {}})
    rows += [_merge("c", s, 1.0) for s in (10, 20)]
    entries = budget_curve(rows)
    assert all(e["tasks"] == 2 and e["incomplete_tasks"] == ["c"] for e in entries)
    assert entries[0]["accuracy"]["mean"] == pytest.approx(0.3)  # c's 1.0 is not averaged in
    assert entries[0]["target_lora"]["mean"] == pytest.approx(0.6)
