"""Save base + merged update as a full transformers model directory (the ``--merge-into-base`` export)."""

from __future__ import annotations

from pathlib import Path

from lora_recycle.adapters.export import write_record
from lora_recycle.adapters.finite import require_finite, require_finite_tensors
from lora_recycle.adapters.lora import LoraAdapter
from lora_recycle.models.fold import folded
from lora_recycle.models.inject import find_linear


def save_merged_model(model, tokenizer, adapter: LoraAdapter, out_dir: str | Path, method: str, sources: list[dict],
                      record: dict) -> Path:
    """Save base + merged update as a full transformers model directory (weights folded, exactly once)."""
    out_dir = Path(out_dir)
    require_finite(adapter, "merged result")
    with folded(model, adapter):
        weights = {path: find_linear(model, path, [adapter.adapter_id]).weight for path in adapter.modules}
        require_finite_tensors(weights, "model with the merge folded in")
        model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    write_record(out_dir, method, {"sources": sources, "merged_into_base": True, **record})
    return out_dir
