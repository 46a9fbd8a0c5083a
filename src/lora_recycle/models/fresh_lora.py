"""pi-Tuning's extra adapter: a fresh LoRA (``A ~ N(0, std)``, ``B = 0``) trained jointly with the merge."""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from lora_recycle.adapters.lora import LoraAdapter, LoraModule, union_paths
from lora_recycle.adapters.lora_config import lora_scale

FRESH_LORA_ID = "fresh-lora"


def fresh_lora(
    model: nn.Module, base_model: str, seed: int, rank: int, alpha: float, target_modules: tuple[str, ...],
    std: float = 0.01,
) -> LoraAdapter:
    """The paper's fresh LoRA: the target-task LoRA's shape and scaling (``alpha / rank``) on every linear
    layer whose name ends in one of ``target_modules`` (SmolLM2: rank 64, alpha 16, all seven projections)."""
    generator = torch.Generator().manual_seed(seed)
    modules = {}
    for path, linear in model.named_modules():
        if isinstance(linear, nn.Linear) and path.rsplit(".", 1)[-1] in target_modules:
            A = torch.randn((rank, linear.in_features), generator=generator) * std
            modules[path] = LoraModule(A, torch.zeros((linear.out_features, rank)), lora_scale(alpha, rank, False))
    return LoraAdapter(modules, FRESH_LORA_ID, base_model, {"use_rslora": False, "lora_alpha": alpha})


def modal_fresh_lora(model: nn.Module, adapters: list[LoraAdapter], seed: int, std: float = 0.01) -> LoraAdapter:
    """The earlier fresh LoRA (``fresh_lora: modal``): the selected adapters' most common rank, scale 1,
    on the modules they touch."""
    rank = Counter(r for a in adapters for r in a.ranks.values()).most_common(1)[0][0]
    generator = torch.Generator().manual_seed(seed)
    modules = {}
    for path in union_paths(adapters):
        linear = model.get_submodule(path)
        A = torch.randn((rank, linear.in_features), generator=generator) * std
        modules[path] = LoraModule(A, torch.zeros((linear.out_features, rank)), 1.0)
    return LoraAdapter(modules, FRESH_LORA_ID, adapters[0].base_model, {"use_rslora": False})
