"""Canonical LoRA adapters and their PEFT on-disk form."""

from lora_recycle.adapters.lora import LoraAdapter, LoraModule, lora_scale, union_paths
from lora_recycle.adapters.mlx_io import read_mlx_adapter
from lora_recycle.adapters.paths import MODULE_TYPES, Coordinates, canonical_path, coordinates
from lora_recycle.adapters.peft_io import read_peft_adapter, write_peft_adapter
from lora_recycle.adapters.reader import read_adapter

__all__ = [
    "MODULE_TYPES",
    "Coordinates",
    "LoraAdapter",
    "LoraModule",
    "canonical_path",
    "coordinates",
    "lora_scale",
    "read_adapter",
    "read_mlx_adapter",
    "read_peft_adapter",
    "union_paths",
    "write_peft_adapter",
]
