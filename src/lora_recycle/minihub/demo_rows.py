"""The demo's rows as independent jobs, run in this process or side by side in worker processes.

Each job loads what it needs (base model, task, the selected pool adapters, the target-task LoRA), builds
its adapter or Arrow library, scores it on the test rows and caches the finished row. On a CPU two
one-thread workers run the rows side by side, as the hub build does (a 135M model's small matmuls do not
keep two threads busy): the target-task LoRA trains in one while the rows that do not need it run in the
other.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass
from pathlib import Path

from lora_recycle.recipe.settings import MergeSettings
from lora_recycle.tuning.target_lora import TargetLoraConfig


@dataclass
class DemoRow:
    method: str
    accuracy: float
    n: int
    note: str = ""
    metric: str = "loglik"


class RowCache:
    """The demo's finished rows, one JSON file each under ``directory``: a warm demo (same hub, task, seed,
    demo sizes, selected adapters and package version) prints them without recomputing, and an interrupted
    one resumes at the first missing row."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _path(self, method: str) -> Path:
        return self.directory / (hashlib.sha256(method.encode()).hexdigest()[:12] + ".json")

    def get(self, method: str) -> DemoRow | None:
        path = self._path(method)
        return DemoRow(**json.loads(path.read_text())) if path.is_file() else None

    def put(self, row: DemoRow) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self._path(row.method).with_suffix(f".{multiprocessing.current_process().pid}.partial")
        partial.write_text(json.dumps(asdict(row)) + "\n")
        partial.replace(self._path(row.method))


@dataclass(frozen=True)
class RowJob:
    """One row: ``kind`` is prompting, target, average, ours or arrow; ours and arrow run with or without the
    target-task LoRA, ours also over random-init adapters (``noise``)."""

    label: str
    kind: str
    with_target: bool = False
    noise: bool = False

    @property
    def needs_target(self) -> bool:
        return self.kind == "target" or self.with_target


@dataclass(frozen=True)
class DemoPlan:
    """Everything a row needs, as paths and settings (picklable for worker processes)."""

    base_model: Path
    base_model_id: str
    catalog: Path
    task_dir: Path
    precision: str  # the hub's: merges and scoring run in it (Arrow in fp32)
    test_limit: int
    seed: int
    pool_ids: tuple[str, ...]  # the selected adapters, best first
    ours: MergeSettings
    target_config: TargetLoraConfig
    target_dir: Path  # where the target-task LoRA is trained once and read back
    cache_dir: Path  # the RowCache, and the Arrow libraries of its rows


_loaded: dict[str, tuple] = {}  # this process's base model and tokenizer, by path


def share_model(path: Path, model, tokenizer) -> None:
    """Let rows run in this process use an already loaded base model."""
    _loaded.clear()
    _loaded[str(path)] = (model, tokenizer)


def _model(plan: DemoPlan):
    from lora_recycle.models.loading import load_base_model

    key = str(plan.base_model)
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = load_base_model(plan.base_model)
    return _loaded[key]


def ensure_target(plan: DemoPlan):
    """The target-task LoRA, trained at ``plan.target_dir`` on first need (later calls read it back)."""
    from lora_recycle.adapters import read_peft_adapter
    from lora_recycle.recipe import TARGET_ADAPTER_ID
    from lora_recycle.recipe.target import cached_target_lora
    from lora_recycle.tasks import load_task

    model, tokenizer = _model(plan)
    folder, _ = cached_target_lora(model, tokenizer, load_task(plan.task_dir), plan.target_config, plan.target_dir,
                                   base_model_id=plan.base_model_id)
    return read_peft_adapter(folder, adapter_id=TARGET_ADAPTER_ID)


