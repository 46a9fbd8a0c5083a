"""Study commands: ``experiment run``, ``report`` and ``audit``."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from lora_recycle.cli.core import OverwriteOpt
from lora_recycle.cli.executor import ExecutorOpt, RayAddressOpt, executor_for
from lora_recycle.cli.output import QuietOpt, emit_json, info
from lora_recycle.errors import UserError

experiment_app = typer.Typer(help="Run a study (methods x tasks x k x seeds) resumably, locally or on Ray.",
                             no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]

TaskOpt = Annotated[list[str] | None, typer.Option(
    "--task", help="Only this target task's runs (repeat for several): a slice of the same grid.")]
SeedOpt = Annotated[list[int] | None, typer.Option("--seed", help="Only this seed's runs (repeat for several).")]
MethodOpt = Annotated[list[str] | None, typer.Option(
    "--method", help="Only this method's runs, by its name in CONFIG (repeat for several); the baselines stay in.")]


@experiment_app.command("run")
def run(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    results: Annotated[Path, typer.Option("--results", help="Results SQLite file (created or resumed).")],
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    only_task: TaskOpt = None,
    only_seed: SeedOpt = None,
    only_method: MethodOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run every run of CONFIG not yet recorded in --results; safe to kill and restart at any moment.

    ``--task`` / ``--seed`` / ``--method`` run a slice: the same runs (and run hashes) as the whole grid's, so a
    slice measures the cost and its results count when the whole grid runs later.
    """
    resolved = _sliced(config, only_task, only_seed, only_method)  # its mistakes before torch or Ray start
    from lora_recycle.experiments.runner import run_experiment

    with executor_for(executor, ray_address) as chosen:
        summary = run_experiment(resolved, results, chosen, log=info)
    if as_json:
        emit_json({k: v for k, v in summary.to_dict().items() if k != "run_hashes"})
    else:
        info(f"{summary.finished} run(s) recorded, {summary.already_done} already there, {summary.failed} failed; "
             f"results in {summary.results}")
    if summary.failed:
        raise typer.Exit(1)


