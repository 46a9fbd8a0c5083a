"""Run an experiment: expand, skip what is recorded, execute the rest, record each run as it finishes.

Shared work is cached on disk next to the results file (``<results stem>-artifacts/``): one
target-task LoRA per task and seed (a PEFT adapter folder, renamed into place only when complete)
and the in-house LoRAs' evaluation scores per task. Evaluation scores of the recycled pool are
cached by the pool catalog itself. Workers return plain dictionaries; only the driver writes the
results database.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lora_recycle.errors import UserError
from lora_recycle.experiments.config import ResolvedExperiment
from lora_recycle.experiments.executors import Executor, LocalExecutor
from lora_recycle.experiments.grid import RunSpec, expand_runs, inputs_fingerprint
from lora_recycle.experiments.results import ResultsStore, library_versions
from lora_recycle.outputs import write_text_atomically
from lora_recycle.recipe import TARGET_ADAPTER_ID
from lora_recycle.recipe.target import (
    cached_target_lora,
    clean_stale,
    kept_untrained_start,
    short_hash,
    target_lora_dir,
)
from lora_recycle.tuning.target_config import TargetLoraConfig

if TYPE_CHECKING:
    from lora_recycle.adapters.lora import LoraAdapter

IN_HOUSE_PREFIX = "in-house:"
INPUTS_KEY = "inputs"  # results meta: the inputs_fingerprint its runs were recorded on


@dataclass(frozen=True)
class WorkerEnv:
    """Everything a worker needs besides the run itself (plain, picklable values)."""

    model: str
    base_model_id: str | None
    model_ref: str
    db: str
    tasks: dict[str, str]
    in_house_tasks: tuple[str, ...]
    artifacts: str
    device: str
    dtype: str
    threads: int | None = None


def artifacts_dir(results_path: str | Path) -> Path:
    """Where shared work of a results file is cached: ``<folder>/<stem>-artifacts``."""
    results_path = Path(results_path)
    return results_path.parent / f"{results_path.stem}-artifacts"


def worker_env(resolved: ResolvedExperiment, results_path: str | Path) -> WorkerEnv:
    config = resolved.config
    return WorkerEnv(str(resolved.model), resolved.base_model_id, resolved.model_ref, str(resolved.db),
                     {name: str(path) for name, path in resolved.tasks.items()}, tuple(resolved.in_house_tasks),
                     str(artifacts_dir(results_path)), config.device, config.dtype, config.threads)


# --- worker side ------------------------------------------------------------------------------------------

_TASKS: dict[str, Any] = {}


def _load_model(env: WorkerEnv):
    from lora_recycle.models.loading import cached_base_model

    return cached_base_model(env.model, env.device, env.dtype, env.threads)


def _load_task(env: WorkerEnv, name: str):
    from lora_recycle.tasks import load_task

    path = env.tasks[name]
    if path not in _TASKS:
        _TASKS[path] = load_task(path)
    return _TASKS[path]


def ensure_target_lora(env: WorkerEnv, task_name: str, target: TargetLoraConfig, model, tokenizer,
                       device) -> tuple[Path, dict[str, Any]]:
    """The target-task LoRA of a task and seed, cached in the artifacts folder: ``(folder, training record)``."""
    task = _load_task(env, task_name)
    final = target_lora_dir(env.artifacts, task_name, task, target, env.model_ref, env.dtype)
    return cached_target_lora(model, tokenizer, task, target, final, device, base_model_id=env.base_model_id)


def _target_adapter(env: WorkerEnv, spec: RunSpec, model, tokenizer, device) -> tuple[LoraAdapter, dict[str, Any]]:
    from lora_recycle.adapters import read_peft_adapter

    path, record = ensure_target_lora(env, spec.task, spec.target_lora, model, tokenizer, device)
    return read_peft_adapter(path, adapter_id=TARGET_ADAPTER_ID), record


def in_house_pool(env: WorkerEnv, spec: RunSpec, model, tokenizer, task, device) -> tuple[list, dict[str, float]]:
    """The other target tasks' target-task LoRAs ranked by evaluation on this task, top ``exclude_top`` skipped.

    ``k`` counts the target-task LoRA, so the top ``k - 1`` others are returned (it goes first).
    """
    from lora_recycle.adapters import read_peft_adapter
    from lora_recycle.selection.evaluation import evaluation_scores
    from lora_recycle.selection.ranking import top_k

    others = [t for t in env.in_house_tasks if t != spec.task]
    dirs = {f"{IN_HOUSE_PREFIX}{t}": ensure_target_lora(env, t, spec.target_lora, model, tokenizer, device)[0]
            for t in others}
    settings = spec.merge_settings()
    ranking = {"task": task.content_hash(), "pool": sorted(p.name for p in dirs.values())}
    if settings.selection_metric is not None or settings.selection_split != "train":  # default keeps its key
        ranking.update(metric=settings.selection_metric, split=settings.selection_split)
    if spec.precision != "fp32":  # scored under the run's autocast (fp32 keeps its key)
        ranking["precision"] = spec.precision
    cache = Path(env.artifacts) / "in-house-scores" / f"{spec.task}-{short_hash(ranking)}.json"
    if cache.is_file():
        scores = json.loads(cache.read_text())
    else:
        scores = evaluation_scores(model, tokenizer, task, sorted(dirs),
                                   lambda i: read_peft_adapter(dirs[i], adapter_id=i), split=settings.selection_split,
                                   device=device, metric=settings.selection_metric)
        write_text_atomically(cache, json.dumps(scores, indent=2, sort_keys=True))
    ranked = top_k(scores, len(scores))
    chosen = ranked[spec.exclude_top : spec.exclude_top + (spec.k or 1) - 1]
    return [read_peft_adapter(dirs[i], adapter_id=i) for i in chosen], {i: scores[i] for i in chosen}


class _Clock:
    """Seconds per phase of one run (``lap`` adds the time since the last lap to a phase)."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.timings: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(self.timings.get(name, 0.0) + now - self.last, 4)
        self.last = now

    def total(self) -> dict[str, float]:
        return {**self.timings, "total": round(time.perf_counter() - self.started, 4)}


