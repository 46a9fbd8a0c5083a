"""Which metric scores a split and how tables name it (no torch here: command-line checks read these first)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lora_recycle.errors import UserError

if TYPE_CHECKING:
    from lora_recycle.tasks.format import Task

METRICS = ("loglik", "exact_match")
METRIC_ALIASES = {"accuracy": "loglik", "loglik": "loglik", "exact_match": "exact_match"}
METRIC_LABELS = {"loglik": "choice log-likelihood accuracy", "exact_match": "greedy-generation exact match"}


def metric_label(name: str) -> str:
    """How tables and verdicts name a metric, e.g. ``greedy-generation exact match``."""
    return METRIC_LABELS.get(name, name)


def resolve_metric(task: Task, metric: str | None = None) -> str:
    """The metric a split is scored with: ``metric``, else the task's own, else ``loglik`` (multiple choice).

    Generation tasks are always scored by exact match; asking them for ``loglik`` is an error.
    """
    requested = metric or task.spec.metric or "accuracy"
    if requested not in METRIC_ALIASES:
        raise UserError(f"--metric {requested!r}: choose one of {', '.join(METRICS)}")
    name = METRIC_ALIASES[requested]
    if task.type == "generation":
        if metric is not None and name == "loglik":
            raise UserError(f"--metric loglik: task {task.name} is a generation task (scored by exact_match)")
        return "exact_match"
    return name
