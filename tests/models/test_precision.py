"""bf16 training (autocast, fp32 LoRA factors) reaches the fp32 loss on a toy task; precision choice."""

import pytest
import torch

from lora_recycle.errors import UserError
from lora_recycle.models import precision as prec
from lora_recycle.tasks import load_task
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
    monkeypatch.setattr(prec, "measured_bf16_speedup", lambda device: 2.5)
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


def test_auto_precision_needs_bf16_to_measure_faster(monkeypatch):
    """Flags promising bf16 are not enough: where a model-shaped bf16 matmul is not clearly faster, auto is fp32."""
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    monkeypatch.setattr(prec, "measured_bf16_speedup", lambda device: 0.4)  # emulated: slower than fp32
    assert prec.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(prec, "measured_bf16_speedup", lambda device: prec.AUTO_BF16_MIN_SPEEDUP + 0.1)
    assert prec.resolve_precision("auto", "cpu") == "bf16"


def _tied_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval().requires_grad_(False)


def test_lowered_weights_give_autocasts_numbers_and_put_the_originals_back():
    """Frozen fp32 linear weights stored in bf16 for the region: the same logits and input gradients as autocast
    casting them per call, the tied input embedding untouched, every original Parameter back afterwards."""
    model = _tied_model()
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(1))
    originals = {name: p for name, p in model.named_parameters()}

    def run():
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeds).logits
        logits.float().logsumexp(-1).sum().backward()
        return logits.detach().float(), embeds.grad

    with prec.attention_for(model, "bf16"), prec.autocast("bf16"):  # the same attention kernel as computing_in
        plain_logits, plain_grad = run()
    with prec.computing_in(model, "bf16"):
        assert model.lm_head.weight.dtype == torch.bfloat16
        assert model.get_input_embeddings().weight.dtype == torch.float32  # untied for the region only
        assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
        low_logits, low_grad = run()
    assert torch.equal(plain_logits, low_logits) and torch.equal(plain_grad, low_grad)
    assert all(p is originals[name] for name, p in model.named_parameters())
    assert model.lm_head.weight is model.get_input_embeddings().weight and model.lm_head.weight.dtype == torch.float32


def test_adapters_attached_or_folded_under_lowered_weights_keep_fp32_numbers():
    """A merge attached in a bf16 region keeps fp32 factors; an adapter folded there is rounded once, from fp32."""
    from lora_recycle.adapters.lora import LoraAdapter, LoraModule
    from lora_recycle.models.fold import folded
    from lora_recycle.models.inject import attached

    model = _tied_model()
    generator = torch.Generator().manual_seed(2)
    path = "model.layers.0.self_attn.q_proj"
    module = LoraModule(torch.randn(4, 32, generator=generator), torch.randn(32, 4, generator=generator), 0.5)
    adapter = LoraAdapter({path: module}, "a")
    expected = (model.get_submodule(path).weight.float() + module.delta(torch.float32)).to(torch.bfloat16)
    with prec.lowered_weights(model, "bf16"):
        with attached(model, [adapter]) as merged:
            assert merged.layers[path].A_cat.dtype == torch.float32
        with folded(model, adapter):
            assert torch.equal(model.get_submodule(path).weight, expected)
    assert model.get_submodule(path).weight.dtype == torch.float32
