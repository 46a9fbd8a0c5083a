"""bf16 training (autocast, fp32 LoRA factors) reaches the fp32 loss on a toy task; precision choice."""

import pytest
import torch

from lora_recycle.errors import UserError
from lora_recycle.tasks import load_task
from lora_recycle.tuning import precision as prec
from lora_recycle.tuning.target_lora import TargetLoraConfig, train_target_lora

# Stated tolerance: best validation losses of bf16 and fp32 runs differ by at most 10% (relative).
BF16_LOSS_TOLERANCE = 0.10


def _train(tiny_model, task_dir, tmp_path, precision):
    model, tokenizer = tiny_model
    config = TargetLoraConfig(rank=8, alpha=16, dropout=0.0, steps=40, lr=5e-3, eval_every=10, seed=0,
                              precision=precision)
    _, loop, _ = train_target_lora(model, tokenizer, load_task(task_dir), config, tmp_path / precision)
    return loop


def test_bf16_and_fp32_training_reach_the_same_loss(tiny_model, colour_task_dir, tmp_path):
    fp32 = _train(tiny_model, colour_task_dir, tmp_path, "fp32")
    bf16 = _train(tiny_model, colour_task_dir, tmp_path, "bf16")
    assert fp32.initial_val_loss == pytest.approx(bf16.initial_val_loss, rel=0.02)
    assert fp32.best_val_loss < 0.5 * fp32.initial_val_loss  # the toy task is learnt
    assert abs(bf16.best_val_loss - fp32.best_val_loss) <= BF16_LOSS_TOLERANCE * fp32.best_val_loss
    assert (tmp_path / "bf16" / "README.md").read_text().count("training_precision: bf16") == 1


@pytest.mark.parametrize("outer", ["torch", "ours"])
def test_bf16_training_nested_in_another_autocast_still_learns(tiny_model, colour_task_dir, tmp_path, outer):
    """A merge run trains its target LoRA inside the run's own autocast region; autocast's cast cache (kept
    until the outermost region exits) once froze the LoRA factors at B = 0, so nothing was learnt."""
    plain = _train(tiny_model, colour_task_dir, tmp_path / "plain", "bf16")
    region = (torch.autocast("cpu", dtype=torch.bfloat16) if outer == "torch"  # cache on, as a caller may have
              else prec.autocast("bf16", "cpu"))
    with region:
        nested = _train(tiny_model, colour_task_dir, tmp_path / "nested", "bf16")
    assert nested.best_step > 0 and nested.best_val_loss < 0.5 * nested.initial_val_loss
    assert nested.best_val_loss == pytest.approx(plain.best_val_loss, rel=1e-6)


def test_lora_factors_stay_fp32_under_bf16(tiny_model, colour_task_dir, tmp_path):
    from safetensors.torch import load_file

    _train(tiny_model, colour_task_dir, tmp_path, "bf16")
    tensors = load_file(tmp_path / "bf16" / "adapter_model.safetensors")
    assert tensors and all(t.dtype == torch.float32 for t in tensors.values())
    model, _ = tiny_model
    assert all(p.dtype == torch.float32 for p in model.parameters())  # base untouched, adapter unloaded


def test_auto_precision_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert prec.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    assert prec.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert prec.resolve_precision("auto", "cpu") == "fp32"
    assert prec.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(UserError, match="unknown precision 'half'"):
        prec.resolve_precision("half")


def test_eager_attention_only_inside_bf16_cpu_training(tiny_model):
    model, _ = tiny_model
    before = model.config._attn_implementation
    with prec.attention_for(model, "bf16"):
        assert model.config._attn_implementation == "eager"
    assert model.config._attn_implementation == before
    with prec.attention_for(model, "fp32"):
        assert model.config._attn_implementation == before
