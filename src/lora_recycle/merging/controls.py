"""Controls that separate transfer from regularisation (pure tensor functions)."""

from __future__ import annotations

from dataclasses import replace

import torch

from lora_recycle.adapters.lora import LoraAdapter, LoraModule


def random_init_like(adapter: LoraAdapter, seed: int) -> LoraAdapter:
    """The same adapter with every A and B replaced by Gaussian noise of the same shape and standard deviation.

    Keeps ranks, scales and target modules, so a merge over it has the same capacity but no knowledge.
    """
    generator = torch.Generator().manual_seed(seed)
    modules = {}
    for path in sorted(adapter.modules):
        module = adapter.modules[path]
        A = torch.randn(module.A.shape, generator=generator) * module.A.float().std()
        B = torch.randn(module.B.shape, generator=generator) * module.B.float().std()
        modules[path] = LoraModule(A.to(module.A.dtype), B.to(module.B.dtype), module.scale)
    return replace(adapter, modules=modules, adapter_id=f"random-init:{adapter.adapter_id}",
                   metadata={**adapter.metadata, "random_init_seed": seed})
