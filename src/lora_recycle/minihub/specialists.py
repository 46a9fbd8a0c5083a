"""Is each pool adapter a specialist? Its own source task's test accuracy next to the base model's.

Hub model cards carry evaluation results; ours record ``source_accuracy`` and ``base_accuracy`` on the
adapter's own task (test split, the profile's row limit), and ``hub build`` prints the table and the
pool's median gain. Base accuracies are computed once per task and cached in the hub directory.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from lora_recycle.tasks.format import Task


@dataclass(frozen=True)
class SpecialistScore:
    """One adapter's accuracy on its own task's test split, and the base model's on the same rows."""

    name: str
    task: str
    task_type: str
    source_accuracy: float
    base_accuracy: float

    @property
    def gain(self) -> float:
        return self.source_accuracy - self.base_accuracy


def task_accuracy(model, tokenizer, task: Task, limit: int | None, precision: str, adapter=None,
                  split: str = "test", start: int = 0) -> float:
    """Accuracy on ``limit`` rows from ``start`` of a split (test by default) of the base model, or of
    ``adapter`` folded into it, in the build's precision."""
    from lora_recycle.models.fold import folded
    from lora_recycle.models.precision import computing_in
    from lora_recycle.tasks.scoring import evaluate_task

    device = next(model.parameters()).device
    with folded(model, adapter), computing_in(model, precision, device):
        return evaluate_task(model, tokenizer, task, split, device=device, limit=limit, start=start).accuracy


class BaseAccuracies:
    """Base-model accuracies per task and rows, cached as one small JSON file per task content, rows and
    precision under ``directory`` (one file each, so parallel workers never write the same file)."""

    def __init__(self, directory: Path, limit: int, precision: str):
        self.directory, self.limit, self.precision = Path(directory), limit, precision

    def get(self, model, tokenizer, task: Task, rows: GateRows | None = None) -> float:
        """The base's accuracy on ``rows`` (default: the first ``limit`` test rows, what adapters report)."""
        rows = rows or GateRows("test", 0, self.limit)
        tail = f"{self.limit}" if rows == GateRows("test", 0, self.limit) else rows.label().replace(":", "-")
        path = self.directory / f"{task.name}-{task.content_hash()}-{tail}-{self.precision}.json"
        if path.is_file():
            return float(json.loads(path.read_text())["accuracy"])
        value = task_accuracy(model, tokenizer, task, rows.limit, self.precision, split=rows.split, start=rows.start)
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps({"task": task.name, "rows": rows.label(), "precision": self.precision,
                                       "accuracy": value}) + "\n")
        partial.replace(path)
        return value


@dataclass(frozen=True)
class GateRows:
    """The rows an adapter's author checks it on before publishing: ``limit`` rows of ``split`` from ``start``."""

    split: str
    start: int = 0
    limit: int | None = None

    def label(self) -> str:
        end = "" if self.limit is None else self.start + self.limit
        return f"{self.split}[{self.start or ''}:{end}]"


DEV_ROWS = 100  # test rows after the reported ones that the retry gate checks (multiple-choice pool adapters)
MIN_DEV_ROWS = 40  # fewer left after the reported rows: the gate checks the validation split instead


def gate_rows(task: Task, reported: int) -> GateRows:
    """Where the retry gate looks: the test rows after the ``reported`` ones (never scored again), or the
    validation split where fewer than ``MIN_DEV_ROWS`` are left (wine_cultivar's 78 test rows).

    In-house adapters gate like pool ones: no experiment merges them (its in-house pool is its own
    target-task LoRAs, trained on 100 examples like the paper's), so a target's test rows are theirs to use."""
    dev = len(task.split("test")) - reported
    if dev >= MIN_DEV_ROWS:
        return GateRows("test", reported, min(dev, DEV_ROWS))
    return GateRows("validation" if task.split("validation") else "train")


def eval_card_fields(name: str, task: Task, source_accuracy: float, base_accuracy: float, limit: int) -> dict:
    """Card data: the two accuracies as top-level keys and as a Hub-style ``model-index`` entry."""
    split = f"test[:{limit}]"
    return {
        "source_accuracy": round(source_accuracy, 4), "base_accuracy": round(base_accuracy, 4),
        "model-index": [{"name": name, "results": [{
            "task": {"type": "text-generation" if task.type == "generation" else "multiple-choice"},
            "dataset": {"name": task.name, "type": task.name, "split": split},
            "metrics": [{"type": "accuracy", "value": round(source_accuracy, 4), "name": "accuracy"},
                        {"type": "accuracy", "value": round(base_accuracy, 4), "name": "base model accuracy"}],
        }]}],
    }


def summary(scores: list[SpecialistScore]) -> dict:
    """Median gains (all adapters, multiple-choice ones alone) and how many fall below the base."""
    gains = [s.gain for s in scores]
    choice = [s.gain for s in scores if s.task_type == "multiple_choice"]
    return {
        "adapters": len(scores),
        "median_gain": statistics.median(gains) if gains else float("nan"),
        "median_gain_multiple_choice": statistics.median(choice) if choice else float("nan"),
        "below_base": sum(g < 0 for g in gains),
    }


def render_table(scores: list[SpecialistScore]) -> str:
    """A plain-text table of each adapter's own-task accuracy against the base, then the medians."""
    width = max([len(s.name) for s in scores] + [7])
    lines = [f"{'adapter':<{width}}  {'task type':<15}  {'base':>5}  {'adapter':>7}  {'gain':>6}"]
    for s in scores:
        lines.append(f"{s.name:<{width}}  {s.task_type:<15}  {s.base_accuracy:>5.2f}  {s.source_accuracy:>7.2f}  "
                     f"{100 * s.gain:>+6.1f}")
    stats = summary(scores)
    lines.append(f"median gain {100 * stats['median_gain']:+.1f} points over {stats['adapters']} adapters; "
                 f"multiple choice {100 * stats['median_gain_multiple_choice']:+.1f}; "
                 f"{stats['below_base']} below the base on their own task")
    return "\n".join(lines)
