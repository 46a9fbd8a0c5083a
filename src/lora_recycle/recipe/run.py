"""The library recipe end to end: assemble the pool, merge, optionally evaluate, export. ``merge`` calls it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lora_recycle.errors import UserError
from lora_recycle.outputs import atomic_dir, check_out_dir
from lora_recycle.recipe.pool import (
    Pool,
    PoolRequest,
    assemble_pool,
    check_folders,
    explicit_adapters,
    k_shortfall,
    read_target,
)
from lora_recycle.recipe.settings import MergeSettings

if TYPE_CHECKING:
    import torch

    from lora_recycle.adapters.base_model_id import BaseModelId
    from lora_recycle.adapters.lora import LoraAdapter
    from lora_recycle.tasks.format import Task


SAVE_DTYPES = ("float32", "bfloat16", "float16")  # --save-dtype: how an exported adapter is stored


@dataclass
class ExportOptions:
    """Where and how to write the merge: a PEFT adapter (default) or a full model folder."""

    out: Path
    merge_into_base: bool = False
    evaluate_split: str | None = None
    base_model_id: str | None = None  # the base's Hub id; None: found (adapters/base_model_id.py)
    save_dtype: str | None = None  # storage dtype of the adapter; None: the base model's own
    overwrite: bool = False  # replace a non-empty ``out`` (else refused before any work)
    metric: str | None = None  # of the evaluation: loglik or exact_match (None: the task's)


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


@dataclass
class Inputs:
    """What a recipe runs on: the loaded model and task, the device, and the explicit adapters (already read)."""

    model: Any
    tokenizer: Any
    task: Task | None
    device: torch.device
    explicit: list[LoraAdapter]


def runs_base_model(request: PoolRequest, settings: MergeSettings, export: ExportOptions) -> bool:
    """Whether a merge runs the base model: to learn coefficients, score a model-based selection, evaluate or
    write a full model. A fixed-coefficient merge (TIES, average, ...) or an unscored Arrow library only checks
    adapters against its weights, so it gets the model's skeleton, which the recipes then pass where a model goes:
    when this is False nothing reads more of it than ``require_fits`` does."""
    from lora_recycle.recipe.presets import METHODS
    from lora_recycle.selection.strategies import STRATEGIES

    method = METHODS.lookup(settings.method)
    if settings.adaptive or export.merge_into_base or export.evaluate_split:
        return True
    if method.merge is None and not method.routed:  # a coefficient mix computed through the attached model
        return True
    if request.db is None or request.ids or settings.selection == "all":  # explicit, all or random
        return False
    return settings.selection not in STRATEGIES or STRATEGIES[settings.selection].needs == "model"


def open_inputs(model_dir: Path, task_dir: Path | None, request: PoolRequest, settings: MergeSettings,
                evaluate_split: str | None, device: str = "cpu", dtype: str = "float32",
                log: Callable[[str], None] | None = None, run_model: bool = True) -> Inputs:
    """Check the task, the split and the adapters before any model loads, then load the model (merge and route).

    Without ``run_model`` the inputs hold the model's skeleton where the directory allows one (no tokenizer):
    its weights are read one at a time, as ``require_fits`` asks for them."""
    from lora_recycle.tasks import load_task

    task = load_task(task_dir) if task_dir else None
    if settings.adaptive and task is not None:  # before the model loads
        task.require_rows("train", f"merge --method {settings.method}")
    if evaluate_split:
        if task is None:
            raise UserError(f"--evaluate {evaluate_split} scores the merge on a task: give --task DIR")
        task.require_rows(evaluate_split, f"merge --evaluate {evaluate_split}")
    if request.base is None and (request.adapter_dirs or request.target_dir or settings.general_adapters):
        from lora_recycle.pool import load_base_spec

        request.base = load_base_spec(model_dir, flag="--model")  # folders are checked as a scan checks them
    if request.base is not None:
        check_folders(request)  # every folder, before any is read
    explicit = explicit_adapters(request)  # unknown ids fail before the model loads
    read_target(request)
    shortfall = k_shortfall(request, settings)
    if shortfall and log is not None:
        log(shortfall)
    from lora_recycle.models.loading import load_base_model, resolve_device  # torch: the inputs are checked
    from lora_recycle.models.precision import resolve_precision

    dev = resolve_device(device)
    request.precision = resolve_precision(request.precision, dev)  # ``auto`` measures on the device
    if not run_model:
        from lora_recycle.models.checkpoint import open_skeleton

        if (skeleton := open_skeleton(model_dir)) is not None:
            return Inputs(skeleton, None, task, dev, explicit)
    model, tokenizer = load_base_model(model_dir, dev, dtype)
    return Inputs(model, tokenizer, task, dev, explicit)


def run_merge(model_dir: Path, task_dir: Path | None, request: PoolRequest, settings: MergeSettings,
              export: ExportOptions, device: str = "cpu", dtype: str = "float32",
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Merge per ``settings`` over the requested pool, write ``export.out`` and return the JSON summary.

    ``log`` receives warnings for people (e.g. a k larger than the catalog).
    """
    check_request(request, settings, task_dir)
    base_id, store_name = export_target(model_dir, export)
    inputs = open_inputs(model_dir, task_dir, request, settings, export.evaluate_split, device, dtype, log,
                         run_model=runs_base_model(request, settings, export))
    from lora_recycle.models.checkpoint import BaseSkeleton  # torch: every input is checked by now
    from lora_recycle.models.loading import DTYPES
    from lora_recycle.models.precision import computing_in
    from lora_recycle.recipe.merge import merge_adapters

    store_dtype = DTYPES[store_name]

    model, tokenizer, task, dev = inputs.model, inputs.tokenizer, inputs.task, inputs.device
    skeleton = isinstance(model, BaseSkeleton)  # nothing runs the model: it is only checked against
    with nullcontext() if skeleton else computing_in(model, request.precision, dev):  # scoring, tuning
        pool = assemble_pool(request, settings, model, tokenizer, task, dev, explicit=inputs.explicit, log=log)
        outcome = merge_adapters(model, tokenizer, task, pool.adapters, settings, dev, target_id=pool.target_id)
    if outcome.is_base_model and log is not None:
        log(f"no combination of the {len(pool.ids)} adapters beat the base model ({settings.method} kept "
            f"all-zero weights); the result is the base model itself, so nothing was written to {export.out}")
    record = outcome.record()
    if export.evaluate_split and task is not None:
        from lora_recycle.adapters.export import as_stored
        from lora_recycle.models.fold import folded
        from lora_recycle.tasks.scoring import evaluate_task

        scored = outcome.adapter if export.merge_into_base else as_stored(outcome.adapter, store_dtype)
        with folded(model, None if outcome.is_base_model else scored):  # the weights as written
            record["evaluation"] = evaluate_task(model, tokenizer, task, export.evaluate_split, dev,
                                                 metric=export.metric).to_dict()
    if not outcome.is_base_model:  # e.g. LoraHub kept all-zero weights: any file written would mislead
        write_merge(model, tokenizer, outcome.adapter, export, base_id, settings.method, sources_of(pool), record,
                    store_dtype)
    summary = {"out": None if outcome.is_base_model else str(export.out), "method": settings.method,
               "verdict": outcome.verdict, "selected": pool.ids, "coefficients": outcome.coefficients,
               "scores": pool.scores, "base_model": base_id.name, "base_model_source": base_id.source,
               "save_dtype": str(store_dtype).removeprefix("torch."), "merged_into_base": export.merge_into_base}
    summary.update({key: record[key] for key in ("best_step", "best_validation_loss", "initial_validation_loss",
                                                 "evaluation", "compression", "fresh_lora") if key in record})
    if log is not None and not outcome.is_base_model:
        for line in export_warnings(summary):
            log(line)
    return summary


