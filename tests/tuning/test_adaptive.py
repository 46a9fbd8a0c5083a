"""Learned coefficients must actually transfer what related adapters know to the task."""

import pytest
import torch

from lora_recycle.adapters import read_peft_adapter
from lora_recycle.models.fold import folded
from lora_recycle.recipe.merge import merge_adapters
from lora_recycle.recipe.presets import preset
from lora_recycle.tasks import load_task
from lora_recycle.tasks.loss import dataset_loss
from lora_recycle.tasks.prompting import encode_for_training
from lora_recycle.tuning.target_lora import TargetLoraConfig, train_target_lora


@pytest.fixture(scope="module")
def trained_adapters(tiny_model_dir, colour_task_dir, tmp_path_factory):
    """Two LoRAs trained in seconds on the colour task (different seeds and ranks)."""
    from lora_recycle.models.loading import load_base_model

    root = tmp_path_factory.mktemp("trained")
    task = load_task(colour_task_dir)
    out = []
    for seed, rank in ((0, 8), (1, 4)):
        model, tokenizer = load_base_model(tiny_model_dir)
        config = TargetLoraConfig(rank=rank, alpha=16, steps=40, lr=1e-2, seed=seed, eval_every=10)
        path, loop, used = train_target_lora(model, tokenizer, task, config, root / f"lora{seed}")
        assert loop.best_val_loss < loop.initial_val_loss
        out.append(path)
    return out


def test_target_lora_caps_rank_and_saves_best(trained_adapters, tiny_model):
    model, _ = tiny_model
    adapter = read_peft_adapter(trained_adapters[0])
    assert {m.rank for m in adapter.modules.values()} == {8}
    assert (trained_adapters[0] / "README.md").read_text().count("colour") >= 1
    assert len(adapter.module_types) == 7


def test_ours_lowers_the_task_loss(tiny_model, trained_adapters, colour_task_dir):
    model, tokenizer = tiny_model
    task = load_task(colour_task_dir)
    pool = [read_peft_adapter(p) for p in trained_adapters]
    settings = preset("ours").with_overrides(steps=40, lr=0.2, eval_every=5)
    outcome = merge_adapters(model, tokenizer, task, pool, settings)
    loop = outcome.fit.loop
    assert loop.best_val_loss < 0.8 * loop.initial_val_loss
    val = [encode_for_training(tokenizer, task.spec, ex) for ex in task.split("validation")]
    base_loss = dataset_loss(model, tokenizer, val)
    with folded(model, outcome.adapter):
        merged_loss = dataset_loss(model, tokenizer, val)
    assert merged_loss == pytest.approx(loop.best_val_loss, rel=1e-4)
    assert base_loss == pytest.approx(loop.initial_val_loss, rel=1e-4)  # zero init is the base model


def test_same_seed_same_numbers(tiny_model, trained_adapters, colour_task_dir):
    model, tokenizer = tiny_model
    task = load_task(colour_task_dir)
    pool = [read_peft_adapter(p) for p in trained_adapters]
    settings = preset("ours").with_overrides(steps=5, eval_every=5, seed=3)
    a = merge_adapters(model, tokenizer, task, pool, settings)
    b = merge_adapters(model, tokenizer, task, pool, settings)
    assert torch.equal(a.fit.values, b.fit.values)


def test_init_first_starts_the_merge_as_the_first_adapter(tiny_model, trained_adapters, colour_task_dir):
    """``init: first`` (target LoRA first): the start is that LoRA, so with keep_start the merge is never worse
    on validation than it, and its coefficients start one-hot."""
    from lora_recycle.merging.coefficients import coefficient_groups, initial_coefficients

    groups = coefficient_groups({"model.layers.0.self_attn.q_proj": [True, True, False],
                                 "model.layers.1.mlp.up_proj": [True, False, True]}, "module")
    assert initial_coefficients(groups, "first").tolist() == [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    model, tokenizer = tiny_model
    task = load_task(colour_task_dir)
    first, other = (read_peft_adapter(p) for p in trained_adapters)
    val = [encode_for_training(tokenizer, task.spec, ex) for ex in task.split("validation")]
    with folded(model, first):
        first_loss = dataset_loss(model, tokenizer, val)
    settings = preset("ours").with_overrides(init="first", keep_start=True, steps=10, eval_every=5)
    loop = merge_adapters(model, tokenizer, task, [first, other], settings).fit.loop
    assert loop.initial_val_loss == pytest.approx(first_loss, rel=1e-4)
    assert loop.best_val_loss <= loop.initial_val_loss


def test_init_first_with_softmax_is_a_user_error():
    from lora_recycle.errors import UserError

    with pytest.raises(UserError, match="init first .* not softmax"):
        preset("pi_tuning").with_overrides(init="first")
