"""Save a merge as a standard, servable PEFT LoRA adapter with a model card and a JSON record."""

from __future__ import annotations

import json
from pathlib import Path

from lora_recycle import __version__
from lora_recycle.adapters.card import write_card
from lora_recycle.adapters.lora import LoraAdapter
from lora_recycle.adapters.peft_io import write_peft_adapter

RECORD_NAME = "merge_result.json"


def _license_of(sources: list[dict]) -> str:
    licenses = sorted({str(s.get("license")) for s in sources if s.get("license")})
    return licenses[0] if len(licenses) == 1 else "other"


def write_record(out_dir: Path, record: dict) -> None:
    """``merge_result.json``: the merge's JSON record next to the weights."""
    (out_dir / RECORD_NAME).write_text(json.dumps(record, indent=2, default=float) + "\n", encoding="utf-8")


def export_merge(
    adapter: LoraAdapter, out_dir: str | Path, base_model: str, method: str, sources: list[dict], record: dict
) -> Path:
    """Write ``out_dir`` with ``adapter_config.json``, ``adapter_model.safetensors``, ``README.md`` and
    ``merge_result.json`` (method, sources with licenses, coefficients, metrics).

    ``sources`` holds one dict per merged adapter (``id``, ``license``, ``source``).
    """
    out_dir = Path(out_dir)
    write_peft_adapter(adapter, out_dir, base_model, servable=True)
    config = json.loads((out_dir / "adapter_config.json").read_text())
    record = {"format_version": 1, "lora_recycle_version": __version__, "method": method,
              "base_model": base_model, "rank": config["r"], "sources": sources, **record}
    write_record(out_dir, record)
    lines = [f"# Merged LoRA ({method})", "",
             f"Made by lora-recycle {__version__} from {len(sources)} adapters on `{base_model}`.",
             f"Exported exactly as one rank-{config['r']} LoRA (scales folded into B, lora_alpha = r).", "",
             "| adapter | license |", "| --- | --- |"]
    lines += [f"| {s.get('id')} | {s.get('license') or 'unknown'} |" for s in sources]
    lines += ["", f"Coefficients and metrics: see `{RECORD_NAME}`."]
    write_card(
        out_dir,
        {"base_model": base_model, "library_name": "peft", "license": _license_of(sources),
         "tags": ["lora", "lora-recycle", "merge", method],
         "merged_from": [s.get("id") for s in sources]},
        "\n".join(lines),
    )
    return out_dir
