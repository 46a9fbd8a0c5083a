"""Fold an adapter into a scratch copy of the weights (``W' = W + s B A``) for fast evaluation.

The original weight tensors are kept aside untouched and put back on exit, so the base model is
bit-for-bit unchanged afterwards (no add-then-subtract rounding).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from lora_recycle.adapters.lora import LoraAdapter
from lora_recycle.models.inject import find_linear
from lora_recycle.models.precision import full_precision


@contextmanager
def folded(model: nn.Module, adapter: LoraAdapter | None, weight: float = 1.0):
    """Within the block, ``model`` computes base + ``weight`` * adapter; None leaves the base as is."""
    saved: list[tuple[nn.Linear, nn.Parameter]] = []
    try:
        if adapter is not None:
            for path, module in adapter.modules.items():
                linear = find_linear(model, path, [adapter.adapter_id])
                W = linear.weight
                if (module.out_features, module.in_features) != tuple(W.shape):
                    raise_shape(adapter, path, module, W)
                delta = module.delta(torch.float32).to(W.device) * weight
                saved.append((linear, W))
                # from the fp32 original under a bf16 stand-in: one rounding, as autocast would do
                linear.weight = nn.Parameter((full_precision(W).float() + delta).to(W.dtype), requires_grad=False)
        yield model
    finally:
        for linear, W in reversed(saved):
            linear.weight = W


def raise_shape(adapter: LoraAdapter, path: str, module, W: torch.Tensor) -> None:
    from lora_recycle.errors import UserError

    raise UserError(
        f"adapter {adapter.adapter_id}: module {path} has shape {(module.out_features, module.in_features)}, "
        f"the base model's is {tuple(W.shape)}"
    )
