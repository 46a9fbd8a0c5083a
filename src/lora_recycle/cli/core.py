"""The core commands: ``evaluate``, ``train-lora``, ``merge`` and ``demo``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from lora_recycle.cli.checks import positive
from lora_recycle.cli.executor import ExecutorOpt, RayAddressOpt, executor_for, selection_workers
from lora_recycle.cli.output import QuietOpt, emit_json, info
from lora_recycle.cli.setting_options import given_settings, with_setting_options
from lora_recycle.recipe import choices

ModelOpt = Annotated[Path, typer.Option("--model", help="Local transformers model directory of the base model.")]
TaskOpt = Annotated[Path, typer.Option("--task", help="Task directory (task.yaml, train.jsonl, test.jsonl).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, mps or auto.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
PrecisionOpt = Annotated[str, typer.Option(
    "--precision", help="fp32, bf16 (autocast; fp32 master weights and factors) or auto: bf16 where the device "
    "computes it natively and a model-shaped matmul measures faster, else fp32.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out directory.")]


def evaluate(
    model: ModelOpt,
    task: TaskOpt,
    adapter: Annotated[Path | None, typer.Option(
        "--adapter", help="PEFT LoRA adapter directory to apply, or an Arrow library written by merge --method arrow.")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="test, train, val or labelled (train + val).")] = "test",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Score only the first N examples.")] = None,
    metric: Annotated[str | None, typer.Option(
        "--metric", help="loglik (multiple choice: best choice by log-likelihood) or exact_match (greedy "
        "generation, the paper's); default: the task's metric.")] = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    precision: PrecisionOpt = "fp32",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score the base model, or the base model with one adapter, on a task split."""
    from lora_recycle.routing.arrow import is_arrow_dir, read_arrow_spec, routed_precision, scoring_model
    from lora_recycle.tasks import load_task
    from lora_recycle.tasks.metrics import metric_label, resolve_metric

    # the task, the metric and the adapter are checked before torch is even imported (mistakes answer fast)
    loaded_task = load_task(task)
    loaded_task.require_rows(split, "evaluate")  # the split exists and has examples
    resolve_metric(loaded_task, metric)
    routed = adapter is not None and is_arrow_dir(adapter)
    if routed:
        read_arrow_spec(adapter)
    lora = adapter if routed or adapter is None else _checked(adapter, model)
    from lora_recycle.models.loading import load_base_model, resolve_device
    from lora_recycle.models.precision import computing_in, resolve_precision
    from lora_recycle.tasks.scoring import evaluate_task

    dev = resolve_device(device)
    precision = resolve_precision(precision, dev)
    base, tokenizer = load_base_model(model, dev, dtype)
    with scoring_model(base, lora) as scored, computing_in(base, routed_precision(precision, routed), dev):
        result = evaluate_task(scored, tokenizer, loaded_task, split, dev, limit, metric=metric)
    data = {**result.to_dict(), "adapter": str(adapter) if adapter else None}
    if as_json:
        emit_json(data)
    else:
        norm = f", length-normalised {result.accuracy_norm:.4f}" if result.accuracy_norm is not None else ""
        print(f"{result.task} [{split}] accuracy {result.accuracy:.4f}{norm} (n={result.n}; "
              f"{metric_label(result.metric)})")