def _merge_cell(env: WorkerEnv, spec: RunSpec, model, tokenizer, task, device, clock: _Clock) -> dict[str, Any]:
    """Assemble the pool (recycled or in-house), merge, and return the adapter with what the row records."""
    from lora_recycle.models.precision import resolve_precision
    from lora_recycle.recipe.merge import merge_adapters
    from lora_recycle.recipe.pool import PoolRequest, assemble_pool
    from lora_recycle.recipe.presets import is_routed
    from lora_recycle.selection.strategies import needs_target

    settings = spec.merge_settings()
    metrics: dict[str, Any] = {}
    target = None
    if spec.with_target or (spec.pool != "in_house" and needs_target(settings.selection)):
        target, record = _target_adapter(env, spec, model, tokenizer, device)
        if spec.with_target:
            metrics["target_lora"] = record
        clock.lap("target_lora")
    if is_routed(settings.method) and spec.pool != "in_house":
        return _routed_cell(env, spec, model, tokenizer, task, device, clock, target, metrics)
    if spec.pool == "in_house":
        adapters, scores = in_house_pool(env, spec, model, tokenizer, task, device)
        request = PoolRequest(adapters, target=target, include_target=spec.with_target, random_init=spec.random_init,
                              noise_std=spec.noise_std)
    else:  # with the target LoRA: it first, then the top k - 1 selected (k in total)
        request = PoolRequest(db=env.db, target=target, include_target=spec.with_target,
                              random_init=spec.random_init, default_k=1, noise_std=spec.noise_std,
                              precision=resolve_precision(spec.precision, device))
    pool = assemble_pool(request, settings, model, tokenizer, task, device)
    if spec.pool != "in_house":
        scores = {i: pool.scores[i] for i in pool.ids if i in pool.scores}
    clock.lap("select")
    outcome = merge_adapters(model, tokenizer, task, pool.adapters, settings, device, target_id=pool.target_id)
    metrics["verdict"] = outcome.verdict
    if outcome.fit is not None:
        loop = outcome.fit.loop
        metrics.update(best_step=loop.best_step, best_validation_loss=loop.best_val_loss,
                       initial_validation_loss=loop.initial_val_loss)
    clock.lap("merge")
    return {"adapter": outcome.adapter, "selected": pool.ids, "scores": scores,
            "coefficients": outcome.coefficients, "metrics": metrics}


