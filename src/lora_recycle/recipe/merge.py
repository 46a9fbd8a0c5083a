"""Recycle adapters for a task: attach, set or learn coefficients, and return the exact merged adapter."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from lora_recycle.adapters.lora import LoraAdapter
from lora_recycle.merging.module_merge import ModuleMerge
from lora_recycle.merging.nonadaptive import merge_nonadaptive
from lora_recycle.merging.rank_budget import VLLM_MAX_RANK, fit_export_rank
from lora_recycle.models.fresh_lora import FRESH_LORA_ID, fresh_lora, modal_fresh_lora
from lora_recycle.models.inject import MergedModel, require_fits
from lora_recycle.recipe.presets import METHODS
from lora_recycle.recipe.settings import MergeSettings
from lora_recycle.tasks.format import Task
from lora_recycle.tuning.loop import CoefficientFit, LoopConfig, TuneConfig
from lora_recycle.tuning.tuners import TUNERS


@dataclass
class MergeOutcome:
    """The merged adapter, its coefficients per group and adapter, and the tuning record if adaptive."""

    adapter: LoraAdapter
    coefficients: dict[str, dict[str, float]]
    settings: MergeSettings
    fit: CoefficientFit | None = None
    compression: dict | None = None  # the export's rank and per-module error (merging.rank_budget)
    fresh_lora: dict | None = None  # pi-Tuning: whether a fresh LoRA was added, and its shape or why not
    refinement: dict | None = None  # refine_steps: how fine-tuning the merge went (tuning/refine.py)

    @property
    def is_base_model(self) -> bool:
        """True when tuning found nothing better than the base model (e.g. LoraHub kept all-zero weights)."""
        return self.settings.adaptive and not self.adapter.modules

    @property
    def verdict(self) -> str:
        """``merged``, or ``base_model`` when no combination of the adapters beat the base model."""
        return "base_model" if self.is_base_model else "merged"

    def record(self) -> dict:
        """JSON-ready summary for ``merge_result.json`` and ``--json`` output."""
        data = {
            "settings": self.settings.to_dict(),
            "adapters": list(next(iter(self.coefficients.values())).keys()) if self.coefficients else [],
            "coefficients": self.coefficients,
            "verdict": self.verdict,
        }
        if self.fresh_lora is not None:
            data["fresh_lora"] = self.fresh_lora
        if self.refinement is not None:
            data["refinement"] = self.refinement
        if self.compression is not None:
            data["compression"] = self.compression
        if self.fit is not None:
            loop = self.fit.loop
            data.update(best_step=loop.best_step, best_validation_loss=loop.best_val_loss,
                        initial_validation_loss=loop.initial_val_loss, history=loop.history)
        return data


def joint_fresh_lora(model, adapters: list[LoraAdapter], settings: MergeSettings,
                     target_id: str | None = None) -> LoraAdapter | None:
    """pi-Tuning's fresh LoRA per ``settings.fresh_lora``, or None when none joins the pool: ``none``, or
    ``auto`` with the target-task LoRA (``target_id``) among ``adapters`` (the authors' code re-initialises
    a slot as a fresh LoRA only when the target-task LoRA is not in the pool)."""
    if settings.fresh_lora == "none" or (settings.fresh_lora == "auto" and target_id is not None):
        return None
    if settings.fresh_lora == "modal":
        return modal_fresh_lora(model, adapters, settings.seed)
    from lora_recycle.adapters.paths import MODULE_TYPES
    from lora_recycle.tuning.target_lora import capped_rank

    rank = capped_rank(model, settings.fresh_rank, MODULE_TYPES)
    return fresh_lora(model, adapters[0].base_model, settings.seed, rank, settings.fresh_alpha, MODULE_TYPES)


def fresh_lora_record(fresh: LoraAdapter | None, settings: MergeSettings, target_id: str | None) -> dict:
    """What the merge record and card say about pi-Tuning's fresh LoRA: ``added``, and its shape or why none."""
    if fresh is not None:
        return {"added": True, "rule": settings.fresh_lora, "id": FRESH_LORA_ID, "rank": max(fresh.ranks.values()),
                "scale": next(iter(fresh.modules.values())).scale, "modules": len(fresh.modules)}
    reason = (f"the target-task LoRA ({target_id}) is in the pool" if settings.fresh_lora == "auto"
              else "fresh_lora none")
    return {"added": False, "rule": settings.fresh_lora, "reason": reason}


