"""``ModuleMerge``: one module's fixed-coefficient merge, as a merge method's preset holds it (no torch here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lora_recycle.registry import resolve


@dataclass(frozen=True)
class ModuleMerge:
    """One module's fixed-coefficient merge; ``fn`` is a callable or ``"module:function"`` (imported on first use).

    ``factored``: ``fn(modules, weight) -> LoraModule`` works on the LoRA factors and is exact; otherwise
    ``fn(deltas, weights, density, generator) -> delta`` merges dense deltas, exported exactly: by SVD
    when ``low_rank`` (the merge's rank is at most the summed ranks), else as the full-rank delta itself.
    """

    fn: str | Callable
    factored: bool = False
    low_rank: bool = False

    def function(self) -> Callable:
        return resolve(self.fn)


def _at(name: str) -> str:
    return f"lora_recycle.merging.nonadaptive:{name}"


# The per-module merges the presets hold (recipe/presets.py); their maths is in merging/nonadaptive.py.
TASK_ARITHMETIC = ModuleMerge(_at("dense_task_arithmetic"), low_rank=True)
TIES = ModuleMerge(_at("dense_ties"))
DARE_LINEAR = ModuleMerge(_at("dense_dare_linear"))
DARE_TIES = ModuleMerge(_at("dense_dare_ties"))
TSV = ModuleMerge(_at("factored_tsv"), factored=True)
AVERAGE = ModuleMerge(_at("factored_average"), factored=True)
