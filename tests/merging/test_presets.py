"""Every preset and design choice runs on a mixed-rank, mixed-target pool and exports a PEFT adapter."""

import numpy as np
import pytest
import torch

from lora_recycle.adapters import read_peft_adapter
from lora_recycle.adapters.export import export_merge
from lora_recycle.adapters.lora import LoraModule
from lora_recycle.merging.controls import random_init_like
from lora_recycle.models.fold import folded
from lora_recycle.models.merged_linear import MergedLoraLinear
from lora_recycle.recipe.merge import merge_adapters
from lora_recycle.recipe.presets import METHODS, preset
from lora_recycle.tasks import load_task

IDS = torch.tensor([[1, 500, 2300, 77, 9000, 12]])


def pool_of(adapter_dirs):
    return [read_peft_adapter(p, adapter_id=n) for n, p in adapter_dirs.items()]


@pytest.mark.parametrize("name", sorted(n for n, m in METHODS.items() if not m.routed))  # routed: tests/routing
def test_every_preset_runs_and_exports(tmp_path, name, tiny_model, tiny_model_dir, adapter_dirs, colour_task_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, tokenizer = tiny_model
    task = load_task(colour_task_dir)
    settings = preset(name).with_overrides(steps=4, eval_every=2)
    outcome = merge_adapters(model, tokenizer, task, pool_of(adapter_dirs), settings)
    out = export_merge(outcome.adapter, tmp_path / name, str(tiny_model_dir), name, [], outcome.record())
    with folded(model, outcome.adapter), torch.no_grad():
        ours = model(input_ids=IDS).logits
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(out))
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=IDS).logits, ours, atol=1e-4, rtol=1e-4)
    if settings.adaptive:
        assert outcome.fit.loop.best_val_loss <= outcome.fit.loop.initial_val_loss + 1e-6


@pytest.mark.parametrize("granularity", ["model", "layer", "sublayer", "module"])
@pytest.mark.parametrize("activation", ["softmax", "leaky_relu", "linear"])
def test_design_grid(granularity, activation, tiny_model, adapter_dirs, colour_task_dir):
    model, tokenizer = tiny_model
    settings = preset("ours").with_overrides(granularity=granularity, activation=activation, steps=2,
                                             eval_every=2, init="uniform" if activation == "linear" else "zero")
    outcome = merge_adapters(model, tokenizer, load_task(colour_task_dir), pool_of(adapter_dirs), settings)
    groups = {"model": 1, "layer": 2, "sublayer": 4, "module": 14}[granularity]
    assert len(outcome.coefficients) == groups
    if activation == "softmax":
        for values in outcome.coefficients.values():
            assert sum(values.values()) == pytest.approx(1.0, abs=1e-5)


def test_lorahub_composition_has_cross_terms():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5, bias=False)
    m1 = LoraModule(torch.randn(2, 6), torch.randn(5, 2), 0.5)
    m2 = LoraModule(torch.randn(3, 6), torch.randn(5, 3), 2.0)
    layer = MergedLoraLinear(base, [m1, m2], composition="lorahub")
    w = torch.tensor([0.7, -1.2])
    layer.coefficients = w
    x = torch.randn(4, 6)
    B_sum = torch.zeros(5, 3)
    A_sum = torch.zeros(3, 6)
    for wi, m in zip(w, (m1, m2), strict=True):
        B_sum[:, : m.rank] += wi * m.scale * m.B
        A_sum[: m.rank] += wi * m.A
    expected = base(x) + x @ (B_sum @ A_sum).T  # includes w1 w2 s1 B1 A2[:2] cross terms
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    no_cross = base(x) + x @ (w[0] * m1.delta() + w[1] * m2.delta()).T
    assert not torch.allclose(layer(x), no_cross, atol=1e-3)
    torch.testing.assert_close(layer.merged_delta(), B_sum @ A_sum, atol=1e-5, rtol=1e-5)


def test_gradient_free_respects_bounds_and_budget(tiny_model, adapter_dirs, colour_task_dir):
    model, tokenizer = tiny_model
    settings = preset("lorahub").with_overrides(steps=12)
    outcome = merge_adapters(model, tokenizer, load_task(colour_task_dir), pool_of(adapter_dirs), settings)
    history = outcome.fit.loop.history
    assert len(history) == 12
    raws = np.array([h["raw"] for h in history])
    assert raws.min() >= -1.5 and raws.max() <= 1.5
    assert outcome.fit.loop.best_val_loss == min(h["objective"] for h in history)
    assert np.allclose(raws[0], 0.0)  # LoraHub starts from zero


def test_joint_tuning_trains_factors_and_adds_a_fresh_lora(tiny_model, adapter_dirs, colour_task_dir):
    model, tokenizer = tiny_model
    settings = preset("pi_tuning").with_overrides(steps=4, eval_every=1, lr=1e-2)
    pool = pool_of(adapter_dirs)
    outcome = merge_adapters(model, tokenizer, load_task(colour_task_dir), pool, settings)
    assert "fresh-lora" in next(iter(outcome.coefficients.values()))
    assert not any(p.requires_grad for p in model.parameters())


def test_random_init_control(adapter_dirs):
    adapter = read_peft_adapter(adapter_dirs["patterns"])
    noise = random_init_like(adapter, seed=0)
    assert set(noise.modules) == set(adapter.modules)
    for path, module in adapter.modules.items():
        fake = noise.modules[path]
        assert fake.A.shape == module.A.shape and fake.B.shape == module.B.shape and fake.scale == module.scale
        assert fake.A.std().item() == pytest.approx(module.A.std().item(), rel=0.35)
        assert not torch.equal(fake.A, module.A)
    assert torch.equal(random_init_like(adapter, 0).modules[path].A, noise.modules[path].A)