def train_lora(
    model: ModelOpt,
    task: TaskOpt,
    out: Annotated[Path, typer.Option("--out", help="Directory to write the PEFT adapter to.")],
    rank: Annotated[int, typer.Option("--rank", min=1)] = 64,
    alpha: Annotated[float, typer.Option("--alpha", callback=positive)] = 16.0,
    steps: Annotated[int, typer.Option("--steps", min=1)] = 400,
    lr: Annotated[float, typer.Option("--lr", callback=positive)] = 3e-4,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    precision: PrecisionOpt = "fp32",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a target-task LoRA (PEFT, q/k/v/o/gate/up/down), keeping the best validation checkpoint."""
    from lora_recycle.outputs import atomic_dir, check_out_dir
    from lora_recycle.tasks import load_task

    check_out_dir(out, overwrite)  # these mistakes are reported before torch is even imported
    loaded_task = load_task(task)
    loaded_task.require_rows("train", "train-lora")  # before the model loads
    from lora_recycle.models.loading import load_base_model, resolve_device
    from lora_recycle.models.precision import resolve_precision
    from lora_recycle.tuning.target_lora import TargetLoraConfig, train_target_lora

    dev = resolve_device(device)
    base, tokenizer = load_base_model(model, dev, dtype)
    config = TargetLoraConfig(rank=rank, alpha=alpha, steps=steps, lr=lr, seed=seed,
                              precision=resolve_precision(precision, dev))
    with atomic_dir(out, overwrite) as partial:
        _, loop, used_rank = train_target_lora(base, tokenizer, loaded_task, config, partial, dev)
    path = out
    data = {"out": str(path), "rank": used_rank, "best_step": loop.best_step,
            "best_validation_loss": loop.best_val_loss, "initial_validation_loss": loop.initial_val_loss}
    if as_json:
        emit_json(data)
    else:
        info(f"saved target-task LoRA (rank {used_rank}) to {path}; best validation loss "
             f"{loop.best_val_loss:.4f} at step {loop.best_step} (from {loop.initial_val_loss:.4f})")


@with_setting_options
def merge(
    model: ModelOpt,
    out: Annotated[Path, typer.Option("--out", help="Directory to write the merged PEFT adapter to.")],
    task: Annotated[Path | None, typer.Option("--task", help="Task directory (needed by adaptive methods).")] = None,
    adapters: Annotated[list[Path] | None, typer.Option(
        "--adapters", help="Adapter directories to merge: --adapters A B C, or the flag repeated.")] = None,
    target_lora: Annotated[
        Path | None,
        typer.Option("--target-lora", "--include-target-lora",
                     help="A target-task LoRA: merged first, with the top k-1 selected adapters (k in total)."),
    ] = None,
    random_init: Annotated[
        bool, typer.Option("--random-init", help="Control: replace recycled adapters' A/B by same-std noise.")
    ] = False,
    noise_std: Annotated[str, typer.Option(
        "--noise-std", help="Random-init noise std: pooled (per module over the recycled adapters) or per_adapter."
    )] = "pooled",
    metric: Annotated[str | None, typer.Option("--metric", help="--evaluate metric: loglik or exact_match.")] = None,
    merge_into_base: Annotated[
        bool, typer.Option("--merge-into-base", help="Save a full transformers model instead of an adapter.")
    ] = False,
    db: Annotated[Path | None, typer.Option("--db", help="Pool catalog to take adapters from.")] = None,
    ids: Annotated[list[str] | None, typer.Option(
        "--ids", help="Catalog ids to merge, space-separated or repeated (else selected).")] = None,
    method: Annotated[str, typer.Option("--method", help=f"{choices.methods_help()}.")] = "ours",
    save_dtype: Annotated[str | None, typer.Option(
        "--save-dtype", help="float32, bfloat16 or float16 (default: the base model's dtype in its config).")] = None,
    base_model_id: Annotated[str | None, typer.Option(
        "--base-model-id", help="Hub id of the base model for the adapter config and card (default: found).")] = None,
    evaluate_split: Annotated[
        str | None, typer.Option("--evaluate", help="Also score the merge on this split.")
    ] = None,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    precision: PrecisionOpt = "fp32",
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    **settings,
) -> None:
    """Merge adapters (adaptively, or with fixed coefficients) and export one standard PEFT adapter.

    Arrow and arrow_gks route per token instead, and write a library PEFT loads.
    """
    from typing import get_args

    from lora_recycle.merging.options import NoiseStd
    from lora_recycle.recipe.pool import PoolRequest
    from lora_recycle.recipe.run import ExportOptions

    merge_settings = choices.settings_from_flags(method, given_settings(settings))
    choices.check_choice("--noise-std", noise_std, get_args(NoiseStd))
    request = PoolRequest(adapter_dirs=list(adapters or []), db=db, ids=ids, target_dir=target_lora,
                          random_init=random_init, noise_std=noise_std, precision=precision)
    export = ExportOptions(out, merge_into_base, evaluate_split, base_model_id, save_dtype,
                           overwrite=overwrite, metric=metric)
    run, report = _recipe(method)
    with executor_for(executor, ray_address) as chosen:
        request.workers = selection_workers(chosen, model, device, dtype)
        summary = run(model, task, request, merge_settings, export, device, dtype, log=info)
    if as_json:
        emit_json(summary)
    else:
        report(summary, evaluate_split)


def _recipe(method: str) -> tuple[Callable[..., dict], Callable[[dict, str | None], None]]:
    """The recipe a method runs and how its summary is told: routing for arrow and arrow_gks, else merging."""
    from lora_recycle.recipe.presets import is_routed

    if is_routed(method):  # routing is not a merge: its own recipe and report, on the same request and settings
        from lora_recycle.cli.routing import report_routed
        from lora_recycle.routing.recipe import run_route

        return run_route, report_routed
    from lora_recycle.recipe.run import run_merge

    return run_merge, report_merged


def report_merged(summary: dict, evaluate_split: str | None) -> None:
    """The merge's summary for people, on stderr."""
    from lora_recycle.cli.export_report import export_report

    out, method = summary["out"], summary["method"]
    if summary["verdict"] == "base_model":
        return
    loss = summary.get("best_validation_loss")
    detail = f"; validation loss {summary['initial_validation_loss']:.4f} -> {loss:.4f}" if loss is not None else ""
    info(f"merged {len(summary['selected'])} adapters with {method}{detail}; wrote {out}")
    for line in export_report(summary):
        info(line)
    if "evaluation" in summary:
        evaluation = summary["evaluation"]
        info(f"{evaluate_split} accuracy {evaluation['accuracy']:.4f} ({evaluation['metric']})")


def select(
    model: ModelOpt,
    db: Annotated[Path, typer.Option("--db", help="Pool catalog.")],
    task: TaskOpt,
    strategy: Annotated[str, typer.Option("--strategy", help=f"{choices.selection_help()}.")] = "evaluation",
    k: Annotated[int, typer.Option("--k", min=1)] = 30,
    target_lora: Annotated[
        Path | None, typer.Option("--target-lora", help="Target-task LoRA (similarity strategies).")
    ] = None,
    include_target: Annotated[
        bool, typer.Option("--include-target", help="The target LoRA first, then the top k-1 (k in total).")
    ] = False,
    metric: Annotated[str | None, typer.Option(
        "--metric", help="Evaluation scores by loglik (default) or exact_match (the paper's).")] = None,
    split: Annotated[str, typer.Option(
        "--split", help="Evaluation scores on train (default) or labelled (train + val, the paper's).")] = "train",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    precision: PrecisionOpt = "fp32",
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Select k adapters from a pool catalog for a task (scores are cached in the catalog, per precision)."""
    from lora_recycle.errors import UserError
    from lora_recycle.escaping import printable
    from lora_recycle.tasks import load_task

    # the flags, the task, the target LoRA and the catalog are checked before torch is imported
    choices.check_choice("--strategy", strategy, choices.catalog_strategies())
    if include_target and target_lora is None:
        raise UserError("--include-target needs --target-lora DIR")
    loaded_task = load_task(task)
    target = _checked(target_lora, model, f"target:{target_lora.name}") if target_lora else None
    _warn_if_k_exceeds_pool(db, k)
    needs_model = choices.STRATEGIES[strategy].needs == "model"
    from lora_recycle.models.loading import load_base_model, resolve_device
    from lora_recycle.models.precision import resolve_precision
    from lora_recycle.recipe.with_target import recycled_count
    from lora_recycle.selection.from_catalog import select_from_catalog

    count = recycled_count(k, include_target)
    with executor_for(executor, ray_address) as chosen:
        workers = selection_workers(chosen, model, device, dtype)
        dev = resolve_device(device) if workers is None else device  # Ray workers resolve it themselves
        base, tokenizer = load_base_model(model, dev, dtype) if needs_model and workers is None else (None, None)
        selected, scores = select_from_catalog(db, strategy, count, seed, base, tokenizer, loaded_task, dev, target,
                                               metric=metric, split=split, workers=workers, log=info,
                                               precision=resolve_precision(precision, resolve_device(device)),
                                               ) if count else ([], {})
    if include_target:
        selected = [target.adapter_id, *selected]
    if as_json:
        emit_json({"selected": selected, "scores": scores})
    else:
        for adapter_id in selected:
            score = scores.get(adapter_id)
            print(printable(adapter_id) if score is None else f"{printable(adapter_id)}\t{score:.4f}")


def _checked(adapter_dir: Path, model_dir: Path, adapter_id: str | None = None):
    """An adapter folder given on the command line, read through the pool's validation against ``--model``."""
    from lora_recycle.pool import load_base_spec, read_checked_adapter

    return read_checked_adapter(adapter_dir, load_base_spec(model_dir, flag="--model"), adapter_id)


def _warn_if_k_exceeds_pool(db: Path, k: int) -> None:
    """Say so when the catalog holds fewer accepted adapters than asked for (all of them are then used)."""
    from lora_recycle.pool.catalog import accepted_ids

    available = len(accepted_ids(db))
    if 0 < available < k:
        info(f"warning: --k {k} but {db} has only {available} accepted adapters; using all {available}")


def register(app: typer.Typer) -> None:
    """Add the core commands to the application."""
    app.command("evaluate")(evaluate)
    app.command("train-lora")(train_lora)
    app.command("merge")(merge)
    app.command("select")(select)
