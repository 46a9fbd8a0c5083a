"""How far an experiment's grid is in a results file, and what the rest will cost by its recorded timings.

A study spans sittings: before resuming one, a user wants the runs still to do and the worker time
they need. Each run still to do is priced at the median time of the recorded runs of the same kind of
cell (method, k, pool, with the target LoRA or not, control or not), else of the same method, else of
its preset (a new recipe on ``ours`` costs about what ``ours`` does), else left unpriced. A slice
(``--seed 1``) is priced from the whole grid's recorded runs, so seed 0's timings price seed 1. The pool's
selection scores (cached in the catalog) are not runs and are not counted.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lora_recycle.experiments.config import ResolvedExperiment
from lora_recycle.experiments.grid import RunSpec, expand_runs
from lora_recycle.experiments.results import ResultsStore


@dataclass
class CellStatus:
    """One kind of cell: its runs recorded and to do, and the seconds a run of it takes."""

    cell: str
    recorded: int = 0
    todo: int = 0
    seconds_per_run: float | None = None  # median over the recorded runs it is priced from
    priced_from: int = 0  # how many recorded runs that median is over
    todo_seconds: float | None = None


@dataclass
class GridStatus:
    """The whole grid against a results file; ``todo_seconds`` sums the priced cells (worker-seconds)."""

    experiment: str
    total: int
    recorded: int
    todo: int
    todo_seconds: float
    unpriced: int
    recorded_seconds: float
    cells: list[CellStatus] = field(default_factory=list)

    def wall_minutes(self, workers: int) -> float:
        """The priced remainder's wall time with ``workers`` runs side by side (perfect packing)."""
        return self.todo_seconds / max(workers, 1) / 60

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recorded_seconds(results: str | Path) -> dict[str, float]:
    """``{run_hash: total seconds}`` of every run recorded in ``results`` (empty if the file does not exist)."""
    if not Path(results).is_file():
        return {}
    with ResultsStore(results, create=False, read_only=True) as store:
        return store.run_seconds()


def grid_status(resolved: ResolvedExperiment, results: str | Path,
                whole: ResolvedExperiment | None = None) -> GridStatus:
    """The grid of ``resolved`` against ``results``: per cell, runs recorded and to do, and the remaining cost.

    ``whole`` is the unsliced grid ``resolved`` was cut from: its recorded runs price the slice's."""
    runs = expand_runs(resolved)
    seconds = recorded_seconds(results)
    by_cell: dict[str, list[RunSpec]] = defaultdict(list)
    for run in runs:
        by_cell[run.cell].append(run)
    by_cell_price: dict[str, list[float]] = defaultdict(list)
    by_method: dict[tuple[str, str], list[float]] = defaultdict(list)
    by_preset: dict[str, list[float]] = defaultdict(list)
    for run in expand_runs(whole) if whole is not None else runs:
        if run.run_hash in seconds:
            by_cell_price[run.cell].append(seconds[run.run_hash])
            by_method[(run.kind, run.method)].append(seconds[run.run_hash])
            if run.settings is not None:
                by_preset[run.settings.method].append(seconds[run.run_hash])
    cells, todo_seconds, unpriced = [], 0.0, 0
    for name, group in by_cell.items():
        done = [seconds[r.run_hash] for r in group if r.run_hash in seconds]
        todo = len(group) - len(done)
        first = group[0]
        prices = (done or by_cell_price.get(name) or by_method.get((first.kind, first.method))
                  or (by_preset.get(first.settings.method) if first.settings is not None else None) or [])
        cell = CellStatus(name, len(done), todo)
        if prices:
            cell.seconds_per_run, cell.priced_from = statistics.median(prices), len(prices)
            cell.todo_seconds = todo * cell.seconds_per_run
            todo_seconds += cell.todo_seconds
        else:
            unpriced += todo
        cells.append(cell)
    recorded = sum(c.recorded for c in cells)
    return GridStatus(resolved.config.name, len(runs), recorded, len(runs) - recorded, todo_seconds, unpriced,
                      sum(seconds[r.run_hash] for r in runs if r.run_hash in seconds), cells)


def outside_grid(resolved: ResolvedExperiment, store: ResultsStore) -> dict[str, str]:
    """The runs recorded in ``store`` that ``resolved``'s grid no longer holds (a task, pool or setting changed),
    as ``{run_hash: "task seed N: method"}``: what ``experiment prune`` removes."""
    wanted = {run.run_hash for run in expand_runs(resolved)}
    return {h: label for h, label in store.run_labels().items() if h not in wanted}


def status_lines(status: GridStatus, workers: int) -> list[str]:
    """The status as a table a terminal shows (cells with runs to do first, costliest first)."""
    lines = [f"experiment {status.experiment}: {status.total} runs, {status.recorded} recorded "
             f"({status.recorded_seconds / 60:.0f} worker-min), {status.todo} to do", "",
             "| cell | recorded | to do | s/run (median of n) | to do, worker-min |", "| --- | --- | --- | --- | --- |"]
    order = sorted(status.cells, key=lambda c: (c.todo == 0, -(c.todo_seconds or 0), c.cell))
    for c in order:
        price = "–" if c.seconds_per_run is None else f"{c.seconds_per_run:.0f} ({c.priced_from})"
        cost = "–" if c.todo_seconds is None else f"{c.todo_seconds / 60:.1f}"
        lines.append(f"| {c.cell} | {c.recorded} | {c.todo} | {price} | {cost} |")
    lines += ["", f"to do: {status.todo_seconds / 60:.0f} worker-min, about {status.wall_minutes(workers):.0f} min "
              f"with {workers} worker(s) side by side"
              + (f"; {status.unpriced} run(s) of methods not yet recorded are not priced" if status.unpriced else "")
              + " (selection scores not yet cached in the catalog come on top)"]
    return lines
