"""lora-recycle: recycle LoRA adapters with adaptive merging.

The public API is importable from the package root; names load on first use, so ``import lora_recycle``
(and the CLI's start-up) stays cheap::

    from lora_recycle import load_task, merge_adapters, preset
"""

from __future__ import annotations

from lora_recycle.lazy import lazy_namespace

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "merge_adapters": "lora_recycle.recipe.merge",
    "MergeOutcome": "lora_recycle.recipe.merge",
    "MergeSettings": "lora_recycle.recipe.settings",
    "METHODS": "lora_recycle.recipe.presets",
    "preset": "lora_recycle.recipe.presets",
    "run_merge": "lora_recycle.recipe.run",
    "ExportOptions": "lora_recycle.recipe.run",
    "PoolRequest": "lora_recycle.recipe.pool",
    "Pool": "lora_recycle.recipe.pool",
    "assemble_pool": "lora_recycle.recipe.pool",
    "load_task": "lora_recycle.tasks.format",
    "Task": "lora_recycle.tasks.format",
    "evaluate_task": "lora_recycle.tasks.scoring",
    "scan_pool": "lora_recycle.pool.scan",
    "Catalog": "lora_recycle.pool.catalog",
    "load_pool_adapters": "lora_recycle.pool.loading",
    "LoraAdapter": "lora_recycle.adapters.lora",
    "read_adapter": "lora_recycle.adapters.reader",
    "export_merge": "lora_recycle.adapters.export",
    "load_base_model": "lora_recycle.models.loading",
}

__all__ = ["__version__", *_EXPORTS]

__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, globals())
