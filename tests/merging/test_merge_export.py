"""Merges export as PEFT adapters that reproduce our logits; average equals PEFT's ``cat`` combination."""

import pytest
import torch

from lora_recycle.adapters import read_peft_adapter
from lora_recycle.adapters.export import export_merge
from lora_recycle.models.fold import folded
from lora_recycle.models.inject import MergedModel
from lora_recycle.recipe.merge import merge_adapters
from lora_recycle.recipe.presets import preset
from lora_recycle.tasks import load_task

IDS = torch.tensor([[1, 500, 2300, 77, 9000, 12, 4000, 31000], [5, 6, 7, 8, 9, 10, 11, 12]])


def peft_logits(model_dir, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model_dir)), str(adapter_dir))
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


def load_pool(adapter_dirs):
    return [read_peft_adapter(path, adapter_id=name) for name, path in adapter_dirs.items()]


@pytest.mark.parametrize("granularity", ["module", "layer", "sublayer", "model"])
def test_export_reproduces_merged_logits_in_peft(tmp_path, tiny_model, tiny_model_dir, adapter_dirs, granularity):
    model, _ = tiny_model
    pool = load_pool(adapter_dirs)
    merged = MergedModel(model, pool, granularity=granularity, activation="leaky_relu", init="zero")
    torch.manual_seed(0)
    with torch.no_grad():
        merged.raw.normal_(0.5, 0.8)  # some negative (leaky) and some positive coefficients
        ours = merged(input_ids=IDS).logits
    adapter = merged.merged_adapter()
    merged.detach()
    out = export_merge(adapter, tmp_path / "merged", str(tiny_model_dir), "ours", [], {})
    torch.testing.assert_close(peft_logits(tiny_model_dir, out), ours, atol=1e-4, rtol=1e-4)
    with folded(model, read_peft_adapter(out)), torch.no_grad():
        torch.testing.assert_close(model(input_ids=IDS).logits, ours, atol=1e-4, rtol=1e-4)


def test_average_equals_peft_cat(tiny_model, tiny_model_dir, adapter_dirs):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    names = ["all_r4", "qv_r8", "patterns"]  # PEFT's cat needs one shared config family; ranks differ
    model, tokenizer = tiny_model
    pool = [read_peft_adapter(adapter_dirs[n], adapter_id=n) for n in names]
    outcome = merge_adapters(model, tokenizer, None, pool, preset("average"))
    with folded(model, outcome.adapter), torch.no_grad():
        ours = model(input_ids=IDS).logits

    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
                                           str(adapter_dirs[names[0]]), adapter_name=names[0])
    for n in names[1:]:
        peft_model.load_adapter(str(adapter_dirs[n]), adapter_name=n)
    peft_model.add_weighted_adapter(names, [1 / len(names)] * len(names), "avg", combination_type="cat")
    peft_model.set_adapter("avg")
    peft_model.eval()
    with torch.no_grad():
        reference = peft_model(input_ids=IDS).logits
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_factored_and_materialized_merges_agree(tiny_model, adapter_dirs, colour_task_dir):
    model, tokenizer = tiny_model
    task = load_task(colour_task_dir)
    pool = load_pool(adapter_dirs)
    results = {}
    for strategy in ("factored", "materialized", "hybrid", "calibrate"):
        settings = preset("ours").with_overrides(steps=6, eval_every=3, strategy=strategy)
        results[strategy] = merge_adapters(model, tokenizer, task, pool, settings)
    ref = results["factored"]
    for strategy in ("materialized", "hybrid", "calibrate"):
        other = results[strategy]
        assert other.fit.loop.best_step == ref.fit.loop.best_step
        torch.testing.assert_close(other.fit.values, ref.fit.values, atol=1e-4, rtol=1e-3)
        assert other.fit.loop.best_val_loss == pytest.approx(ref.fit.loop.best_val_loss, rel=1e-4)


def test_base_model_is_left_unmodified(tiny_model, adapter_dirs, colour_task_dir):
    model, tokenizer = tiny_model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules_before = [type(m).__name__ for m in model.modules()]
    merge_adapters(model, tokenizer, load_task(colour_task_dir), load_pool(adapter_dirs),
                   preset("ours").with_overrides(steps=3, eval_every=3))
    assert [type(m).__name__ for m in model.modules()] == modules_before
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in model.parameters())


def test_softmax_coefficients_sum_to_one_over_present_adapters(tiny_model, adapter_dirs):
    model, _ = tiny_model
    pool = load_pool(adapter_dirs)
    merged = MergedModel(model, pool, granularity="module", activation="softmax", init="zero")
    values = merged.activated()
    torch.testing.assert_close(values.sum(-1), torch.ones(values.shape[0]))
    assert bool((values[~merged.groups.presence] == 0).all())
    merged.detach()