def export_target(model_dir: Path, export: ExportOptions) -> tuple[BaseModelId, str]:
    """The base model's Hub id and the name of the export's storage dtype, checked before any model loads."""
    from lora_recycle.adapters.base_model_id import resolve_base_model_id
    from lora_recycle.models.config_file import config_dtype

    if export.merge_into_base and export.save_dtype is not None:
        raise UserError("--save-dtype sets an adapter's storage; with --merge-into-base the model is saved in --dtype")
    if export.save_dtype is not None and export.save_dtype not in SAVE_DTYPES:
        raise UserError(f"--save-dtype {export.save_dtype!r}: choose one of {', '.join(SAVE_DTYPES)}")
    check_out_dir(export.out, export.overwrite)
    # the base model's own dtype by default, so a merged adapter is not larger than it needs to be
    return (resolve_base_model_id(model_dir, export.base_model_id),
            export.save_dtype or config_dtype(model_dir) or "float32")


def export_warnings(summary: dict[str, Any]) -> list[str]:
    """Lines a user must see even with ``--json``: a local path instead of a Hub id, a rank above vLLM's."""
    from lora_recycle.adapters.base_model_id import BaseModelId

    base = BaseModelId(summary["base_model"], summary["base_model_source"])
    lines = [] if summary.get("merged_into_base") or base.warning() is None else [base.warning()]
    note = (summary.get("compression") or {}).get("note")
    return [*lines, f"warning: {note}"] if note else lines


def write_merge(model, tokenizer, adapter, export: ExportOptions, base_id: BaseModelId, method: str,
                sources: list[dict], record: dict, dtype: torch.dtype) -> Path:
    """Write the merged adapter (or, with ``merge_into_base``, the full model) to ``export.out``, atomically:
    into a hidden sibling renamed into place when complete (a killed run leaves no adapter-looking ``out``)."""
    if not adapter.modules:
        raise UserError(f"the {method} merge is empty (every coefficient or merged update is zero), so there is "
                        f"nothing to write to {export.out}; change --coef/--prune, --init or --steps")
    with atomic_dir(export.out, export.overwrite) as partial:
        if export.merge_into_base:
            from lora_recycle.models.export import save_merged_model

            save_merged_model(model, tokenizer, adapter, partial, method, sources, record)
        else:
            from lora_recycle.adapters.export import export_merge

            export_merge(adapter, partial, base_id, method, sources, record, dtype)
    return export.out
