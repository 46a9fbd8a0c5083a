"""The model card of a merged adapter, following the Hub's conventions for PEFT adapters.

Front matter as PEFT writes it (``base_model``, ``library_name: peft``, ``pipeline_tag``, tags with
``base_model:adapter:<id>``, which is how the Hub lists an adapter under its base) plus a ``license`` derived
from the merged adapters' licenses; the body has a table of the merged adapters with license and coefficient.
Pure: data in, ``(card_data, markdown)`` out; ``adapters.card.write_card`` writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import fmean

from lora_recycle.escaping import table_cell

UNKNOWN_LICENSE = "unknown"


def combined_license(licenses: list[str | None]) -> dict[str, str]:
    """The card's license fields for a work derived from sources with ``licenses`` (None = not stated).

    One shared license is kept as is; anything else is ``license: other`` with a ``license_name`` joining
    every distinct license (``apache-2.0-and-mit``), so a reader sees that each source's terms apply.

    >>> combined_license(["mit", "mit"]), combined_license(["mit", "apache-2.0"])
    ({'license': 'mit'}, {'license': 'other', 'license_name': 'apache-2.0-and-mit'})
    """
    names = sorted({str(lic).strip().lower() for lic in licenses if lic and str(lic).strip()})
    if any(not lic or not str(lic).strip() for lic in licenses):
        names.append(UNKNOWN_LICENSE)
    if not names:
        return {"license": "other", "license_name": UNKNOWN_LICENSE}
    if len(names) == 1 and names[0] != UNKNOWN_LICENSE:
        return {"license": names[0]}
    return {"license": "other", "license_name": "-and-".join(names)}


def coefficient_summary(coefficients: dict[str, dict[str, float]], adapter_id: str) -> str:
    """One adapter's coefficient for the card: the value, or mean and range over its coefficient groups."""
    values = [float(group[adapter_id]) for group in coefficients.values() if adapter_id in group]
    if not values:
        return "-"
    if len(values) == 1 or max(values) - min(values) < 1e-12:
        return f"{values[0]:.4g}"
    return f"mean {fmean(values):.4g} (min {min(values):.4g}, max {max(values):.4g}; {len(values)} groups)"


@dataclass(frozen=True)
class MergeCardInfo:
    """What the card says about one merge export."""

    base_model: str
    base_is_hub_id: bool
    method: str
    sources: list[dict]  # one per merged adapter: ``id``, ``license`` (None when not stated)
    coefficients: dict[str, dict[str, float]] = field(default_factory=dict)
    rank: int = 0
    dtype: str = "float32"
    compression: dict | None = None  # ``fit_export_rank``'s record, when the update was compressed
    version: str = ""
    fresh_lora: dict | None = None  # pi-Tuning: ``MergeOutcome.fresh_lora`` (whether a fresh LoRA was added)


def merge_card(info: MergeCardInfo, record_name: str = "merge_result.json") -> tuple[dict, str]:
    """``(card_data, markdown body)`` for a merged adapter export."""
    tags = ["lora", "transformers", "lora-recycle", "merge", info.method]
    data: dict = {}
    if info.base_is_hub_id:
        data["base_model"] = info.base_model
        tags.insert(0, f"base_model:adapter:{info.base_model}")
    data.update(library_name="peft", **combined_license([s.get("license") for s in info.sources]),
                pipeline_tag="text-generation", tags=tags)
    base = f"[`{info.base_model}`](https://huggingface.co/{info.base_model})" if info.base_is_hub_id \
        else f"`{info.base_model}` (a local model; its Hub id was not known)"
    lines = [f"# Merged LoRA ({info.method}) for {info.base_model}", "",
             f"A LoRA adapter for {base}, made by lora-recycle {info.version} by merging {len(info.sources)} "
             f"adapters with `{info.method}`.", "",
             "## Use", "", "```python", "from peft import PeftModel",
             "from transformers import AutoModelForCausalLM", "",
             f'base = AutoModelForCausalLM.from_pretrained("{info.base_model}")',
             'model = PeftModel.from_pretrained(base, "<this adapter>")', "```", "",
             f"Serving with vLLM: `vllm serve {info.base_model} --enable-lora --max-lora-rank {info.rank} "
             "--lora-modules merged=<this adapter>`.", "",
             "## Format", "",
             f"One uniform rank {info.rank} (a rank vLLM serves), scales folded into `lora_B`, "
             f"`lora_alpha = r`; weights stored in {info.dtype}.",
             _compression_line(info.compression), "",
             "## Merged adapters", "",
             "| adapter | license | coefficient |", "| --- | --- | --- |"]
    for source in info.sources:
        lines.append(f"| {table_cell(source.get('id'))} | {table_cell(source.get('license') or UNKNOWN_LICENSE)} "
                     f"| {coefficient_summary(info.coefficients, str(source.get('id')))} |")
    lines += _fresh_lora_lines(info.fresh_lora, info.coefficients)
    lines += ["", "Each merged adapter's license applies to this derivative work.",
              f"Every coefficient, the settings and the metrics are in `{record_name}`."]
    return data, "\n".join(lines)


def _compression_line(compression: dict | None) -> str:
    if not compression or not compression.get("compressed"):
        return "The merged update is exported exactly (no rank compression)."
    budget = compression.get("max_error")
    rule = f"error budget {budget:g}" if budget is not None else f"rank cap {compression.get('max_rank')}"
    return (f"Rank-compressed ({rule}): relative Frobenius error per module at most "
            f"{compression['max_relative_error']:.4f} (mean {compression['mean_relative_error']:.4f}); "
            "every module's rank and error are in the record.")


def _fresh_lora_lines(fresh: dict | None, coefficients: dict[str, dict[str, float]]) -> list[str]:
    """pi-Tuning's fresh LoRA, said either way: trained beside the adapters (its row), or not added and why."""
    if not fresh:
        return []
    if not fresh.get("added", True):
        return ["", "The adapters' own factors were trained with the coefficients (pi-Tuning); no fresh LoRA was "
                f"added: {table_cell(fresh.get('reason'))}."]
    fresh_id = str(fresh.get("id"))
    return [f"| {table_cell(fresh_id)} (fresh LoRA) | none (trained in this merge) | "
            f"{coefficient_summary(coefficients, fresh_id)} |", "",
            "The adapters' own factors were trained with the coefficients (pi-Tuning), beside one fresh LoRA "
            f"(rank {fresh.get('rank')}, scale {fresh.get('scale', 0):.4g}, {fresh.get('modules')} modules; "
            "A ~ N(0, 0.01), B = 0 at the start)."]
