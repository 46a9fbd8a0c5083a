"""Error-budget exports end to end: PEFT reloads them with the compressed reference's logits, in fp32 and bf16."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lora_recycle.adapters import read_peft_adapter
from lora_recycle.adapters.export import as_stored, export_merge
from lora_recycle.merging.rank_budget import DEFAULT_MAX_ERROR, VLLM_MAX_RANK, fit_export_rank
from lora_recycle.models.fold import folded
from lora_recycle.models.inject import MergedModel
from lora_recycle.recipe.merge import merge_adapters
from lora_recycle.recipe.presets import preset

IDS = torch.tensor([[1, 500, 2300, 77, 9000, 12, 4000, 31000], [5, 6, 7, 8, 9, 10, 11, 12]])


def peft_logits(model_dir, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model_dir)), str(adapter_dir))
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


def our_logits(model, adapter):
    with folded(model, adapter), torch.no_grad():
        return model(input_ids=IDS).logits


def tuned_merge(model, adapter_dirs):
    """A module-granularity merge with random (some negative) coefficients, as tuning would leave it."""
    pool = [read_peft_adapter(path, adapter_id=name) for name, path in adapter_dirs.items()]
    merged = MergedModel(model, pool, granularity="module", activation="leaky_relu", init="zero")
    torch.manual_seed(0)
    with torch.no_grad():
        merged.raw.normal_(0.5, 0.8)
    adapter = merged.merged_adapter()
    merged.detach()
    return adapter


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_budget_export_reloads_in_peft_with_the_compressed_logits(tmp_path, tiny_model, tiny_model_dir, adapter_dirs,
                                                                  dtype):
    model, _ = tiny_model
    exact = tuned_merge(model, adapter_dirs)
    compressed, report = fit_export_rank(exact, max_error=0.2)
    assert report.compressed and report.rank < fit_export_rank(exact)[1].rank  # 16 instead of the exact 32
    out = export_merge(compressed, tmp_path / "merged", "org/tiny", "ours", [],
                       {"compression": report.record()}, dtype)
    assert {t.dtype for t in load_file(out / "adapter_model.safetensors").values()} == {dtype}
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == report.rank == config["lora_alpha"]
    reference = our_logits(model, as_stored(compressed, dtype))
    torch.testing.assert_close(peft_logits(tiny_model_dir, out), reference, atol=1e-4, rtol=1e-4)
    # and the compression moved the logits (the test would notice an export of the exact merge)
    assert (our_logits(model, exact) - reference).abs().max() > 1e-3


def test_merge_with_a_budget_meets_it_against_the_exact_merge(tiny_model, adapter_dirs):
    model, tokenizer = tiny_model
    pool = [read_peft_adapter(path, adapter_id=name) for name, path in adapter_dirs.items()]
    exact = merge_adapters(model, tokenizer, None, pool, preset("average"))
    budget = merge_adapters(model, tokenizer, None, pool, preset("average").with_overrides(max_error=0.05))
    record = budget.compression
    assert not exact.compression["compressed"] and record["compressed"] and record["max_error"] == 0.05
    for path, module in budget.adapter.modules.items():
        reference = exact.adapter.modules[path].delta(torch.float64)
        error = float((module.delta(torch.float64) - reference).norm() / reference.norm())
        assert error <= 0.05 + 1e-9
        assert record["modules"][path]["error"] == pytest.approx(error, rel=1e-5, abs=1e-8)
        assert module.rank == min(record["rank"], exact.adapter.modules[path].rank)


def test_nonadaptive_budget_is_measured_against_the_exact_dense_merge(tiny_model, adapter_dirs):
    model, tokenizer = tiny_model
    pool = [read_peft_adapter(path, adapter_id=name) for name, path in adapter_dirs.items()]
    outcome = merge_adapters(model, tokenizer, None, pool, preset("ties").with_overrides(max_error=0.3))
    record = outcome.compression
    assert record["compressed"] and record["rank"] < 64 and 0 < record["max_relative_error"] <= 0.3
    exact = merge_adapters(model, tokenizer, None, pool, preset("ties").with_overrides(max_rank=10**6))
    for path, module in outcome.adapter.modules.items():
        reference = exact.adapter.modules[path].delta(torch.float64)
        error = float((module.delta(torch.float64) - reference).norm() / reference.norm())
        assert record["modules"][path]["error"] == pytest.approx(error, rel=1e-4, abs=1e-6)


def test_exact_rank_above_vllms_ceiling_uses_the_default_budget(tmp_path, tiny_model, tiny_model_dir,
                                                                rank32_adapter_dir):
    model, tokenizer = tiny_model
    path = rank32_adapter_dir
    copies = VLLM_MAX_RANK // 32 + 1  # 17 x rank 32 = 544 concatenated: not servable exactly
    pool = [read_peft_adapter(path, adapter_id=f"copy{i}") for i in range(copies)]
    outcome = merge_adapters(model, tokenizer, None, pool, preset("average"))
    record = outcome.compression
    assert f"needs rank {32 * copies}, above {VLLM_MAX_RANK}" in record["note"]
    assert record["max_error"] == DEFAULT_MAX_ERROR and record["rank"] == 32  # the copies' true rank
    assert record["max_relative_error"] < 1e-5
    out = export_merge(outcome.adapter, tmp_path / "merged", "org/tiny", "average", [], outcome.record())
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 32
    torch.testing.assert_close(peft_logits(tiny_model_dir, out), our_logits(model, read_peft_adapter(path)),
                               atol=1e-4, rtol=1e-4)
