"""Pick k adapters from a pool catalog for a task, caching per-task scores in the catalog."""

from __future__ import annotations

from pathlib import Path

import torch

from lora_recycle.errors import UserError
from lora_recycle.selection.evaluation import evaluation_scores, select_random, top_k
from lora_recycle.tasks.format import Task

STRATEGIES = ("random", "evaluation")


def accepted_ids(db_path: str | Path) -> list[str]:
    """Ids of every accepted adapter in the catalog."""
    from lora_recycle.pool import Catalog

    if not Path(db_path).is_file():
        raise UserError(f"{db_path}: pool catalog not found (create it with `lora-recycle pool scan`)")
    with Catalog(db_path, create=False) as catalog:
        return sorted(row["id"] for row in catalog.rows(status="accepted"))


def select_from_catalog(
    db_path: str | Path, strategy: str, k: int, seed: int = 0, model=None, tokenizer=None, task: Task | None = None,
    device: torch.device | str = "cpu",
) -> tuple[list[str], dict[str, float]]:
    """``(selected ids, scores)``; evaluation scores are computed once per task and cached in the catalog."""
    from lora_recycle.pool import Catalog, load_pool_adapters

    ids = accepted_ids(db_path)
    if not ids:
        raise UserError(f"{db_path}: the catalog has no accepted adapters")
    if k < 1:
        raise UserError(f"--k must be at least 1, got {k}")
    k = min(k, len(ids))
    if strategy == "random":
        return select_random(ids, k, seed), {}
    if strategy == "evaluation":
        if task is None or model is None:
            raise UserError("evaluation selection needs --task and --model")
        task_hash = task.content_hash()
        with Catalog(db_path) as catalog:
            cached = catalog.get_scores(task_hash, "evaluation", ids)
        missing = [i for i in ids if i not in cached]
        if missing:
            fresh = evaluation_scores(model, tokenizer, task, missing,
                                      lambda i: load_pool_adapters(db_path, [i])[0], device=device)
            with Catalog(db_path) as catalog:
                catalog.put_scores(task_hash, "evaluation", fresh)
            cached.update(fresh)
        return top_k(cached, k), cached
    raise UserError(f"selection {strategy!r} needs the similarity strategies (not built yet); use one of "
                    f"{', '.join(STRATEGIES)}")
