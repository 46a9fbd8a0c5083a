"""pi-Tuning's extra adapter: a fresh LoRA on every module the selected adapters touch."""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from lora_recycle.adapters.lora import LoraAdapter, LoraModule, union_paths


def fresh_lora(model: nn.Module, adapters: list[LoraAdapter], seed: int, std: float = 0.01) -> LoraAdapter:
    """Every module any selected adapter touches, ``A ~ N(0, std)``, ``B = 0``.

    Its rank is the most common rank of the selected adapters; its scale is 1.
    """
    rank = Counter(r for a in adapters for r in a.ranks.values()).most_common(1)[0][0]
    generator = torch.Generator().manual_seed(seed)
    modules = {}
    for path in union_paths(adapters):
        linear = model.get_submodule(path)
        A = torch.randn((rank, linear.in_features), generator=generator) * std
        modules[path] = LoraModule(A, torch.zeros((linear.out_features, rank)), 1.0)
    return LoraAdapter(modules, "fresh-lora", adapters[0].base_model, {"use_rslora": False})
