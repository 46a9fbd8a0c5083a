"""An adapter folder's file names and config checks, without torch: the pool scan and the readers share them.

PEFT writes ``adapter_config.json`` and ``adapter_model.safetensors`` (``.bin`` for old pickles); mlx-lm writes
``adapters.safetensors`` with ``lora_parameters`` in its config.
"""

from __future__ import annotations

from pathlib import Path

from lora_recycle.adapters.untrusted import read_json_file
from lora_recycle.errors import UserError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"
MLX_WEIGHTS_NAME = "adapters.safetensors"
# mlx-lm's LoRALinear defaults, used when a config leaves them out.
DEFAULT_MLX_RANK = 8
DEFAULT_MLX_SCALE = 20.0
_MLX_PREFIXES = ("language_model.",)



def read_adapter_config(directory: Path) -> dict:
    """Parse ``adapter_config.json`` (size- and depth-capped), raising a one-line UserError naming the file."""
    config_file = Path(directory) / CONFIG_NAME
    if not config_file.is_file():
        raise UserError(f"{config_file}: not found (is {directory} a PEFT adapter directory?)")
    config = read_json_file(config_file)
    if not isinstance(config, dict):
        raise UserError(f"{config_file}: expected a JSON object")
    return config


def check_lora_config(config: dict, where: str) -> None:
    """Refuse adapter types whose weights are not a plain ``W + s B A`` update."""
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise UserError(f"{where}: peft_type {peft_type} is not LoRA")
    if config.get("use_dora"):
        raise UserError(f"{where}: DoRA adapters (use_dora=true) are not plain LoRA")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower().split("_")[0] in ("pissa", "olora", "corda", "eva", "loftq"):
        raise UserError(f"{where}: init_lora_weights={init} changes the base weights; not a plain LoRA")
    for key in ("r", "lora_alpha"):
        if key in config and not isinstance(config[key], int | float):
            raise UserError(f"{where}: field {key} must be a number, got {config[key]!r}")


def is_mlx_adapter(directory: str | Path) -> bool:
    """True for an mlx-lm adapter (``adapters.safetensors``, or ``lora_parameters`` in its config)."""
    directory = Path(directory)
    if (directory / MLX_WEIGHTS_NAME).is_file():
        return True
    config_file = directory / CONFIG_NAME
    if not config_file.is_file():
        return False
    try:
        config = read_json_file(config_file)
    except UserError:
        return False
    return isinstance(config, dict) and "lora_parameters" in config


def mlx_factor(key: str) -> tuple[str, str] | None:
    """Split an mlx key into ``(canonical module path, "A" | "B")``; None if not a LoRA factor.

    >>> mlx_factor("model.layers.0.self_attn.q_proj.lora_a")
    ('model.layers.0.self_attn.q_proj', 'A')
    """
    path, _, leaf = key.rpartition(".")
    if leaf not in ("lora_a", "lora_b") or not path:
        return None
    for prefix in _MLX_PREFIXES:
        if path.startswith(prefix):
            path = path[len(prefix) :]
    return path, leaf[-1].upper()


def mlx_lora_settings(config: dict, where: str) -> tuple[int, float]:
    """``(rank, absolute scale)`` of an mlx-lm adapter config; UserError if it is not a plain LoRA."""
    kind = str(config.get("fine_tune_type", "lora")).lower()
    if kind != "lora":
        raise UserError(f"{where}: fine_tune_type {kind} is not LoRA")
    params = config.get("lora_parameters") or {}
    if not isinstance(params, dict):
        raise UserError(f"{where}: field lora_parameters must be an object")
    rank, scale = params.get("rank", DEFAULT_MLX_RANK), params.get("scale", DEFAULT_MLX_SCALE)
    for name, value in (("lora_parameters.rank", rank), ("lora_parameters.scale", scale)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{where}: field {name} must be a number, got {value!r}")
    return int(rank), float(scale)
