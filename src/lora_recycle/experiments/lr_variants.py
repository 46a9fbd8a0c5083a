"""One row per method from its learning-rate variants: the paper reports pi-Tuning as the mean over lr 1e-4 and 5e-5.

A method entry with ``lr: [a, b]`` records one run per learning rate, each naming the whole list in its spec
(``RunSpec.lr_variants``). Before any table is built, the variants of one (cell, task, seed) become one row:
its accuracy is the mean of theirs and its per-example correctness the mean of theirs (fractions, which the
paired bootstrap resamples like 0/1 marks). A (task, seed) that has not recorded every learning rate of its
cell is left out, as a missing cell is, and named in ``incomplete``: a mean over the learning rates that
happen to be done would be another number than the one the row promises.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from typing import Any

Row = dict[str, Any]
CELL_FIELDS = ("kind", "method", "k", "with_target", "pool", "random_init", "exclude_top")


def lr_variants_of(row: Row) -> tuple[float, ...]:
    """The learning rates the row's method entry averages (empty: a method run at one lr)."""
    return tuple((row.get("spec") or {}).get("lr_variants") or ())


def _lr(row: Row) -> float:
    return float(((row.get("spec") or {}).get("settings") or {}).get("lr"))


def _cell(row: Row) -> tuple:
    """What the variants share: the grid cell and every setting but the learning rate and the seed."""
    settings = {key: value for key, value in ((row.get("spec") or {}).get("settings") or {}).items()
                if key not in ("lr", "seed")}
    return (*(row[f] for f in CELL_FIELDS), json.dumps(settings, sort_keys=True, default=str))


def marks(correct: str | list[float]) -> list[float]:
    """Per-example correctness as numbers: ``"101"`` as ``[1.0, 0.0, 1.0]``; a list of fractions as it is."""
    return [1.0 if c == "1" else 0.0 for c in correct] if isinstance(correct, str) else [float(c) for c in correct]


def _mean_row(runs: list[Row], lrs: list[float]) -> Row:
    """The variants of one (task, seed) as one row (the first variant's fields, the means of the numbers)."""
    first = runs[0]
    per_example = [marks(r["correct"]) for r in runs]
    if len({len(m) for m in per_example}) != 1:
        raise ValueError(f"{first['method']} on {first['task']} seed {first['seed']}: its learning-rate variants "
                         "were scored on different numbers of test examples")
    norms = [r.get("accuracy_norm") for r in runs]
    spec = {**(first.get("spec") or {})}
    spec["settings"] = {**(spec.get("settings") or {}), "lr": lrs}
    return {**first, "run_hash": "+".join(r["run_hash"] for r in runs), "spec": spec, "lr_variants": lrs,
            "accuracy": statistics.fmean(r["accuracy"] for r in runs),
            "accuracy_norm": statistics.fmean(norms) if all(n is not None for n in norms) else None,
            "correct": [statistics.fmean(column) for column in zip(*per_example, strict=True)],
            "coefficients": None, "lr_runs": [{"lr": _lr(r), "run_hash": r["run_hash"], "accuracy": r["accuracy"]}
                                              for r in runs]}


def average_lr_variants(rows: list[Row]) -> tuple[list[Row], list[dict[str, Any]]]:
    """``(rows, incomplete)``: every method's learning-rate variants averaged into one row per (task, seed), the
    other rows as they were; ``incomplete`` names each (cell, task, seed) left out for a missing learning rate.

    A cell expects every learning rate any of its runs names (an lr added to the list makes the older runs'
    (task, seed) incomplete until it is run there too).
    """
    plain = [r for r in rows if not lr_variants_of(r)]
    groups: dict[tuple, dict[tuple[str, int], list[Row]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if lr_variants_of(row):
            groups[_cell(row)][(row["task"], row["seed"])].append(row)
    averaged, incomplete = [], []
    for by_task_seed in groups.values():
        expected = sorted({lr for runs in by_task_seed.values() for r in runs for lr in lr_variants_of(r)},
                          reverse=True)
        for (task, seed), runs in sorted(by_task_seed.items()):
            runs = sorted(runs, key=_lr, reverse=True)
            missing = [lr for lr in expected if lr not in {_lr(r) for r in runs}]
            if missing:
                first = runs[0]
                incomplete.append({**{f: first[f] for f in CELL_FIELDS}, "task": task, "seed": seed,
                                   "recorded_lrs": [_lr(r) for r in runs], "missing_lrs": missing})
            else:
                averaged.append(_mean_row(runs, expected))
    return plain + averaged, incomplete
