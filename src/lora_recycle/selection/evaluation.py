"""Evaluation-based selection: score every pool adapter by its accuracy on the task's training examples.

Each adapter is folded into a scratch copy of the weights (``W' = W + s B A``) at its own scale and
scored with teacher forcing; DESIGN section 8 measured this at 0.92-1.0 of base-model throughput
on CPU, ahead of PEFT's per-adapter ``set_adapter`` loop. Adapters are loaded one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from tqdm.auto import tqdm

from lora_recycle.adapters.lora import LoraAdapter
from lora_recycle.models.fold import folded
from lora_recycle.tasks.format import Task
from lora_recycle.tasks.scoring import evaluate_task


def evaluation_scores(
    model, tokenizer, task: Task, adapter_ids: Iterable[str], load: Callable[[str], LoraAdapter],
    split: str = "train", limit: int | None = None, device: torch.device | str = "cpu", metric: str | None = None,
) -> dict[str, float]:
    """``{adapter id: accuracy on the split by metric}``, loading and folding one adapter at a time.

    The paper ranks by greedy exact match on all labelled examples (``split="labelled"``,
    ``metric="exact_match"``); the default is log-likelihood accuracy on the training split.
    """
    scores: dict[str, float] = {}
    ids = list(adapter_ids)
    for adapter_id in tqdm(ids, desc=f"evaluating pool on {task.name}", unit="adapter", disable=None):
        adapter = load(adapter_id)
        with folded(model, adapter):
            scores[adapter_id] = evaluate_task(model, tokenizer, task, split, device, limit,
                                                   metric=metric).accuracy
    return scores


def strategy_scores(name: str, inputs, ids: list[str]) -> dict[str, float]:
    """The ``evaluation`` selection strategy's scores (see ``selection/strategies.py``)."""
    return evaluation_scores(inputs.model, inputs.tokenizer, inputs.task, ids, inputs.load, split=inputs.split,
                             device=inputs.device, metric=inputs.metric)