def _routed_cell(env: WorkerEnv, spec: RunSpec, model, tokenizer, task, device, clock: _Clock, target,
                 metrics: dict[str, Any]) -> dict[str, Any]:
    """Arrow over the catalog (target first, k in total); the cell's "adapter" is the library it wrote."""
    from lora_recycle.recipe.pool import PoolRequest
    from lora_recycle.routing.recipe import route_pool

    out = Path(env.artifacts) / "arrow" / spec.run_hash
    request = PoolRequest(db=env.db, target=target if spec.with_target else None, random_init=spec.random_init)
    outcome = route_pool(model, tokenizer, task, request, spec.merge_settings(), out, device=device)
    metrics["routing"] = outcome.pool
    clock.lap("route")
    experts = outcome.pool["experts"]
    scores = {i: outcome.scores[i] for i in experts if i in outcome.scores}
    return {"adapter": out, "selected": experts, "scores": scores, "coefficients": None, "metrics": metrics}


def execute_run(env: WorkerEnv, spec: RunSpec) -> dict[str, Any]:
    """Run one cell and return its results row (without the experiment's config hash and name)."""
    import torch

    from lora_recycle.models.precision import computing_in, resolve_precision
    from lora_recycle.recipe.presets import is_routed
    from lora_recycle.routing.arrow import routed_precision, scoring_model
    from lora_recycle.tasks.scoring import evaluate_task

    clock = _Clock()
    model, tokenizer, device = _load_model(env)
    task = _load_task(env, spec.task)
    clock.lap("load")
    torch.manual_seed(spec.seed)
    # target LoRAs take theirs from their config
    precision = routed_precision(resolve_precision(spec.precision, device),
                                 spec.settings is not None and is_routed(spec.settings.method))
    cell: dict[str, Any] = {"adapter": None, "selected": [], "scores": {}, "coefficients": None, "metrics": {}}
    if spec.kind == "target_lora":
        adapter, record = _target_adapter(env, spec, model, tokenizer, device)
        cell.update(adapter=adapter, selected=[TARGET_ADAPTER_ID], metrics={"target_lora": record})
        clock.lap("target_lora")
    elif spec.kind == "merge":
        with computing_in(model, precision, device):
            cell = _merge_cell(env, spec, model, tokenizer, task, device, clock)
    with scoring_model(model, cell["adapter"]) as scored, computing_in(model, precision, device):
        result = evaluate_task(scored, tokenizer, task, "test", device, spec.test_limit, metric=spec.metric)
    cell["metrics"]["metric"] = result.metric
    cell["metrics"]["precision"] = precision
    clock.lap("evaluate")
    return {
        "run_hash": spec.run_hash, "kind": spec.kind, "task": spec.task, "seed": spec.seed, "method": spec.method,
        "k": spec.k, "with_target": spec.with_target, "pool": spec.pool, "random_init": spec.random_init,
        "exclude_top": spec.exclude_top, "accuracy": result.accuracy, "accuracy_norm": result.accuracy_norm,
        "n_test": result.n, "correct": result.correct_marks(), "spec": spec.to_dict(), "metrics": cell["metrics"],
        "selected": cell["selected"], "scores": cell["scores"], "coefficients": cell["coefficients"],
        "timings": clock.total(), "versions": library_versions(), "worker": f"{socket.gethostname()}:{os.getpid()}",
    }


def untrained_target_warning(row: dict[str, Any]) -> str | None:
    """Why a row's target-task LoRA is suspect: it kept its untrained start (best step 0, so B = 0 and it is
    the base model), which makes every comparison against it on that task and seed meaningless."""
    record = (row.get("metrics") or {}).get("target_lora") or {}
    if not kept_untrained_start(record):
        return None
    return (f"the target-task LoRA of {row['task']} (seed {row['seed']}) kept its untrained start: no validation "
            f"loss below the initial {record.get('initial_validation_loss', float('nan')):.4f}, so it is the "
            "base model")


def safe_execute_run(env: WorkerEnv, spec: RunSpec) -> dict[str, Any]:
    """``{"row": ...}`` or ``{"error": ...}``: one failing run must not stop the grid."""
    try:
        return {"row": execute_run(env, spec)}
    except Exception as exc:  # recorded as a failure and retried on the next start
        detail = traceback.format_exc(limit=4).strip().splitlines()
        return {"error": f"{type(exc).__name__}: {exc}", "trace": detail[-6:]}


def worker_precision(env: WorkerEnv, precision: str) -> str:
    """The precision a worker's runs use on its own device (``auto`` depends on the worker's hardware)."""
    from lora_recycle.models.loading import resolve_device
    from lora_recycle.models.precision import resolve_precision

    return resolve_precision(precision, resolve_device(env.device))


# --- driver side ------------------------------------------------------------------------------------------


