"""Loss-based selection (beyond the paper): scores are minus each adapter's answer-token loss, cached per task."""

from __future__ import annotations

import pytest
import torch

from lora_recycle.models.fold import folded
from lora_recycle.models.loading import load_base_model
from lora_recycle.pool import load_pool_adapters
from lora_recycle.pool.catalog import accepted_ids
from lora_recycle.selection import from_catalog
from lora_recycle.selection.from_catalog import select_from_catalog
from lora_recycle.tasks import load_task
from lora_recycle.tasks.encoded import encode_task
from lora_recycle.tasks.loss import dataset_loss


def test_loss_selection_ranks_by_the_loss_and_caches(world, monkeypatch):
    model, tokenizer = load_base_model(world["model"])
    task = load_task(world["tasks"]["echo"])  # a generation task: accuracies of random adapters tie at zero
    chosen, scores = select_from_catalog(world["db"], "loss", 2, 0, model, tokenizer, task)
    ids = accepted_ids(world["db"])
    assert set(scores) == set(ids) and len(chosen) == 2
    sequences = [encode_task(tokenizer, task).training(ex) for ex in task.split("train")]
    for adapter_id in ids:
        with folded(model, load_pool_adapters(world["db"], [adapter_id])[0]):
            assert scores[adapter_id] == pytest.approx(-dataset_loss(model, tokenizer, sequences), rel=1e-5)
    assert chosen == sorted(ids, key=lambda i: -scores[i])[:2]
    monkeypatch.setattr(from_catalog, "score", lambda *a, **k: pytest.fail("scored again instead of the cache"))
    assert select_from_catalog(world["db"], "loss", 2, 0, model, tokenizer, task) == (chosen, scores)


def test_bf16_selection_scores_are_cached_apart_from_fp32(world, monkeypatch, tmp_path):
    """A bf16 study scores the pool under autocast and caches those scores under their own kind."""
    import sqlite3

    from lora_recycle.pool import Catalog

    db = tmp_path / "pool.db"  # a copy: other tests of this worker may have cached bf16 scores in the shared world
    with sqlite3.connect(world["db"]) as source, sqlite3.connect(db) as copy:
        source.backup(copy)
        copy.execute("DELETE FROM scores")
    world = {**world, "db": str(db)}
    model, tokenizer = load_base_model(world["model"])
    task = load_task(world["tasks"]["colour"])
    _, fp32 = select_from_catalog(world["db"], "evaluation", 2, 0, model, tokenizer, task)
    calls = []
    real = from_catalog.score

    def spy(*args, **kwargs):
        calls.append(torch.is_autocast_enabled("cpu"))
        return real(*args, **kwargs)

    monkeypatch.setattr(from_catalog, "score", spy)
    _, bf16 = select_from_catalog(world["db"], "evaluation", 2, 0, model, tokenizer, task, precision="bf16")
    assert calls == [True] and set(bf16) == set(fp32)
    with Catalog(world["db"]) as catalog:
        ids = accepted_ids(world["db"])
        assert catalog.get_scores(task.content_hash(), "evaluation@bf16", ids) == bf16
        assert catalog.get_scores(task.content_hash(), "evaluation", ids) == fp32
    assert select_from_catalog(world["db"], "evaluation", 2, 0, model, tokenizer, task, precision="bf16")[1] == bf16
    assert calls == [True]  # the second bf16 call read the cache
