"""The paper's "with the target-task LoRA" convention: the target LoRA first, then the top k-1 others.

A merge of k adapters with the target-task LoRA holds the target LoRA and k - 1 selected adapters,
so pools with and without it have the same size (paper Q4, Figure 5). Used by ``merge``, ``select``,
the demo, the audit and the experiment runner alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def recycled_count(k: int | None, with_target: bool) -> int | None:
    """How many adapters to select from the pool: ``k - 1`` when the target-task LoRA is one of the k.

    ``None`` (every accepted adapter) stays ``None``.
    """
    if k is None:
        return None
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return k - 1 if with_target else k


def target_first(target: T | None, selected: Sequence[T], k: int | None = None) -> list[T]:
    """``[target, *selected[:k - 1]]`` (or ``selected[:k]`` without a target); ``k=None`` keeps all selected.

    ``selected`` must be ranked best first, so the cut keeps the top k - 1.
    """
    count = recycled_count(k, target is not None)
    chosen = list(selected) if count is None else list(selected)[:count]
    return chosen if target is None else [target, *chosen]
