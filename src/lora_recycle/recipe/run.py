"""The library recipe end to end: assemble the pool, merge, optionally evaluate, export. ``merge`` calls it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_recycle.errors import UserError
from lora_recycle.recipe.pool import Pool, PoolRequest, assemble_pool, explicit_adapters, k_shortfall, read_target
from lora_recycle.recipe.settings import MergeSettings


@dataclass
class ExportOptions:
    """Where and how to write the merge: a PEFT adapter (default) or a full model folder."""

    out: Path
    merge_into_base: bool = False
    evaluate_split: str | None = None


def sources_of(pool: Pool) -> list[dict]:
    """One ``{id, license, source}`` per merged adapter (model card and ``merge_result.json``)."""
    return [{"id": a.adapter_id, "license": a.metadata.get("license"), "source": a.metadata.get("source")}
            for a in pool.adapters]


def check_request(request: PoolRequest, settings: MergeSettings, task_dir: Path | None) -> None:
    """User mistakes that need no model: nothing to merge, or an adaptive method without a task."""
    if not (request.adapters or request.adapter_dirs) and request.db is None and request.target_dir is None \
            and request.target is None:
        raise UserError("no adapters given: use --adapters DIR [DIR ...], --db POOL.db and/or --target-lora DIR")
    if settings.adaptive and task_dir is None:
        raise UserError(f"method {settings.method} learns coefficients on a task: give --task DIR")


def run_merge(model_dir: Path, task_dir: Path | None, request: PoolRequest, settings: MergeSettings,
              export: ExportOptions, device: str = "cpu", dtype: str = "float32",
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Merge per ``settings`` over the requested pool, write ``export.out`` and return the JSON summary.

    ``log`` receives warnings for people (e.g. a k larger than the catalog).
    """
    from lora_recycle.models.loading import load_base_model, resolve_device
    from lora_recycle.recipe.merge import merge_adapters
    from lora_recycle.tasks import load_task

    check_request(request, settings, task_dir)
    task = load_task(task_dir) if task_dir else None
    explicit = explicit_adapters(request)  # unknown ids fail before the model loads
    read_target(request)
    shortfall = k_shortfall(request, settings)
    if shortfall and log is not None:
        log(shortfall)
    dev = resolve_device(device)
    model, tokenizer = load_base_model(model_dir, dev, dtype)
    pool = assemble_pool(request, settings, model, tokenizer, task, dev, explicit=explicit)
    outcome = merge_adapters(model, tokenizer, task, pool.adapters, settings, dev)
    record = outcome.record()
    if export.evaluate_split and task is not None:
        from lora_recycle.models.fold import folded
        from lora_recycle.tasks.scoring import evaluate_task

        with folded(model, outcome.adapter):
            record["evaluation"] = evaluate_task(model, tokenizer, task, export.evaluate_split, dev).to_dict()
    write_merge(model, tokenizer, outcome.adapter, export, str(model_dir), settings.method, sources_of(pool), record)
    summary = {"out": str(export.out), "method": settings.method, "selected": pool.ids,
               "coefficients": outcome.coefficients, "scores": pool.scores}
    summary.update({key: record[key] for key in ("best_step", "best_validation_loss", "initial_validation_loss",
                                                 "evaluation", "compression") if key in record})
    return summary


def write_merge(model, tokenizer, adapter, export: ExportOptions, model_ref: str, method: str, sources: list[dict],
                record: dict) -> Path:
    """Write the merged adapter (or, with ``merge_into_base``, the full model) to ``export.out``."""
    if export.merge_into_base:
        from lora_recycle.models.export import save_merged_model

        return save_merged_model(model, tokenizer, adapter, export.out, method, sources, record)
    from lora_recycle.adapters.export import export_merge
    from lora_recycle.models.loading import base_model_name

    return export_merge(adapter, export.out, base_model_name(model) or model_ref, method, sources, record)
