"""Read mlx-lm LoRA adapters (``adapters.safetensors``) into the canonical form.

mlx-lm stores ``lora_a [in, r]`` and ``lora_b [r, out]`` (computing ``y += scale * (x @ lora_a) @ lora_b``)
under keys like ``model.layers.0.self_attn.q_proj.lora_a``, with an absolute ``lora_parameters.scale``.
Canonical factors are therefore ``A = lora_a.T`` and ``B = lora_b.T`` with that scale as is.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lora_recycle.adapters.card import read_card_data
from lora_recycle.adapters.formats import MLX_WEIGHTS_NAME, mlx_factor, mlx_lora_settings
from lora_recycle.adapters.lora import LoraAdapter
from lora_recycle.adapters.paths import ambiguous_factor, peft_key
from lora_recycle.adapters.peft_io import adapter_from_tensors, read_adapter_config
from lora_recycle.adapters.untrusted import AdapterProblem
from lora_recycle.adapters.weights_file import load_safetensors
from lora_recycle.errors import UserError


def mlx_to_peft(tensors: dict[str, torch.Tensor], config: dict, where: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Turn mlx tensors and config into PEFT-style ones (transposed factors, ``lora_alpha = scale * r``)."""
    rank, scale = mlx_lora_settings(config, where)
    ambiguous = ambiguous_factor(tensors, mlx_factor)  # e.g. with and without ``language_model.``
    if ambiguous is not None:
        raise AdapterProblem("ambiguous_key", f"{where}: {ambiguous}; refusing to pick one")
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        parsed = mlx_factor(key)
        # Non-LoRA keys (DoRA magnitudes ``.m``, full weights) pass through so the PEFT reader refuses them.
        converted[peft_key(*parsed) if parsed else key] = tensor.T.contiguous() if parsed else tensor
    peft_config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": scale * rank,
        "use_rslora": False,
        "base_model_name_or_path": config.get("model") or config.get("base_model"),
    }
    return converted, peft_config


def read_mlx_adapter(
    directory: str | Path, adapter_id: str | None = None, expected_sha256: str | None = None
) -> LoraAdapter:
    """Read an mlx-lm LoRA adapter directory into canonical form; raises UserError naming the problem."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: adapter directory not found")
    config = read_adapter_config(directory)
    weights = directory / MLX_WEIGHTS_NAME
    if not weights.is_file():
        raise UserError(f"{directory}: no {MLX_WEIGHTS_NAME} found")
    tensors = load_safetensors(weights, expected_sha256)
    peft_tensors, peft_config = mlx_to_peft(tensors, config, str(directory))
    adapter = adapter_from_tensors(peft_tensors, peft_config, str(directory), adapter_id or str(directory))
    card = read_card_data(directory)
    adapter.metadata.update(
        format="mlx",
        mlx_scale=mlx_lora_settings(config, str(directory))[1],
        license=card.get("license"),
        card=card,
        source=str(directory),
    )
    return adapter
