"""Recycle adapters for a task: attach, set or learn coefficients, and return the exact merged adapter."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lora_recycle.adapters.lora import LoraAdapter
from lora_recycle.merging.methods import MergeSettings
from lora_recycle.models.inject import MergedModel
from lora_recycle.tasks.format import Task
from lora_recycle.tuning.adaptive import CoefficientFit, tune_coefficients
from lora_recycle.tuning.loop import LoopConfig


@dataclass
class MergeOutcome:
    """The merged adapter, its coefficients per group and adapter, and the tuning record if adaptive."""

    adapter: LoraAdapter
    coefficients: dict[str, dict[str, float]]
    settings: MergeSettings
    fit: CoefficientFit | None = None

    def record(self) -> dict:
        """JSON-ready summary for ``merge_result.json`` and ``--json`` output."""
        data = {
            "settings": {k: v for k, v in self.settings.__dict__.items()},
            "adapters": list(next(iter(self.coefficients.values())).keys()) if self.coefficients else [],
            "coefficients": self.coefficients,
        }
        if self.fit is not None:
            loop = self.fit.loop
            data.update(best_step=loop.best_step, best_validation_loss=loop.best_val_loss,
                        initial_validation_loss=loop.initial_val_loss, history=loop.history)
        return data


def merge_adapters(
    model, tokenizer, task: Task | None, adapters: list[LoraAdapter], settings: MergeSettings,
    device: torch.device | str = "cpu",
) -> MergeOutcome:
    """Merge ``adapters`` on ``model`` per ``settings``; the model is left exactly as it came in."""
    torch.manual_seed(settings.seed)
    merged = MergedModel(model, adapters, settings.granularity, settings.activation, settings.init, settings.strategy)
    try:
        fit = None
        if settings.adaptive:
            if task is None:
                raise ValueError("adaptive merging needs a task")
            config = LoopConfig(steps=settings.steps, lr=settings.lr, batch_size=settings.batch_size,
                                micro_batch_size=settings.batch_size, eval_every=settings.eval_every,
                                seed=settings.seed)
            fit = tune_coefficients(merged, tokenizer, task, config, device)
        values = fit.values if fit is not None else merged.activated().detach()
        adapter = merged.merged_adapter(values, adapter_id=f"merged-{settings.method}")
        return MergeOutcome(adapter, merged.coefficient_table(values), settings, fit)
    finally:
        merged.detach()
