"""The paper's own numbers, for reports to print beside ours: Table 2 of Liu et al., *The Appeal and Reality of
Recycling LoRAs with Adaptive Merging* (Llama 3.1 8B-Instruct, ~1000 Hub LoRAs, average accuracy over 62 tasks)."""

from __future__ import annotations

PAPER_SETTING = "Llama 3.1 8B-Instruct, 62 tasks"
# our method name: (the paper's row label, average accuracy without the target-task LoRA, with it)
TABLE2: dict[str, tuple[str, float, float | None]] = {
    "tsv": ("TSV (30)", 0.488, 0.522),
    "ties": ("TIES (30)", 0.467, 0.466),
    "average_random": ("Simple avg. (30)", 0.496, 0.536),
    "average": ("Simple avg. (all)", 0.495, 0.496),
    "adamerging": ("Adamerging (30)", 0.652, 0.669),
    "pi_tuning": ("π-Tuning (20)", 0.668, 0.668),
    "lorahub": ("LoraHub (30)", 0.563, 0.663),
    "ours": ("Ours (30)", 0.652, 0.675),
    "prompting": ("Prompting (zero-shot)", 0.467, None),
    "target_lora": ("LoRA", 0.657, None),
}


def paper_difference(left: tuple[str, bool], right: tuple[str, bool]) -> float | None:
    """The paper's Table 2 difference between two ``(method, with the target LoRA)`` cells, or None."""
    cells = []
    for name, with_target in (left, right):
        row = TABLE2.get(name)
        value = None if row is None else row[2] if with_target else row[1]
        if value is None:
            return None
        cells.append(value)
    return round(cells[0] - cells[1], 6)
