"""Recycle adapters for a task: attach, set or learn coefficients, and return the exact merged adapter."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lora_recycle.adapters.lora import LoraAdapter
from lora_recycle.merging.compress import compress_adapter
from lora_recycle.merging.nonadaptive import merge_nonadaptive
from lora_recycle.models.fresh_lora import fresh_lora
from lora_recycle.models.inject import MergedModel
from lora_recycle.recipe.presets import METHODS
from lora_recycle.recipe.settings import MergeSettings
from lora_recycle.tasks.format import Task
from lora_recycle.tuning.loop import CoefficientFit
from lora_recycle.tuning.tuners import TUNERS


@dataclass
class MergeOutcome:
    """The merged adapter, its coefficients per group and adapter, and the tuning record if adaptive."""

    adapter: LoraAdapter
    coefficients: dict[str, dict[str, float]]
    settings: MergeSettings
    fit: CoefficientFit | None = None
    compression: dict[str, float] | None = None

    def record(self) -> dict:
        """JSON-ready summary for ``merge_result.json`` and ``--json`` output."""
        data = {
            "settings": self.settings.to_dict(),
            "adapters": list(next(iter(self.coefficients.values())).keys()) if self.coefficients else [],
            "coefficients": self.coefficients,
        }
        if self.compression is not None:
            data["compression"] = self.compression
        if self.fit is not None:
            loop = self.fit.loop
            data.update(best_step=loop.best_step, best_validation_loss=loop.best_val_loss,
                        initial_validation_loss=loop.initial_val_loss, history=loop.history)
        return data


def merge_adapters(
    model, tokenizer, task: Task | None, adapters: list[LoraAdapter], settings: MergeSettings,
    device: torch.device | str = "cpu",
) -> MergeOutcome:
    """Merge ``adapters`` on ``model`` per ``settings``; the model is left exactly as it came in.

    ``settings.method`` names a registered merge method (``recipe/presets.py``): one with a per-module
    ``combine`` merges with fixed coefficients; the others mix the adapters by coefficients, learned by
    the tuner ``settings.tuning`` (``tuning/tuners.py``) when the settings are adaptive.
    """
    torch.manual_seed(settings.seed)
    method = METHODS.lookup(settings.method)
    if method.combine is not None:
        return _merge_per_module(adapters, settings, method.combine)
    tuner = TUNERS.lookup(settings.tuning) if settings.adaptive else None
    if tuner is not None and tuner.trains_factors:
        adapters = [*adapters, fresh_lora(model, adapters, settings.seed)]
    merged = MergedModel(model, adapters, settings.granularity, settings.activation, settings.init, settings.strategy,
                         settings.composition)
    try:
        fit = None
        if tuner is not None and tuner.tune is not None:
            if task is None:
                raise ValueError("adaptive merging needs a task")
            fit = tuner.function()(merged, tokenizer, task, settings, device)
        values = fit.values if fit is not None else merged.activated().detach()
        adapter = merged.merged_adapter(values, adapter_id=f"merged-{settings.method}")
        compression = None
        if settings.max_rank:
            adapter, compression = compress_adapter(adapter, settings.max_rank)
        return MergeOutcome(adapter, merged.coefficient_table(values), settings, fit, compression)
    finally:
        merged.detach()


def _merge_per_module(adapters: list[LoraAdapter], settings: MergeSettings, combine) -> MergeOutcome:
    """A fixed-coefficient merge, one module at a time (TIES, DARE, TSV, task arithmetic, ...)."""
    result = merge_nonadaptive(adapters, combine, settings.coef, settings.prune, settings.max_rank or 64,
                               seed=settings.seed)
    weight = 1.0 / len(adapters) if settings.coef is None else settings.coef
    coefficients = {"model": {a.adapter_id: weight for a in adapters}}
    return MergeOutcome(result.adapter, coefficients, settings, None, result.error_summary())
