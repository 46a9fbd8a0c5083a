"""Model-scored selection over a large pool in shards, on an executor (Ray, or this process).

The driver splits the adapters still missing from the catalog's score cache into shards and maps
``score_shard`` over them; each worker loads the base model once (``models.loading.cached_base_model``)
and reads one pool adapter at a time from the catalog's files, so no process holds the whole pool.
The driver writes each shard's scores to the cache as it finishes: a killed selection resumes with
what is still missing and never scores a recorded adapter again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lora_recycle.experiments.executors import Executor

SHARD_SIZE = 8  # adapters per task: small enough to balance two workers and lose little to a kill


@dataclass(frozen=True)
class Workers:
    """Where model-scored selection runs: an executor, and the base model each of its workers loads once.

    ``device`` is resolved on the worker (``auto``: its GPU when it has one); paths must be visible to every
    node of a cluster (the model, the catalog and the adapters it lists).
    """

    executor: Executor
    model: str
    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = None
    shard_size: int = SHARD_SIZE


@dataclass(frozen=True)
class ShardJob:
    """What a worker needs to score a shard (plain, picklable values and the task's rows)."""

    model: str
    device: str
    dtype: str
    threads: int | None
    db: str
    strategy: str
    task: Any
    metric: str | None
    split: str
    precision: str


def score_shard(job: ShardJob, ids: list[str]) -> dict[str, float]:
    """Worker side: ``{adapter id: score}`` for one shard, on this process's cached base model."""
    from lora_recycle.models.loading import cached_base_model
    from lora_recycle.models.precision import computing_in
    from lora_recycle.pool import load_pool_adapters
    from lora_recycle.selection.strategies import STRATEGIES, ScoringInputs, score

    model, tokenizer, device = cached_base_model(job.model, job.device, job.dtype, job.threads)
    inputs = ScoringInputs(model, tokenizer, job.task, device, None, lambda i: load_pool_adapters(job.db, [i])[0],
                           job.metric, job.split)
    with computing_in(model, job.precision, device):
        return score(STRATEGIES[job.strategy], inputs, ids)


def shards(ids: list[str], size: int) -> list[list[str]]:
    """``ids`` in consecutive shards of at most ``size``: ``shards(list("abcde"), 2)`` is ``[[a, b], [c, d], [e]]``."""
    return [ids[start:start + size] for start in range(0, len(ids), max(1, size))]


def score_in_shards(workers: Workers, job: ShardJob, ids: list[str],
                    record: Callable[[dict[str, float]], None]) -> Iterator[tuple[int, int]]:
    """Score ``ids`` shard by shard on ``workers``; ``record`` gets each shard's scores as it finishes.

    Yields ``(shards done, shards in all)`` after each record, so callers can report progress.
    """
    parts = shards(ids, workers.shard_size)
    for done, (_, fresh) in enumerate(workers.executor.map(score_shard, [(job, part) for part in parts]), 1):
        record(fresh)
        yield done, len(parts)
