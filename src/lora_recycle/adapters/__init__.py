"""Canonical LoRA adapters and their PEFT on-disk form."""

from typing import TYPE_CHECKING

from lora_recycle.lazy import lazy_namespace

if TYPE_CHECKING:
    from lora_recycle.adapters.lora import LoraAdapter, LoraModule, union_paths
    from lora_recycle.adapters.lora_config import lora_scale
    from lora_recycle.adapters.mlx_io import read_mlx_adapter
    from lora_recycle.adapters.paths import MODULE_TYPES, Coordinates, canonical_path, coordinates
    from lora_recycle.adapters.peft_io import read_peft_adapter, write_peft_adapter
    from lora_recycle.adapters.reader import read_adapter

# public name -> module that defines it (imported on first use: see lora_recycle.lazy)
_EXPORTS = {
    "LoraAdapter": "lora_recycle.adapters.lora",
    "LoraModule": "lora_recycle.adapters.lora",
    "lora_scale": "lora_recycle.adapters.lora_config",
    "union_paths": "lora_recycle.adapters.lora",
    "read_mlx_adapter": "lora_recycle.adapters.mlx_io",
    "MODULE_TYPES": "lora_recycle.adapters.paths",
    "Coordinates": "lora_recycle.adapters.paths",
    "canonical_path": "lora_recycle.adapters.paths",
    "coordinates": "lora_recycle.adapters.paths",
    "read_peft_adapter": "lora_recycle.adapters.peft_io",
    "write_peft_adapter": "lora_recycle.adapters.peft_io",
    "read_adapter": "lora_recycle.adapters.reader",
}

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

__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, globals())
