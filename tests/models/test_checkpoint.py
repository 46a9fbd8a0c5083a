"""A base model's skeleton: every linear layer's shape and ||W||_F without loading the model, or a full load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lora_recycle.adapters import LoraAdapter, LoraModule, read_peft_adapter
from lora_recycle.adapters.untrusted import AdapterProblem
from lora_recycle.errors import UserError
from lora_recycle.models.checkpoint import BaseSkeleton, open_skeleton
from lora_recycle.models.inject import require_fits
from lora_recycle.outputs import INCOMPLETE_MARKER

Q = "model.layers.0.self_attn.q_proj"


def _norms(model: nn.Module) -> dict[str, float]:
    return {path: float(torch.linalg.vector_norm(m.weight.detach(), dtype=torch.float64))
            for path, m in model.named_modules() if isinstance(m, nn.Linear)}


def test_the_skeleton_reads_every_linear_norm_the_loaded_model_has(tiny_model_dir, tiny_model):
    skeleton = open_skeleton(tiny_model_dir)
    assert isinstance(skeleton, BaseSkeleton)
    assert next(skeleton.model.parameters()).device.type == "meta"  # no weights in memory
    expected = _norms(tiny_model[0])
    assert set(skeleton.weights) == set(expected) and "lm_head" in expected  # lm_head is tied to the embedding
    assert skeleton.weights["lm_head"][1] == "model.embed_tokens.weight"
    for path, norm in expected.items():
        assert skeleton.weight_norm(path) == pytest.approx(norm, rel=1e-12)


def test_a_sharded_checkpoint_reads_the_same(tiny_model_dir, tiny_model, tmp_path):
    model, tokenizer = tiny_model
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    skeleton = open_skeleton(tmp_path / "sharded")
    files = {file for file, _ in skeleton.weights.values()}
    assert len(files) > 1
    for path, norm in _norms(model).items():
        assert skeleton.weight_norm(path) == pytest.approx(norm, rel=1e-12)


def test_require_fits_refuses_the_same_inputs_on_the_skeleton(tiny_model_dir, tiny_model):
    model, _ = tiny_model
    big = LoraAdapter({Q: LoraModule(torch.ones(1, 64), torch.full((64, 1), 1e3), 1.0)}, "big")
    narrow = LoraAdapter({Q: LoraModule(torch.ones(1, 32), torch.ones(32, 1), 1.0)}, "narrow")
    embedding = LoraAdapter({"model.embed_tokens": LoraModule(torch.ones(1, 64), torch.ones(1, 1), 1.0)}, "emb")
    fine = LoraAdapter({Q: LoraModule(torch.ones(1, 64) * 1e-2, torch.ones(64, 1) * 1e-2, 1.0)}, "fine")
    for base in (model, open_skeleton(tiny_model_dir)):
        with pytest.raises(AdapterProblem, match=f"adapter big: module {Q} has .* above the 100"):
            require_fits(base, [big])
        with pytest.raises(UserError, match=r"adapter narrow: module .* has shape \(32, 32\), the base model's is"):
            require_fits(base, [narrow])
        with pytest.raises(UserError, match="module model.embed_tokens is not a linear layer"):
            require_fits(base, [embedding])
        require_fits(base, [fine])


def _copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def _edit_config(model: Path, **fields) -> None:
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, **fields}))


@pytest.mark.parametrize("change", ["quantised", "no safetensors", "renamed tensor", "reshaped tensor", "bad config",
                                    "interrupted", "fp8 weight", "padded file"])
def test_anything_unusual_loads_the_full_model_instead(tiny_model_dir, tmp_path, change):
    model = _copy(tiny_model_dir, tmp_path)
    weights = load_file(model / "model.safetensors")
    if change == "quantised":
        _edit_config(model, quantization_config={"quant_method": "bitsandbytes", "load_in_8bit": True})
    elif change == "no safetensors":
        (model / "model.safetensors").unlink()
    elif change == "renamed tensor":
        weights[f"base.{Q}.weight"] = weights.pop(f"{Q}.weight")
        save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    elif change == "reshaped tensor":
        weights[f"{Q}.weight"] = weights[f"{Q}.weight"][:32]
        save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    elif change == "fp8 weight":  # no numpy view reads it: the loaded model's norms are used instead
        weights[f"{Q}.weight"] = weights[f"{Q}.weight"].to(torch.float8_e4m3fn)
        save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    elif change == "padded file":  # bytes our header parser refuses: loading the model says what is wrong
        with open(model / "model.safetensors", "ab") as handle:
            handle.write(b"\0" * 8)
    elif change == "bad config":
        _edit_config(model, model_type="no-such-architecture")
    else:
        (model / INCOMPLETE_MARKER).write_text("")
    assert open_skeleton(model) is None


@pytest.mark.parametrize("method", ["ties", "average"])
def test_a_fixed_coefficient_merge_never_loads_the_model(tiny_model_dir, adapter_dirs, colour_task_dir, tmp_path,
                                                         monkeypatch, method):
    """The merge reads the base's norms lazily; its export equals the same merge on the loaded model (and, for
    ``average``, the uniform mix of the attached adapters it was computed as before)."""
    import lora_recycle.models.loading as loading
    from lora_recycle.cli import main
    from lora_recycle.models.inject import MergedModel
    from lora_recycle.recipe.merge import merge_adapters
    from lora_recycle.recipe.presets import preset

    adapters = [adapter_dirs["all_r4"], adapter_dirs["qv_r8"], adapter_dirs["patterns"]]
    pool = [read_peft_adapter(a, adapter_id=a.name) for a in adapters]
    model, tokenizer = loading.load_base_model(tiny_model_dir)
    loads = []
    real = loading.load_base_model
    monkeypatch.setattr(loading, "load_base_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    out = tmp_path / method
    assert main(["merge", "--model", str(tiny_model_dir), "--adapters", *map(str, adapters), "--method", method,
                 "--out", str(out)]) == 0
    assert loads == []
    expected = {path: m.delta() for path, m in merge_adapters(model, tokenizer, None, pool,
                                                              preset(method)).adapter.modules.items()}
    if method == "average":
        mixed = MergedModel(model, pool, "model", "linear", "uniform")
        try:
            before = {path: m.delta() for path, m in mixed.merged_adapter().modules.items()}
        finally:
            mixed.detach()
        assert before.keys() == expected.keys()
        for path, delta in before.items():
            torch.testing.assert_close(expected[path], delta, rtol=1e-6, atol=1e-7)
    written = read_peft_adapter(out)
    assert set(written.modules) == set(expected)
    for path, delta in expected.items():
        torch.testing.assert_close(written.modules[path].delta(), delta, rtol=1e-5, atol=1e-6)
    # scoring the merge runs the model, so it loads (once)
    assert main(["merge", "--model", str(tiny_model_dir), "--adapters", *map(str, adapters), "--method", method,
                 "--task", str(colour_task_dir), "--evaluate", "test", "--out", str(tmp_path / "scored")]) == 0
    assert len(loads) == 1


def test_an_unscored_arrow_library_never_loads_the_model(tiny_model_dir, adapter_dirs, colour_task_dir, tmp_path,
                                                         monkeypatch):
    """Arrow without --evaluate checks the experts against the skeleton; the library equals the one a scored run
    (which loads the model) writes, file for file."""
    import lora_recycle.models.loading as loading
    from lora_recycle.cli import main

    loads = []
    real = loading.load_base_model
    monkeypatch.setattr(loading, "load_base_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    experts = ["--adapters", str(adapter_dirs["all_r4"]), str(adapter_dirs["patterns"]), "--general-adapters",
               str(adapter_dirs["qv_r8"])]
    unscored, scored = tmp_path / "unscored", tmp_path / "scored"
    assert main(["merge", "--model", str(tiny_model_dir), "--method", "arrow_gks", *experts, "--out",
                 str(unscored)]) == 0
    assert loads == []
    assert main(["merge", "--model", str(tiny_model_dir), "--method", "arrow_gks", *experts, "--task",
                 str(colour_task_dir), "--evaluate", "test", "--out", str(scored)]) == 0
    assert len(loads) == 1
    files = sorted(p.relative_to(unscored) for p in unscored.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(scored) for p in scored.rglob("*") if p.is_file())
    for name in files:
        if name.suffix == ".safetensors":
            left, right = load_file(unscored / name), load_file(scored / name)
            assert left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)
        elif name.suffix == ".json" and name.name != "merge_result.json":
            assert (unscored / name).read_text() == (scored / name).read_text(), name