def warm_selection_scores(env: WorkerEnv, executor: Executor, task_name: str, strategy: str, metric: str | None,
                          split: str, precision: str, log: Callable[[str], None]) -> None:
    """Fill the catalog's score cache of a model-scored selection (evaluation or loss) for a task once, before
    the merges that select by it, in the runs' precision: in shards on the executor's workers, each shard
    cached as it finishes (``selection/sharded.py``), so a killed study never rescores a cached adapter."""
    from lora_recycle.selection.from_catalog import select_from_catalog
    from lora_recycle.selection.sharded import Workers

    started = time.perf_counter()
    try:
        _, resolved = next(executor.map(worker_precision, [(env, precision)]))
        workers = Workers(executor, env.model, env.device, env.dtype, env.threads)
        select_from_catalog(env.db, strategy, 1, 0, task=_load_task(env, task_name), metric=metric, split=split,
                            precision=resolved, workers=workers)
    except Exception as exc:  # the merges will hit (and record) the same problem
        log(f"  warning: scoring the pool on {task_name} by {strategy} failed: {type(exc).__name__}: {exc}")
        return
    log(f"  scored the pool on {task_name} by {strategy} ({time.perf_counter() - started:.0f} s)")



@dataclass
class RunSummary:
    """What a call to ``run_experiment`` did."""

    results: str
    total: int
    already_done: int
    finished: int
    failed: int
    run_hashes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def clean_stale_artifacts(artifacts: Path) -> None:
    """Remove temporary folders left by runs that were killed (only the driver calls this, before starting)."""
    clean_stale(artifacts)


def run_experiment(resolved: ResolvedExperiment, results_path: str | Path, executor: Executor | None = None,
                   log: Callable[[str], None] = print) -> RunSummary:
    """Run every missing run of the experiment and record each one as it finishes."""
    config = resolved.config
    executor = executor or LocalExecutor()
    env = worker_env(resolved, results_path)
    runs = expand_runs(resolved)
    inputs = inputs_fingerprint(resolved)
    with ResultsStore(results_path) as store:
        done = store.finished_hashes()
        todo = [r for r in runs if r.run_hash not in done]
        recorded = store.meta().get(INPUTS_KEY)
        if todo and done and recorded not in (None, inputs):  # finished runs alone are only read back
            raise UserError(f"{results_path}: its {len(done)} runs were recorded on another base model or pool "
                            f"(inputs {recorded}, now {inputs}); give a new --results file")
        if todo or recorded is None:
            store.set_meta(INPUTS_KEY, inputs)
        store.set_meta(f"config:{config.content_hash()}", config.model_dump_json())
        already = len(runs) - len(todo)
        log(f"experiment {config.name}: {len(runs)} runs, {already} already recorded, {len(todo)} to run "
            f"({type(executor).__name__})")
        clean_stale_artifacts(Path(env.artifacts))
        baselines = [r for r in todo if r.kind != "merge"]
        merges = [r for r in todo if r.kind == "merge"]
        warm = sorted({(r.task, r.settings.selection, r.settings.selection_metric or "", r.settings.selection_split,
                        r.precision) for r in merges
                       if r.pool == "recycled" and r.settings.selection in ("evaluation", "loss")})
        finished = failed = 0
        if warm:
            log(f"scoring the pool for selection first: {len(warm)} (task, strategy) pairs "
                "(cached scores are read back)")
        for task, strategy, metric, split, precision in warm:
            warm_selection_scores(env, executor, task, strategy, metric or None, split, precision, log)
        counter = already
        warned: set[tuple[str, int]] = set()
        for phase in (baselines, merges):
            for index, outcome in executor.map(safe_execute_run, [(env, r) for r in phase]):
                spec = phase[index]
                counter += 1
                if "error" in outcome:
                    failed += 1
                    store.record_failure(spec.run_hash, spec.label, outcome["error"])
                    log(f"[{counter}/{len(runs)}] {spec.label}: FAILED {outcome['error']}")
                    continue
                row = {**outcome["row"], "config_hash": config.content_hash(), "experiment": config.name}
                if store.record(row):
                    finished += 1
                log(f"[{counter}/{len(runs)}] {spec.label}: accuracy {row['accuracy']:.3f} "
                    f"(n={row['n_test']}, {row['timings']['total']:.1f} s)")
                warning = untrained_target_warning(row)
                if warning and (row["task"], row["seed"]) not in warned:
                    warned.add((row["task"], row["seed"]))
                    log(f"  warning: {warning}")
    return RunSummary(str(results_path), len(runs), already, finished, failed, [r.run_hash for r in runs])
