"""What ``merge`` tells a person about its export: the base model's id, the chosen rank and each module's error."""

from __future__ import annotations

from lora_recycle.adapters.paths import MODULE_TYPES, coordinates


def rank_summary(compression: dict) -> str:
    """One line: the file's rank, the rule that chose it, and the worst and mean relative error."""
    if not compression.get("compressed"):
        return f"exported exactly at rank {compression['rank']} (no compression)"
    rule = (f"--max-error {compression['max_error']:g}" if compression.get("max_error") is not None
            else f"--max-rank {compression.get('max_rank')}")
    return (f"exported at rank {compression['rank']} for {rule} (modules need up to rank "
            f"{compression['needed_rank']}); relative error per module max {compression['max_relative_error']:.4f}, "
            f"mean {compression['mean_relative_error']:.4f}")


def module_table(compression: dict) -> list[str]:
    """Per module ``needed rank/exported error``: one row per layer, one column per module type."""
    cells: dict[int, dict[str, str]] = {}
    for path, m in compression.get("modules", {}).items():
        c = coordinates(path)
        cells.setdefault(c.layer, {})[c.module_type] = f"{m['needed_rank']}/{m['error']:.4f}"
    types = [t for t in MODULE_TYPES if any(t in row for row in cells.values())]
    lines = ["layer " + " ".join(f"{t:>12}" for t in types) + "   (needed rank/relative error)"]
    for layer in sorted(cells):
        lines.append(f"{layer:>5} " + " ".join(f"{cells[layer].get(t, '-'):>12}" for t in types))
    return lines


def export_report(summary: dict) -> list[str]:
    """Every line for people after a merge: the base model named, the rank summary, the per-module table."""
    lines = [] if summary.get("merged_into_base") else [
        f"base model: {summary['base_model']} (from {summary['base_model_source']}); "
        f"stored in {summary['save_dtype']}"]
    compression = summary.get("compression")
    if compression:
        lines.append(rank_summary(compression))
        if compression.get("compressed"):
            lines += module_table(compression)
    return lines