def merge_adapters(
    model, tokenizer, task: Task | None, adapters: list[LoraAdapter], settings: MergeSettings,
    device: torch.device | str = "cpu", target_id: str | None = None,
) -> MergeOutcome:
    """Merge ``adapters`` on ``model`` per ``settings``; the model is left exactly as it came in.

    Every adapter must fit the model (``require_fits``: its shapes, and an update at most 100 x ||W||_F).
    ``target_id`` names the target-task LoRA among ``adapters`` (``Pool.target_id``; None: it is not there):
    pi-Tuning (``fresh_lora: auto``) adds its fresh LoRA only without it.

    ``settings.method`` names a registered merge method (``recipe/presets.py``): one that holds a per-module
    ``merge`` merges with fixed coefficients; the others mix the adapters by coefficients, learned by
    the tuner ``settings.tuning`` (``tuning/tuners.py``) when the settings are adaptive.
    """
    torch.manual_seed(settings.seed)
    method = METHODS.lookup(settings.method)
    if method.routed:
        raise ValueError(f"{settings.method} routes per token and makes no merged adapter: "
                         "use lora_recycle.routing.recipe.route_adapters")
    require_fits(model, adapters)  # every input, however it was read: shapes and a sane ||delta|| / ||W||
    if method.merge is not None:
        return _merge_per_module(adapters, settings, method.merge)
    tuner = TUNERS.lookup(settings.tuning) if settings.adaptive else None
    if tuner is not None and tuner.tune is not None and task is not None:
        task.require_rows("train", f"merge --method {settings.method} (it learns on the task)")
    if target_id is not None and target_id not in {a.adapter_id for a in adapters}:
        raise ValueError(f"target_id {target_id!r} is not one of the adapters to merge")
    fresh_record = None
    if tuner is not None and tuner.trains_factors:
        fresh = joint_fresh_lora(model, adapters, settings, target_id)
        adapters = adapters if fresh is None else [*adapters, fresh]
        fresh_record = fresh_lora_record(fresh, settings, target_id)
    merged = MergedModel(model, adapters, settings.granularity, settings.activation, settings.init, settings.strategy,
                         settings.composition)
    try:
        fit = None
        if tuner is not None and tuner.tune is not None:
            if task is None:
                raise ValueError("adaptive merging needs a task")
            fit = tuner.function()(merged, tokenizer, task, tune_config(settings), device)
        values = fit.values if fit is not None else merged.activated().detach()
        adapter = merged.merged_adapter(values, adapter_id=f"merged-{settings.method}")
        table = merged.coefficient_table(values)
    finally:
        merged.detach()
    refinement = None
    if settings.refine_steps and task is not None:
        from lora_recycle.tuning.refine import refine_merge

        refined = refine_merge(model, tokenizer, task, adapter, settings, device)
        adapter, refinement = refined.adapter, refined.record()
    adapter, report = fit_export_rank(adapter, settings.max_rank, settings.max_error, export_ceiling(settings))
    return MergeOutcome(adapter, table, settings, fit, report.record(), fresh_record, refinement)


def tune_config(settings: MergeSettings) -> TuneConfig:
    """The tuner's typed view of the settings: its loop's budget (the paper's appendix C.1 by default)."""
    loop = LoopConfig(steps=settings.steps, lr=settings.lr, batch_size=settings.batch_size,
                      micro_batch_size=settings.batch_size, eval_every=settings.eval_every, seed=settings.seed)
    return TuneConfig(loop, keep_start=settings.keep_start)


def export_ceiling(settings: MergeSettings) -> int:
    """The largest rank an export may keep: vLLM's unless the settings ask for the exact update at any rank."""
    return sys.maxsize if settings.exact_export else VLLM_MAX_RANK


def _merge_per_module(adapters: list[LoraAdapter], settings: MergeSettings, merge: ModuleMerge) -> MergeOutcome:
    """A fixed-coefficient merge, one module at a time (TIES, DARE, TSV, task arithmetic, ...)."""
    # the dense merge is factored exactly (every singular value above float32 round-off) unless --max-rank
    # caps it; fit_export_rank then applies an error budget or vLLM's rank ceiling, with its note
    rank = sys.maxsize if settings.max_error is not None else settings.max_rank
    result = merge_nonadaptive(adapters, merge, settings.coef, settings.prune, rank, seed=settings.seed,
                               adapter_id=f"merged-{settings.method}")
    adapter, report = fit_export_rank(result.adapter, settings.max_rank, settings.max_error, export_ceiling(settings))
    compression = report.record()
    # a dense merge cut by --max-rank: that SVD is the only approximation (a factored merge is exact up to
    # fit_export_rank, whose own report stands)
    if not merge.factored and report.max_error is None and settings.max_rank is not None:
        summary = result.error_summary()
        compression.update(summary, max_rank=rank, compressed=summary["max_relative_error"] > 1e-6)
        for path, error in result.errors.items():
            if path in compression["modules"]:
                compression["modules"][path]["error"] = error
    weight = 1.0 / len(adapters) if settings.coef is None else settings.coef
    coefficients = {"model": {a.adapter_id: weight for a in adapters}}
    return MergeOutcome(adapter, coefficients, settings, None, compression)
