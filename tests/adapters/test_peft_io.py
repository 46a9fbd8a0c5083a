import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lora_recycle.adapters import read_peft_adapter, write_peft_adapter
from lora_recycle.errors import UserError


def peft_deltas(model_dir, adapter_dir) -> dict[str, torch.Tensor]:
    """Each module's delta as PEFT itself computes it (its own scaling rules)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model_dir)), str(adapter_dir))
    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "get_delta_weight") and "default" in getattr(module, "lora_A", {}):
            path = name.removeprefix("base_model.model.")
            out[path] = module.get_delta_weight("default").detach()
    return out


@pytest.mark.parametrize("name", ["all_r4", "qv_r8", "rslora_r2", "patterns"])
def test_read_matches_peft_scaling(tiny_model_dir, adapter_dirs, name):
    adapter = read_peft_adapter(adapter_dirs[name])
    reference = peft_deltas(tiny_model_dir, adapter_dirs[name])
    assert set(adapter.modules) == set(reference)
    for path, module in adapter.modules.items():
        torch.testing.assert_close(module.delta(), reference[path], atol=1e-6, rtol=1e-5)


def test_patterns_give_per_module_ranks(adapter_dirs):
    adapter = read_peft_adapter(adapter_dirs["patterns"])
    assert adapter.modules["model.layers.0.self_attn.v_proj"].rank == 6
    assert adapter.modules["model.layers.1.mlp.down_proj"].rank == 2
    assert adapter.modules["model.layers.0.mlp.down_proj"].rank == 4
    assert adapter.modules["model.layers.0.self_attn.o_proj"].scale == pytest.approx(3 / 4)


@pytest.mark.parametrize("servable", [True, False])
@pytest.mark.parametrize("name", ["rslora_r2", "patterns", "qv_r8"])
def test_round_trip(tmp_path, adapter_dirs, tiny_model_dir, name, servable):
    adapter = read_peft_adapter(adapter_dirs[name])
    out = write_peft_adapter(adapter, tmp_path / "out", "tiny", servable=servable)
    again = read_peft_adapter(out)
    assert set(again.modules) == set(adapter.modules)
    for path, module in adapter.modules.items():
        torch.testing.assert_close(again.modules[path].delta(), module.delta(), atol=1e-6, rtol=1e-6)
    config = json.loads((out / "adapter_config.json").read_text())
    if servable:
        assert config["r"] in (1, 8, 16, 32, 64) and config["lora_alpha"] == config["r"]
        assert not config["use_rslora"] and not config["rank_pattern"]
    else:
        assert {m.rank for m in again.modules.values()} == {m.rank for m in adapter.modules.values()}
    # PEFT itself reads what we wrote with the same deltas
    reference = peft_deltas(tiny_model_dir, out)
    for path, module in adapter.modules.items():
        torch.testing.assert_close(reference[path], module.delta(), atol=1e-6, rtol=1e-5)


def test_key_variants(tmp_path, adapter_dirs):
    source = adapter_dirs["all_r4"]
    tensors = load_file(source / "adapter_model.safetensors")
    for variant, rename in {
        "default_names": lambda k: k.replace(".weight", ".default.weight"),
        "no_prefix": lambda k: k.removeprefix("base_model.model."),
    }.items():
        target = tmp_path / variant
        target.mkdir()
        (target / "adapter_config.json").write_text((source / "adapter_config.json").read_text())
        save_file({rename(k): v for k, v in tensors.items()}, target / "adapter_model.safetensors")
        adapter = read_peft_adapter(target)
        reference = read_peft_adapter(source)
        assert set(adapter.modules) == set(reference.modules)
        for path in adapter.modules:
            torch.testing.assert_close(adapter.modules[path].delta(), reference.modules[path].delta())


def test_bad_adapter_paths_give_clear_errors(tmp_path, adapter_dirs):
    with pytest.raises(UserError, match="adapter directory not found"):
        read_peft_adapter(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="adapter_config.json: not found"):
        read_peft_adapter(empty)
    (empty / "adapter_config.json").write_text("{not json")
    with pytest.raises(UserError, match="invalid JSON"):
        read_peft_adapter(empty)
    (empty / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    with pytest.raises(UserError, match="no adapter_model.safetensors"):
        read_peft_adapter(empty)
    (empty / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{trunc")
    with pytest.raises(UserError, match="unreadable safetensors"):
        read_peft_adapter(empty)
    dora = tmp_path / "dora"
    dora.mkdir()
    config = json.loads((adapter_dirs["all_r4"] / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(UserError, match="DoRA"):
        read_peft_adapter(dora)


def test_pickle_weights_are_refused_by_default(tmp_path, adapter_dirs):
    target = tmp_path / "pickled"
    target.mkdir()
    (target / "adapter_config.json").write_text((adapter_dirs["all_r4"] / "adapter_config.json").read_text())
    torch.save(load_file(adapter_dirs["all_r4"] / "adapter_model.safetensors"), target / "adapter_model.bin")
    with pytest.raises(UserError, match="pickle"):
        read_peft_adapter(target)
    adapter = read_peft_adapter(target, allow_pickle=True)
    assert len(adapter) == len(read_peft_adapter(adapter_dirs["all_r4"]))
