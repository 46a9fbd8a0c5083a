"""How a merge's answer depends on its step budget: one method with the target-task LoRA run at several step
budgets (``experiments/budget.yaml``), each budget beside its random-init control and the target LoRA alone.

A sweep is every main merge with the target LoRA (and its random-init controls) whose settings differ only in
``steps``; a family run at three budgets or more is a sweep. Per budget: accuracy (task mean per seed), the
best validation step (median over runs), the target LoRA's learned coefficient (mean of the runs' means over
their groups, and the largest group value), and Q2's and Q3's paired comparisons with their verdicts. Every
budget of a sweep is read on the same (task, seed) cells: those where each budget, its random-init control (when
the sweep has controls) and the target LoRA alone are all recorded, so a sweep still under way never compares
budgets over different tasks.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from lora_recycle.experiments.coefficients import run_coefficients
from lora_recycle.experiments.findings import ABOUT_THE_SAME, paired, select
from lora_recycle.experiments.report import complete_seeds, seed_stat, task_means

Row = dict[str, Any]
MIN_BUDGETS = 3  # a family run at fewer budgets is not a sweep


def _family(row: Row) -> tuple:
    """What a sweep holds fixed: every setting but the step budget and the seed (the method's name aside)."""
    settings = {key: value for key, value in row["spec"].get("settings", {}).items() if key not in ("steps", "seed")}
    return (settings.get("method"), row["k"], repr(sorted(settings.items())))


def _swept(rows: list[Row]) -> dict[tuple, dict[int, dict[bool, list[Row]]]]:
    """``{family: {steps: {random_init: rows}}}`` of the adaptive merges with the target LoRA."""
    out: dict[tuple, dict[int, dict[bool, list[Row]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for row in rows:
        settings = row["spec"].get("settings") or {}
        if (row["kind"] == "merge" and row["pool"] == "recycled" and row["with_target"] and not row["exclude_top"]
                and settings.get("adaptive") and settings.get("steps")):
            out[_family(row)][settings["steps"]][row["random_init"]].append(row)
    return out


def _target_coefficient(runs: list[Row]) -> dict[str, float | None]:
    values = [run_coefficients(r).get("target") for r in runs if r.get("coefficients")]
    values = [v for v in values if v]
    if not values:
        return {"mean": None, "max": None}
    return {"mean": statistics.fmean(v["mean"] for v in values), "max": max(v["max"] for v in values)}


def _cell(row: Row) -> tuple[str, int]:
    return row["task"], row["seed"]


def _complete_cells(budgets: dict[int, dict[bool, list[Row]]], target: list[Row]) -> set[tuple[str, int]]:
    """The (task, seed) cells where every budget, every budget's control (if the sweep has any) and the target
    LoRA alone ran."""
    controlled = any(by_init.get(True) for by_init in budgets.values())
    cells = {_cell(r) for r in target}
    for by_init in budgets.values():
        for random_init in (False, True) if controlled else (False,):
            cells &= {_cell(r) for r in by_init.get(random_init, [])}
    return cells


def budget_curve(rows: list[Row]) -> list[dict[str, Any]]:
    """One entry per (sweep, budget) in step order, each on the sweep's complete cells; empty when no family
    ran at ``MIN_BUDGETS`` budgets."""
    all_target = select(rows, kind="target_lora")
    out = []
    for (method, k, _), budgets in sorted(_swept(rows).items(), key=lambda item: (item[0][0] or "", item[0][1])):
        if len(budgets) < MIN_BUDGETS:
            continue
        cells = _complete_cells(budgets, all_target)
        started = {r["task"] for by_init in budgets.values() for runs in by_init.values() for r in runs}
        target = [r for r in all_target if _cell(r) in cells]
        for steps, by_init in sorted(budgets.items()):
            merged = [r for r in by_init.get(False, []) if _cell(r) in cells]
            noise = [r for r in by_init.get(True, []) if _cell(r) in cells]
            to_target, to_noise = paired(merged, target), paired(merged, noise)
            best = [r["metrics"]["best_step"] for r in merged if (r.get("metrics") or {}).get("best_step") is not None]
            out.append({
                "method": method, "k": k, "steps": steps, "labels": sorted({r["method"] for r in merged}),
                "tasks": len({r["task"] for r in merged}), "seeds": sorted({r["seed"] for r in merged}),
                "incomplete_tasks": sorted(started - {task for task, _ in cells}),
                "target_lora": seed_stat(task_means(complete_seeds(target))),
                "accuracy": seed_stat(task_means(complete_seeds(merged))),
                "random_init": seed_stat(task_means(complete_seeds(noise))),
                "best_step": statistics.median(best) if best else None,
                "last_step_best": sum(b == steps for b in best), "runs": len(merged),
                "target_coefficient": _target_coefficient(merged),
                "vs_target_lora": to_target.to_dict() if to_target else None,
                "vs_target_lora_verdict": ABOUT_THE_SAME.verdict(to_target),
                "vs_random_init": to_noise.to_dict() if to_noise else None,
                "vs_random_init_verdict": ABOUT_THE_SAME.verdict(to_noise),
            })
    return out
