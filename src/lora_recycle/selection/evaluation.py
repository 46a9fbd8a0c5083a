"""Evaluation-based selection: score every pool adapter by its accuracy on the task's training examples.

Each adapter is folded into a scratch copy of the weights (``W' = W + s B A``) at its own scale and
scored with teacher forcing; DESIGN section 8 measured this at 0.92-1.0 of base-model throughput
on CPU, ahead of PEFT's per-adapter ``set_adapter`` loop. Adapters are loaded one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from lora_recycle.adapters.lora import LoraAdapter
from lora_recycle.models.fold import folded
from lora_recycle.progress import progress_bar
from lora_recycle.tasks.format import Task
from lora_recycle.tasks.scoring import NonFiniteLogits, evaluate_task


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
    for adapter_id in progress_bar(ids, desc=f"evaluating pool on {task.name}", unit="adapter"):
        adapter = load(adapter_id)
        with folded(model, adapter):
            try:
                scores[adapter_id] = evaluate_task(model, tokenizer, task, split, device, limit,
                                                   metric=metric).accuracy
            except NonFiniteLogits as exc:
                raise NonFiniteLogits(f"adapter {adapter_id}: {exc}") from None
    return scores


def strategy_scores(name: str, inputs, ids: list[str]) -> dict[str, float]:
    """The ``evaluation`` selection strategy's scores (see ``selection/strategies.py``)."""
    return evaluation_scores(inputs.model, inputs.tokenizer, inputs.task, ids, inputs.load, split=inputs.split,
                             device=inputs.device, metric=inputs.metric)


def loss_scores(model, tokenizer, task: Task, adapter_ids: Iterable[str], load: Callable[[str], LoraAdapter],
                split: str = "train", device: torch.device | str = "cpu") -> dict[str, float]:
    """``{adapter id: minus the answer-token loss on the split}`` (higher is better, like every score).

    Beyond the paper: where no adapter answers a held-out task in its expected form, accuracies tie at
    zero and say nothing, while the loss still ranks the adapters whose knowledge comes closest.
    """
    from lora_recycle.tasks.encoded import encode_task
    from lora_recycle.tasks.loss import dataset_loss

    sequences = [encode_task(tokenizer, task).training(ex) for ex in task.split(split)]
    scores: dict[str, float] = {}
    for adapter_id in progress_bar(list(adapter_ids), desc=f"pool loss on {task.name}", unit="adapter"):
        with folded(model, load(adapter_id)):
            scores[adapter_id] = -dataset_loss(model, tokenizer, sequences, device=device)
    return scores


def loss_strategy_scores(name: str, inputs, ids: list[str]) -> dict[str, float]:
    """The ``loss`` selection strategy's scores (see ``selection/strategies.py``)."""
    return loss_scores(inputs.model, inputs.tokenizer, inputs.task, ids, inputs.load, split=inputs.split,
                       device=inputs.device)
