"""Save a merge as a standard, servable PEFT LoRA adapter with a model card and a JSON record."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from lora_recycle import __version__
from lora_recycle.adapters.base_model_id import BaseModelId, is_hub_id
from lora_recycle.adapters.card import write_card
from lora_recycle.adapters.lora import LoraAdapter, LoraModule
from lora_recycle.adapters.merge_card import MergeCardInfo, merge_card
from lora_recycle.adapters.peft_io import write_peft_adapter

RECORD_NAME = "merge_result.json"
RECORD_FORMAT_VERSION = 1  # of merge_result.json, whichever writer: adapter, full model or Arrow library


def write_record(out_dir: Path, method: str, record: dict) -> None:
    """``merge_result.json``: the merge's JSON record next to the weights, headed by its format and method."""
    full = {"format_version": RECORD_FORMAT_VERSION, "lora_recycle_version": __version__, "method": method, **record}
    (out_dir / RECORD_NAME).write_text(json.dumps(full, indent=2, default=float) + "\n", encoding="utf-8")


def export_merge(
    adapter: LoraAdapter, out_dir: str | Path, base_model: str | BaseModelId, method: str, sources: list[dict],
    record: dict, dtype: torch.dtype = torch.float32,
) -> Path:
    """Write ``out_dir`` with ``adapter_config.json``, ``adapter_model.safetensors`` (factors in ``dtype``), a
    Hub-convention ``README.md`` and ``merge_result.json`` (method, sources with licenses, coefficients, metrics).

    ``base_model`` is the base's Hub id (see ``adapters.base_model_id``; a plain string that is not one is taken as a
    local path). ``sources`` holds one dict per merged adapter (``id``, ``license``, ``source``); ``record``'s
    ``coefficients``, ``compression`` and ``fresh_lora`` (as ``MergeOutcome.record()`` has them) also go into the card.
    """
    if isinstance(base_model, str):
        base_model = BaseModelId(base_model, "option" if is_hub_id(base_model, require_namespace=False)
                                 and not Path(base_model).exists() else "path")
    out_dir = Path(out_dir)
    write_peft_adapter(adapter, out_dir, base_model.name, servable=True, dtype=dtype)
    config = json.loads((out_dir / "adapter_config.json").read_text())
    dtype_name = str(dtype).removeprefix("torch.")
    record = {"base_model": base_model.name, "base_model_source": base_model.source, "rank": config["r"],
              "dtype": dtype_name, "sources": sources, **record}
    write_record(out_dir, method, record)
    info = MergeCardInfo(base_model.name, base_model.is_hub_id, method, sources, record.get("coefficients") or {},
                         config["r"], dtype_name, record.get("compression"), __version__, record.get("fresh_lora"))
    write_card(out_dir, *merge_card(info, RECORD_NAME))
    return out_dir


def as_stored(adapter: LoraAdapter, dtype: torch.dtype) -> LoraAdapter:
    """``adapter`` exactly as ``export_merge`` stores it in ``dtype`` (scales folded into B, then rounded), back
    in float32: what ``--evaluate`` should score, so the number describes the file."""
    modules = {path: LoraModule(m.A.to(dtype).float(), (m.scale * m.B).to(dtype).float(), 1.0)
               for path, m in adapter.modules.items()}
    return replace(adapter, modules=modules)
