"""Train and score the mini-hub's adapters, in this process or in parallel worker processes.

On a CPU, one process per core (each with its share of the threads) trains ~1.35x more adapters per
minute than one process using every core: a 135M model's small matmuls do not keep two threads
busy (``bench/train_step.py`` measures it). Work is handed out one source task at a time, so the base
model's accuracy on a task is computed by one worker only, and every finished adapter stays on disk:
an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

from lora_recycle.minihub.pool import AdapterPlan, train_pool_adapter
from lora_recycle.minihub.specialists import BaseAccuracies, eval_card_fields, gate_rows, task_accuracy
from lora_recycle.tuning.target_lora import TargetLoraConfig


@dataclass(frozen=True)
class TrainerSetup:
    """Everything a worker needs to load the base model and train and score adapters (picklable)."""

    base_dir: Path
    base_id: str
    device: str
    precision: str
    limit: int  # own-task test rows each adapter is scored on
    root: Path  # the hub directory (base accuracies are cached there)


@dataclass(frozen=True)
class Job:
    """One adapter to build: a pool adapter (``plan``) or an in-house one (``config``) for ``task_dir``."""

    out: Path
    task_dir: Path
    plan: AdapterPlan | None = None
    config: TargetLoraConfig | None = None  # in-house adapters
    name: str = ""


def job_groups(plans: list[AdapterPlan], outs: list[Path], tasks: dict[str, Path], in_house: dict[str, Path],
               in_house_config: TargetLoraConfig | None) -> list[list[Job]]:
    """The build's jobs: one group per source task (its pool adapters, in plan order), then one per in-house
    adapter; a group runs in one worker, so a task's base accuracy is computed once."""
    groups = [[Job(out, tasks[p.task], plan=p) for p, out in zip(plans, outs, strict=True) if p.task == name]
              for name in dict.fromkeys(p.task for p in plans)]
    return groups + [[Job(out, tasks[name], config=in_house_config, name=f"in-house/{name}")]
                     for name, out in in_house.items()]


class HubTrainer:
    """Loads the base model once, on first need; trains and scores adapters on their own task."""

    def __init__(self, setup: TrainerSetup):
        self.setup = setup
        self.base_scores = BaseAccuracies(setup.root / "base-accuracy", setup.limit, setup.precision)
        self.model = self.tokenizer = None

    def load(self):
        if self.model is None:
            from lora_recycle.models.loading import load_base_model

            self.model, self.tokenizer = load_base_model(self.setup.base_dir, device=self.setup.device)
        return self.model, self.tokenizer

    def scorer(self, name: str, task) -> Callable[[Path], dict]:
        """``adapter_dir -> card fields`` with the adapter's and the base's accuracy on ``task``'s test rows."""
        from lora_recycle.adapters import read_peft_adapter

        model, tokenizer = self.load()
        limit, precision = self.setup.limit, self.setup.precision

        def evaluate(adapter_dir: Path) -> dict:
            base = self.base_scores.get(model, tokenizer, task)
            own = task_accuracy(model, tokenizer, task, limit, precision, read_peft_adapter(adapter_dir))
            return eval_card_fields(name, task, own, base, limit)

        return evaluate

    def run(self, job: Job) -> None:
        """Build one adapter (skipped when it is already on disk and scored)."""
        from lora_recycle.tasks import load_task

        task = load_task(job.task_dir)
        if job.plan is not None:
            if not (job.out / "adapter_config.json").is_file():
                model, tokenizer = self.load()
                train_pool_adapter(job.plan, model, tokenizer, task, job.out, self.setup.base_id,
                                   self.setup.precision, self.scorer(job.plan.name, task),
                                   gate_rows(task, self.setup.limit), self.base_scores)
            return
        self._in_house(job, task)

    def _in_house(self, job: Job, task) -> None:
        """An in-house adapter: trained like a pool specialist (one retry), scored, then moved into place."""
        from lora_recycle.adapters.card import read_card_data, write_card
        from lora_recycle.minihub.pool import RETRY_SEED, train_specialist

        if not (job.out / "adapter_config.json").is_file() or "source_accuracy" not in read_card_data(job.out):
            model, tokenizer = self.load()
            config = job.config
            tmp = job.out.with_name(job.out.name + ".partial")
            fields = train_specialist(
                model, tokenizer, task,
                lambda retries: replace(config, lr=config.lr / 2**retries, seed=config.seed + RETRY_SEED * retries),
                tmp, self.setup.base_id, gate_rows(task, self.setup.limit), self.base_scores)
            card = read_card_data(tmp)
            body = (tmp / "README.md").read_text().split("\n---\n", 1)[-1]
            write_card(tmp, {**card, **fields, **self.scorer(job.name, task)(tmp)}, body)
            if job.out.exists():  # an unscored copy left by an older build
                shutil.rmtree(job.out)
            tmp.rename(job.out)


def default_workers(device: str) -> int:
    """Worker processes for a build: one per core (at most 2) on a CPU, one on an accelerator."""
    if str(device).split(":")[0] != "cpu":
        return 1
    return max(1, min(2, os.cpu_count() or 1))


_worker: HubTrainer | None = None
_finished = None  # the build's queue of finished-adapter notices (one per job), set in each worker


def worker_pool(workers: int, threads: int | None = None, initializer: Callable | None = None,
                initargs: tuple = ()) -> ProcessPoolExecutor:
    """Spawned worker processes (no fork of a process holding torch threads), each with ``threads`` torch threads
    (default: an equal share of this process's) and ending when this process is gone; the hub build and the demo
    run their jobs in one."""
    import torch

    threads = threads or max(1, torch.get_num_threads() // workers)
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                               initargs=(threads, os.getpid(), initializer, initargs))


def _init_worker(threads: int, parent: int, initializer: Callable | None, initargs: tuple) -> None:
    import torch

    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


def _start_trainer(setup: TrainerSetup, finished) -> None:
    global _worker, _finished
    _worker, _finished = HubTrainer(setup), finished


def _exit_with_parent(parent: int) -> None:
    """End this worker when the build that started it is gone (killed builds must not leave trainers running)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _run_group(jobs: list[Job]) -> int:
    for job in jobs:
        _worker.run(job)
        _finished.put(1)
    return len(jobs)


def run_jobs(groups: list[list[Job]], setup: TrainerSetup, workers: int, progress: Callable[[int], None],
             trainer: HubTrainer | None = None) -> None:
    """Build every job, group by group (a group's jobs run in order in one process); ``progress(1)`` after
    each finished job. ``workers`` <= 1 runs them here, with ``trainer`` (or a new one)."""
    groups = [g for g in groups if g]
    if workers <= 1 or len(groups) <= 1:
        trainer = trainer or HubTrainer(setup)
        for group in groups:
            for job in group:
                trainer.run(job)
                progress(1)
        return
    import queue

    with multiprocessing.get_context("spawn").Manager() as manager:
        finished = manager.Queue()

        def drain() -> None:
            while True:
                try:
                    progress(finished.get_nowait())
                except queue.Empty:
                    return

        with worker_pool(workers, initializer=_start_trainer, initargs=(setup, finished)) as pool:
            pending = {pool.submit(_run_group, group) for group in groups}
            try:
                while pending:
                    done, pending = wait(pending, timeout=2.0, return_when=FIRST_COMPLETED)
                    drain()
                    for future in done:
                        future.result()  # a worker's exception is raised here; finished adapters stay
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # let running groups finish their adapter
                raise
            finally:
                drain()
