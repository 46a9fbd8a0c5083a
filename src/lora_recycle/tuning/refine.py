"""Refine a merge: fine-tune the merged adapter as one LoRA, warm-started from the merge (beyond the paper).

The merge (coefficients already learned) is compressed to ``refine_rank`` by an exact-factor SVD, attached
as a single adapter with coefficient 1, and its factors (and that coefficient) train on the task's training
rows for ``refine_steps`` steps. The merge itself is a candidate of the best-validation snapshot, so
refining never ends worse on validation than the merge it started from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lora_recycle.adapters.lora import LoraAdapter
from lora_recycle.merging.compress import compress_adapter
from lora_recycle.models.inject import MergedModel
from lora_recycle.tasks.format import Task
from lora_recycle.tuning.gradient import tune_coefficients
from lora_recycle.tuning.loop import LoopConfig, LoopResult


@dataclass
class Refinement:
    """The refined adapter and how its fine-tuning went."""

    adapter: LoraAdapter
    loop: LoopResult
    compression_error: float  # max relative Frobenius error of the rank cut before fine-tuning

    def record(self) -> dict:
        return {"best_step": self.loop.best_step, "initial_validation_loss": self.loop.initial_val_loss,
                "best_validation_loss": self.loop.best_val_loss, "compression_error": self.compression_error,
                "history": self.loop.history}


def refine_merge(model, tokenizer, task: Task, adapter: LoraAdapter, settings,
                 device: torch.device | str = "cpu") -> Refinement:
    """Fine-tune ``adapter`` (a merge) on ``task`` per ``settings.refine_*``; the model is left as it came in."""
    task.require_rows("train", "refining a merge (refine_steps)")
    compressed, summary = compress_adapter(adapter, settings.refine_rank)
    merged = MergedModel(model, [compressed], granularity="model", activation="linear", init=1.0)
    try:
        config = LoopConfig(steps=settings.refine_steps, lr=settings.refine_lr, batch_size=settings.batch_size,
                            micro_batch_size=settings.batch_size, eval_every=min(settings.eval_every,
                                                                                 settings.refine_steps),
                            seed=settings.seed)
        fit = tune_coefficients(merged, tokenizer, task, config, device, joint=True, keep_start=True)
        refined = merged.merged_adapter(fit.values, adapter_id=adapter.adapter_id)
    finally:
        merged.detach()
    refined.metadata.update({k: v for k, v in adapter.metadata.items() if k not in refined.metadata})
    return Refinement(refined, fit.loop, summary["max_relative_error"])
