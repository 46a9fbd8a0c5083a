"""Load a frozen base model and its tokenizer from a local transformers model directory."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from lora_recycle.errors import UserError
from lora_recycle.outputs import incomplete_reason

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(name: str | torch.dtype) -> torch.dtype:
    """``"float32" | "bfloat16" | "float16"`` (or short forms) to a torch dtype."""
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise UserError(f"unknown --dtype {name!r}: use float32, bfloat16 or float16")
    return DTYPES[name]


def resolve_device(name: str | None) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit name is checked for availability."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    return device


# Warnings the libraries address to their own callers (e.g. transformers' FutureWarning that PEFT still reads
# ``is_gradient_checkpointing``): nothing a user of lora-recycle can act on. Our own warnings are not matched.
LIBRARY_MODULES = r"(transformers|peft|accelerate|torch|huggingface_hub|safetensors)(\.|$)"


def quiet_libraries() -> None:
    """Hide the model libraries' weight-loading bars and their deprecation warnings (not the user's to fix)."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=LIBRARY_MODULES)


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(path: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32"):
    """Load ``(model, tokenizer)`` from a local directory; the model is in eval mode with frozen weights."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: not a transformers model directory (no config.json)")
    if (incomplete := incomplete_reason(path)) is not None:
        raise UserError(f"{path}: {incomplete}")
    quiet_libraries()
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=resolve_dtype(dtype), trust_remote_code=False)
    model.to(device if isinstance(device, torch.device) else resolve_device(device))
    model.eval()
    model.requires_grad_(False)
    tokenizer = load_tokenizer(path)
    context = getattr(model.config, "max_position_embeddings", None)
    if isinstance(context, int) and 0 < context < tokenizer.model_max_length:  # prompts are held to the model's
        tokenizer.model_max_length = context
    return model, tokenizer


def base_model_name(model) -> str:
    """The name to record as ``base_model_name_or_path`` for a loaded model."""
    return str(getattr(model.config, "name_or_path", "") or getattr(model, "name_or_path", ""))


_LOADED: dict[tuple[str, str, str], tuple] = {}


def cached_base_model(path: str | Path, device: str | None = "cpu", dtype: str = "float32",
                      threads: int | None = None) -> tuple:
    """``(model, tokenizer, device)``, loaded once per process: a worker (Ray or local) keeps one base model
    between the runs and selection shards it is given; ``threads`` sets torch's intra-op threads first."""
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    resolved = resolve_device(device)
    key = (str(path), str(resolved), str(dtype))
    if key not in _LOADED:
        _LOADED.clear()  # one base model per process at a time
        _LOADED[key] = load_base_model(path, resolved, dtype)
    model, tokenizer = _LOADED[key]
    return model, tokenizer, resolved
