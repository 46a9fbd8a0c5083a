"""Pick k adapters from a pool catalog for a task, caching per-task scores in the catalog."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lora_recycle.adapters.lora import LoraAdapter
from lora_recycle.errors import UserError
from lora_recycle.pool.catalog import accepted_ids
from lora_recycle.selection.ranking import top_k
from lora_recycle.selection.strategies import STRATEGIES, ScoringInputs, choose, score
from lora_recycle.tasks.format import Task

if TYPE_CHECKING:
    from lora_recycle.selection.sharded import Workers


def adapter_fingerprint(adapter: LoraAdapter) -> str:
    """A content hash of an adapter's factors and scales: keys cached similarity scores to a target LoRA."""
    digest = hashlib.sha256()
    for path in sorted(adapter.modules):
        module = adapter.modules[path]
        digest.update(path.encode())
        digest.update(repr(module.scale).encode())
        for tensor in (module.A, module.B):
            digest.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def select_from_catalog(
    db_path: str | Path, strategy: str, k: int, seed: int = 0, model=None, tokenizer=None, task: Task | None = None,
    device: torch.device | str = "cpu", target: LoraAdapter | None = None, metric: str | None = None,
    split: str = "train", precision: str = "fp32", workers: Workers | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[list[str], dict[str, float]]:
    """``(selected ids, scores)``; scores are computed once per task (and target LoRA) and cached in the catalog.

    ``strategy`` is a name in ``selection/strategies.py``. Similarity strategies (cosine, clamp, abs,
    quasi_fim) compare each adapter with ``target``, the target-task LoRA; evaluation scores each
    adapter's accuracy by ``metric`` on ``split`` (default: log-likelihood on the training examples;
    the paper: ``exact_match`` on ``labelled``, train + validation). Model-scored strategies run in
    ``precision`` (bf16: autocast, ~1.5x faster on CPUs with native bf16), cached apart from fp32 scores.
    With ``workers`` they are scored in shards on its executor (e.g. Ray) instead of on ``model``, each
    shard cached as it finishes (``selection/sharded.py``); ``log`` hears how many are cached and scored.
    """
    from lora_recycle.pool import Catalog, load_pool_adapters

    ids = accepted_ids(db_path)
    if not ids:
        raise UserError(f"{db_path}: the catalog has no accepted adapters")
    if k < 1:
        raise UserError(f"--k must be at least 1, got {k}")
    k = min(k, len(ids))
    chosen = STRATEGIES.lookup(strategy)
    if not chosen.scored:
        return choose(chosen, ids, k, seed), {}

    def load(adapter_id: str) -> LoraAdapter:
        return load_pool_adapters(db_path, [adapter_id])[0]

    kind = strategy

    if chosen.needs == "model":
        if task is None or (model is None and workers is None):
            raise UserError(f"{strategy} selection needs --task and --model")
        from lora_recycle.tasks.metrics import resolve_metric

        task.split(split)  # an unknown split name is a user error before any scoring
        key = task.content_hash()
        if strategy == "loss":  # no metric: the loss is the score
            kind = f"loss:{split}"
        elif metric is not None or split != "train":  # the default keeps its cache key
            kind = f"{strategy}:{resolve_metric(task, metric)}:{split}"
        if precision != "fp32":  # fp32 keeps its cache key
            kind = f"{kind}@{precision}"
    elif chosen.needs == "target":
        if target is None:
            raise UserError(f"{strategy} selection compares adapters with a target-task LoRA: give --target-lora DIR")
        key = adapter_fingerprint(target)
    else:
        key = "pool"
    with Catalog(db_path) as catalog:
        cached = catalog.get_scores(key, kind, ids)
    missing = [i for i in ids if i not in cached]
    if missing and log is not None:
        log(f"{strategy} scores on {db_path}: {len(cached)} of {len(ids)} cached, scoring {len(missing)}")
    if missing and workers is not None and chosen.needs == "model":
        cached.update(_score_on_workers(workers, db_path, strategy, task, metric, split, precision, missing,
                                        key, kind, log))
    elif missing:
        from lora_recycle.models.precision import computing_in

        inputs = ScoringInputs(model, tokenizer, task, device, target, load, metric, split)
        if chosen.needs == "model":
            with computing_in(model, precision, device):
                fresh = score(chosen, inputs, missing)
        else:
            fresh = score(chosen, inputs, missing)
        with Catalog(db_path) as catalog:
            catalog.put_scores(key, kind, fresh)
        cached.update(fresh)
    return top_k(cached, k), cached


def _score_on_workers(workers: Workers, db_path: str | Path, strategy: str, task: Task, metric: str | None,
                      split: str, precision: str, missing: list[str], key: str, kind: str,
                      log: Callable[[str], None] | None) -> dict[str, float]:
    """Score ``missing`` in shards on ``workers``, writing each shard to the catalog's cache as it finishes."""
    from lora_recycle.pool import Catalog
    from lora_recycle.selection.sharded import ShardJob, score_in_shards

    job = ShardJob(workers.model, workers.device, workers.dtype, workers.threads, str(db_path), strategy, task,
                   metric, split, precision)
    fresh: dict[str, float] = {}

    def record(scores: dict[str, float]) -> None:
        with Catalog(db_path) as catalog:
            catalog.put_scores(key, kind, scores)
        fresh.update(scores)

    for done, total in score_in_shards(workers, job, missing, record):
        if log is not None:
            log(f"  shard {done}/{total} scored and cached ({len(fresh)}/{len(missing)} adapters)")
    return fresh
