"""Figure 4's numbers: the learned merging coefficients themselves, per method and k, from every run they come from.

A run's coefficient for an adapter is its value (after the method's activation) averaged over the run's
coefficient groups (per module for ours, one per model for LoraHub). Adapters play one of four roles:
the target-task LoRA, the top recycled adapter by selection score, pi-Tuning's fresh LoRA, and the others
(averaged together). No normalisation: a target-task LoRA at 0.3 is a third of itself in the merge.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from lora_recycle.experiments.report import is_main_merge, method_label
from lora_recycle.recipe import TARGET_ADAPTER_ID

Row = dict[str, Any]
ROLES = ("target", "top", "fresh", "other")
FRESH_ID = "fresh-lora"  # pi-Tuning's jointly trained fresh LoRA (models.fresh_lora.FRESH_LORA_ID)


def learned_runs(rows: list[Row]) -> list[Row]:
    """Main merges (recycled pool, no control) whose coefficients were learned, over more than one adapter."""
    return [r for r in rows if is_main_merge(r) and r.get("coefficients") and len(r["selected"]) > 1
            and r["spec"].get("settings", {}).get("adaptive")]


def role_of(adapter: str, top: str | None) -> str:
    if adapter == TARGET_ADAPTER_ID:
        return "target"
    if adapter == FRESH_ID:
        return "fresh"
    return "top" if adapter == top else "other"


def run_coefficients(row: Row) -> dict[str, dict[str, float]]:
    """``{role: {"mean", "max"}}`` of one run: the mean and the largest value over its groups (and, for
    ``other``, over its adapters)."""
    scores = row.get("scores") or {}
    recycled = [a for a in row["selected"] if a not in (TARGET_ADAPTER_ID, FRESH_ID)]
    top = min(recycled, key=lambda a: (-scores.get(a, float("-inf")), a)) if scores and recycled else None
    values: dict[str, list[float]] = defaultdict(list)
    for group in row["coefficients"].values():
        for adapter, value in group.items():
            values[role_of(adapter, top)].append(value)
    return {role: {"mean": statistics.fmean(v), "max": max(v)} for role, v in values.items()}


def coefficient_points(rows: list[Row]) -> list[dict[str, Any]]:
    """One point per run and role: the method, k, target LoRA in the pool, task, seed and the values."""
    points = []
    for row in sorted(learned_runs(rows), key=lambda r: (r["method"], r["k"] or 0, r["with_target"], r["task"],
                                                         r["seed"])):
        for role, value in sorted(run_coefficients(row).items(), key=lambda item: ROLES.index(item[0])):
            points.append({"method": method_label(row), "with_target": row["with_target"], "task": row["task"],
                           "seed": row["seed"], "role": role, **value})
    return points


def runs_label(points: list[dict[str, Any]]) -> str:
    """Which runs a summary draws on: ``seeds 0-2 x 6 tasks`` or ``seed 0 x 6 tasks``."""
    seeds = sorted({p["seed"] for p in points})
    tasks = len({p["task"] for p in points})
    named = (f"seed {seeds[0]}" if len(seeds) == 1 else
             f"seeds {seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else
             "seeds " + ",".join(map(str, seeds)))
    return f"{named} x {tasks} tasks"


def coefficient_summary(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method (k), target LoRA in the pool and role: the runs' mean coefficient (mean, lowest and highest
    run) and the largest single group value, with the runs it draws on."""
    cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        cells[(p["method"], p["with_target"])].append(p)
    out = []
    for (method, with_target), group in cells.items():
        label = runs_label(group)
        for role in ROLES:
            mine = [p for p in group if p["role"] == role]
            if mine:
                means = [p["mean"] for p in mine]
                out.append({"method": method, "with_target": with_target, "role": role, "runs": len(mine),
                            "drawn_from": label, "mean": statistics.fmean(means), "lowest_run": min(means),
                            "highest_run": max(means), "max": max(p["max"] for p in mine)})
    return out
