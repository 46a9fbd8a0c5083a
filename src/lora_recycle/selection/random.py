"""Random selection: the baseline strategy of AdaMerging and LoraHub in the paper's comparison."""

from __future__ import annotations

import torch


def select_random(ids: list[str], k: int, seed: int) -> list[str]:
    """k ids uniformly without replacement, from a seeded generator (order of ``ids`` does not matter)."""
    ordered = sorted(ids)
    generator = torch.Generator().manual_seed(seed)
    return [ordered[i] for i in torch.randperm(len(ordered), generator=generator)[:k].tolist()]