def _build(plan: DemoPlan, job: RowJob, model, tokenizer, task) -> tuple[object, str]:
    """The row's adapter (or Arrow library directory) and its note."""
    from lora_recycle.pool import load_pool_adapters
    from lora_recycle.recipe.merge import merge_adapters
    from lora_recycle.recipe.pool import PoolRequest, finish_pool
    from lora_recycle.recipe.presets import preset
    from lora_recycle.routing.recipe import route_pool

    if job.kind == "prompting":
        return None, ""
    target = ensure_target(plan) if job.needs_target else None
    if job.kind == "target":
        return target, ""
    if job.kind == "arrow":  # data-free: every accepted adapter, no selection
        arrow = preset("arrow").with_overrides(seed=plan.seed)
        library = plan.cache_dir / ("arrow-target" if job.with_target else "arrow")
        experts = route_pool(model, tokenizer, task, PoolRequest(db=plan.catalog, target=target), arrow,
                             library).pool["experts"]
        return library, f"{len(experts)} experts, top_k {arrow.top_k}; not one adapter"
    pool = load_pool_adapters(plan.catalog, list(plan.pool_ids))
    if job.kind == "average":
        return merge_adapters(model, tokenizer, None, pool, preset("average")).adapter, ""
    # with the target-task LoRA: it first, then the top k - 1 selected (k adapters either way); random-init
    # noise is drawn per module with the std pooled over the recycled adapters of that merge
    recycled = pool[: len(pool) - 1] if job.with_target else pool
    outcome = merge_adapters(model, tokenizer, task, finish_pool(recycled, target, job.noise, plan.seed), plan.ours,
                             target_id=target.adapter_id if target is not None else None)
    loop = outcome.fit.loop
    return outcome.adapter, f"val loss {loop.initial_val_loss:.3f} -> {loop.best_val_loss:.3f}"


def compute_row(plan: DemoPlan, job: RowJob) -> DemoRow:
    """Build and score one row in the hub's precision (Arrow in fp32), cache it, return it."""
    from lora_recycle.models.precision import computing_in
    from lora_recycle.routing.arrow import routed_precision, scoring_model
    from lora_recycle.tasks import load_task
    from lora_recycle.tasks.scoring import evaluate_task

    cache = RowCache(plan.cache_dir)
    cached = cache.get(job.label)
    if cached is not None:
        return cached
    model, tokenizer = _model(plan)
    task = load_task(plan.task_dir)
    precision = routed_precision(plan.precision, job.kind == "arrow")
    with computing_in(model, precision):
        adapter, note = _build(plan, job, model, tokenizer, task)
        with scoring_model(model, adapter) as scored:  # a LoRA folded in, or an Arrow library routed
            result = evaluate_task(scored, tokenizer, task, "test", limit=plan.test_limit)
    row = DemoRow(job.label, result.accuracy, result.n, note, result.metric)
    cache.put(row)
    return row


def _train_target(plan: DemoPlan) -> str:
    ensure_target(plan)
    return "target"


def run_rows(plan: DemoPlan, jobs: list[RowJob], workers: int, done: Callable[[DemoRow], None]) -> dict[str, DemoRow]:
    """Every job's row by label; ``done(row)`` as each finishes. ``workers`` <= 1 runs them here, in order."""
    cache = RowCache(plan.cache_dir)
    rows = {job.label: row for job in jobs if (row := cache.get(job.label)) is not None}
    todo = [job for job in jobs if job.label not in rows]
    if workers <= 1 or len(todo) <= 1:
        for job in todo:
            rows[job.label] = compute_row(plan, job)
            done(rows[job.label])
        return rows
    from lora_recycle.minihub.trainer import worker_pool

    with worker_pool(workers, threads=1) as pool:
        later = [job for job in todo if job.needs_target]
        target: Future | None = pool.submit(_train_target, plan) if later else None
        pending = {pool.submit(compute_row, plan, job) for job in todo if not job.needs_target}
        if target is not None:
            pending.add(target)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                result = future.result()  # a worker's exception is raised here; finished rows stay cached
                if future is target:  # the target-task LoRA is on disk: its rows can start
                    pending |= {pool.submit(compute_row, plan, job) for job in later}
                    continue
                rows[result.method] = result
                done(result)
    return rows
