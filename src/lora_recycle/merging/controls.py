"""Controls that separate transfer from regularisation (pure tensor functions)."""

from __future__ import annotations

from dataclasses import replace

import torch

from lora_recycle.adapters.lora import LoraAdapter, LoraModule
from lora_recycle.merging.options import NoiseStd


def pooled_stds(adapters: list[LoraAdapter]) -> dict[str, tuple[float, float]]:
    """Per module path, the standard deviation of every A entry and of every B entry pooled over ``adapters``.

    The authors' random-init control draws each module's noise with one std computed over all recycled
    (non-target) adapters' factors of that module, whatever their ranks.
    """
    values: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for adapter in adapters:
        for path, module in adapter.modules.items():
            a_parts, b_parts = values.setdefault(path, ([], []))
            a_parts.append(module.A.detach().double().flatten())
            b_parts.append(module.B.detach().double().flatten())
    return {path: (float(torch.cat(a).std()), float(torch.cat(b).std())) for path, (a, b) in values.items()}


def random_init_like(
    adapter: LoraAdapter, seed: int, stds: dict[str, tuple[float, float]] | None = None
) -> LoraAdapter:
    """The same adapter with every A and B replaced by Gaussian noise of the same shape.

    The noise std is ``stds[path]`` (A, B) when given (pooled over the recycled adapters), else this
    adapter's own std of each factor. Keeps ranks, scales and target modules, so a merge over it has
    the same capacity but no knowledge.
    """
    generator = torch.Generator().manual_seed(seed)
    modules = {}
    for path in sorted(adapter.modules):
        module = adapter.modules[path]
        std_a, std_b = stds[path] if stds is not None else (module.A.float().std(), module.B.float().std())
        A = torch.randn(module.A.shape, generator=generator) * std_a
        B = torch.randn(module.B.shape, generator=generator) * std_b
        modules[path] = LoraModule(A.to(module.A.dtype), B.to(module.B.dtype), module.scale)
    return replace(adapter, modules=modules, adapter_id=f"random-init:{adapter.adapter_id}",
                   metadata={**adapter.metadata, "random_init_seed": seed})


def random_init_pool(adapters: list[LoraAdapter], seed: int, noise_std: NoiseStd = "pooled") -> list[LoraAdapter]:
    """The random-init control over recycled adapters (never pass the target-task LoRA here).

    Adapter ``i`` draws from seed ``seed + i``; ``noise_std`` is ``pooled`` (one std per module over
    all of ``adapters``, the authors' code) or ``per_adapter`` (each adapter's own std).
    """
    if noise_std not in ("pooled", "per_adapter"):
        raise ValueError(f"noise_std {noise_std!r}: choose pooled or per_adapter")
    stds = pooled_stds(adapters) if noise_std == "pooled" else None
    return [random_init_like(a, seed + i, stds) for i, a in enumerate(adapters)]
