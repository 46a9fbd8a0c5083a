"""Refining a merge (refine_steps): fine-tuning the merged adapter, warm-started from the merge."""

import pytest
import torch

from lora_recycle.adapters import read_peft_adapter
from lora_recycle.models.fold import folded
from lora_recycle.recipe.merge import merge_adapters
from lora_recycle.recipe.presets import preset
from lora_recycle.tasks import load_task
from lora_recycle.tasks.encoded import encode_task
from lora_recycle.tasks.loss import dataset_loss


def _merge(tiny_model, adapter_dirs, colour_task_dir, **overrides):
    model, tokenizer = tiny_model
    pool = [read_peft_adapter(adapter_dirs[n]) for n in ("all_r4", "patterns")]
    settings = preset("ours").with_overrides(steps=6, eval_every=3, **overrides)
    return merge_adapters(model, tokenizer, load_task(colour_task_dir), pool, settings)


def _val_loss(tiny_model, task_dir, adapter) -> float:
    model, tokenizer = tiny_model
    _, val = encode_task(tokenizer, load_task(task_dir)).fit_splits()
    with folded(model, adapter), torch.no_grad():
        return dataset_loss(model, tokenizer, val)


def test_refining_lowers_validation_loss_and_never_loses_to_the_merge(tiny_model, adapter_dirs, colour_task_dir):
    plain = _merge(tiny_model, adapter_dirs, colour_task_dir)
    refined = _merge(tiny_model, adapter_dirs, colour_task_dir, refine_steps=12, refine_lr=5e-3, refine_rank=64)
    record = refined.record()["refinement"]
    # the refinement starts at the merge, at a rank that holds it exactly
    assert record["compression_error"] < 1e-5
    assert record["initial_validation_loss"] == pytest.approx(_val_loss(tiny_model, colour_task_dir, plain.adapter),
                                                              rel=1e-4)
    assert record["best_validation_loss"] < record["initial_validation_loss"]
    assert _val_loss(tiny_model, colour_task_dir, refined.adapter) == pytest.approx(record["best_validation_loss"],
                                                                                     rel=1e-4)
    assert max(refined.adapter.ranks.values()) <= max(plain.adapter.ranks.values())
    cut = _merge(tiny_model, adapter_dirs, colour_task_dir, refine_steps=2, refine_lr=5e-3, refine_rank=2)
    assert max(cut.adapter.ranks.values()) <= 2 and cut.record()["refinement"]["compression_error"] > 0
    assert refined.coefficients == plain.coefficients  # the learned merge is the refinement's start, unchanged


def test_refine_fields_leave_other_run_hashes_alone():
    settings = preset("ours")
    assert "refine_steps" not in settings.to_dict() and "refine_lr" not in settings.to_dict()
    assert settings.with_overrides(refine_steps=50).to_dict()["refine_steps"] == 50


def test_refining_is_deterministic(tiny_model, adapter_dirs, colour_task_dir):
    first = _merge(tiny_model, adapter_dirs, colour_task_dir, refine_steps=4, refine_lr=5e-3, refine_rank=8)
    second = _merge(tiny_model, adapter_dirs, colour_task_dir, refine_steps=4, refine_lr=5e-3, refine_rank=8)
    for path, module in first.adapter.modules.items():
        assert torch.equal(module.delta(), second.adapter.modules[path].delta())