@experiment_app.command("status")
def status(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    results: Annotated[Path, typer.Option("--results", help="Results SQLite file (need not exist yet).")],
    only_task: TaskOpt = None,
    only_seed: SeedOpt = None,
    only_method: MethodOpt = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Runs side by side for the wall-time estimate (default: cores / threads).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """What of CONFIG's grid --results holds, and what the rest costs at its recorded runs' median times."""
    import os

    from lora_recycle.experiments.status import grid_status, status_lines

    whole = _sliced(config, None, None, None, build=False)  # resolved once; the slice is cut from it
    _check_slice(whole.config, config, only_seed, only_method)
    resolved = _cut(whole, config, only_task, only_seed, only_method)
    workers = workers or max(1, (os.cpu_count() or 1) // (resolved.config.threads or 1))
    summary = grid_status(resolved, results, whole if resolved is not whole else None)
    if as_json:
        emit_json({**summary.to_dict(), "workers": workers, "wall_minutes": summary.wall_minutes(workers)})
    else:
        print("\n".join(status_lines(summary, workers)))


@experiment_app.command("prune")
def prune(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    results: Annotated[Path, typer.Option("--results", help="Results SQLite file to prune.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove the recorded runs CONFIG's grid no longer holds (a changed task, pool or setting made them stale).

    Always the whole grid, never a ``--task`` / ``--seed`` slice, so no run of the grid is ever removed.
    """
    from collections import Counter

    from lora_recycle.experiments.results import ResultsStore
    from lora_recycle.experiments.status import outside_grid

    resolved = _sliced(config, None, None, None, build=False)
    with ResultsStore(results, create=False) as store:
        stale = outside_grid(resolved, store)
        removed = 0 if dry_run or not stale else store.delete(stale)
    counts = dict(sorted(Counter(stale.values()).items()))
    if as_json:
        emit_json({"stale": len(stale), "removed": removed, "runs": counts})
        return
    for label, count in counts.items():
        print(f"{label}" + (f" (x{count})" if count > 1 else ""))
    info(f"{len(stale)} recorded run(s) outside the grid of {config}; "
         + ("none removed (--dry-run)" if dry_run else f"removed {removed} from {results}"))


def _sliced(config: Path, only_task: list[str] | None, only_seed: list[int] | None,
            only_method: list[str] | None = None, build: bool = True):
    """CONFIG resolved, cut to ``--task`` / ``--seed`` / ``--method`` (the same runs and hashes as the whole grid's);
    ``build=False`` refuses a mini-hub that is not built instead of building it."""
    from lora_recycle.experiments.config import load_config, resolve_experiment

    loaded = load_config(config)
    _check_slice(loaded, config, only_seed, only_method)  # before resolving: a typo must not start a hub build
    return _cut(resolve_experiment(loaded, str(config), build), config, only_task, only_seed, only_method)


def _check_slice(loaded, config: Path, only_seed: list[int] | None, only_method: list[str] | None) -> None:
    """Refuse a ``--seed`` or ``--method`` that CONFIG does not run, naming what it does."""
    if only_method:
        names = list(dict.fromkeys(spec.label for spec in loaded.methods))
        unknown = [m for m in only_method if m not in names]
        if unknown:
            raise UserError(f"--method {unknown[0]}: not a method of {config} ({', '.join(names)})")
    unknown_seeds = sorted(set(only_seed or []) - set(loaded.seeds))
    if unknown_seeds:
        raise UserError(f"--seed {unknown_seeds[0]}: {config} runs seeds {', '.join(map(str, loaded.seeds))}")


def _cut(resolved, config: Path, only_task: list[str] | None, only_seed: list[int] | None,
         only_method: list[str] | None):
    """The slice of a resolved grid (its in-house pool stays the whole grid's); seeds and methods are checked."""
    if only_seed:
        resolved = dataclasses.replace(resolved, config=resolved.config.model_copy(update={"seeds": list(only_seed)}))
    if only_task:
        unknown = [t for t in only_task if t not in resolved.target_tasks]
        if unknown:
            raise UserError(f"--task {unknown[0]}: not a target task of {config} "
                            f"({', '.join(resolved.target_tasks)})")
        resolved = dataclasses.replace(resolved, target_tasks=list(only_task))
    if only_method:
        resolved = dataclasses.replace(resolved, only_methods=tuple(only_method))
    return resolved


def report(
    results: Annotated[Path, typer.Argument(help="Results SQLite file of `experiment run`.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for report.md, tables.json and the PNG figures "
                                      "(the results file's own folder: only those files are replaced).")],
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write the paper's Table 2 and Figures 2-5 (Markdown + PNG) from a results file."""
    from lora_recycle.experiments.report import write_report
    from lora_recycle.serialization import json_safe

    written = write_report(results, out, overwrite)
    if as_json:
        emit_json(json_safe(written["tables"]) | {"report": written["report"], "figures": written["figures"],
                                               "skipped": written["skipped"]})
    else:
        for name, why in written["skipped"].items():
            info(f"skipped {name}: {why}")
        info(f"wrote {written['report']}")


def audit(
    model: Annotated[Path, typer.Option("--model", help="Local transformers model directory of the base model.")],
    db: Annotated[Path, typer.Option("--db", help="Pool catalog (from `pool scan`).")],
    task: Annotated[Path, typer.Option("--task", help="Your task directory.")],
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Number of seeds (0..N-1).")] = 3,
    k: Annotated[int, typer.Option("--k", min=1, help="Adapters selected from the pool.")] = 5,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="Coefficient-tuning steps.")] = None,
    target_lora_steps: Annotated[int, typer.Option("--target-lora-steps", min=1)] = 400,
    test_limit: Annotated[int | None, typer.Option("--test-limit", min=1, help="Score the first N tests.")] = None,
    results: Annotated[
        Path | None, typer.Option("--results", help="Results file to keep (and resume); default: a temp folder.")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, mps or auto.")] = "cpu",
    dtype: Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")] = "float32",
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch CPU threads.")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Does recycling beat a LoRA of your own on TASK, and is it transfer or regularisation? (bootstrap CIs)"""
    from lora_recycle.errors import UserError
    from lora_recycle.experiments.audit import audit_config, render_audit, run_audit

    if dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"--dtype {dtype!r}: choose one of float32, bfloat16, float16")
    config = audit_config(model, db, task, seeds, k, steps, target_lora_steps, test_limit, device, dtype, threads)
    path = results or Path(tempfile.mkdtemp(prefix="lora-recycle-audit-")) / "audit.db"
    result = run_audit(config, path, log=info)
    if as_json:
        emit_json(result)
    else:
        print("\n".join(render_audit(result)))


def register(app: typer.Typer) -> None:
    """Add ``experiment``, ``report`` and ``audit`` to the application."""
    app.add_typer(experiment_app, name="experiment")
    app.command("report")(report)
    app.command("audit")(audit)
