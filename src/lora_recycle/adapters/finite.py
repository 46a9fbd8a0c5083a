"""Finiteness checks on LoRA factors: nothing with a NaN or Inf is read into a merge or written out."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from lora_recycle.adapters.lora import LoraAdapter
from lora_recycle.adapters.untrusted import AdapterProblem


def first_nonfinite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The first name whose tensor holds a NaN or an infinity, else None (one pass per tensor)."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def require_finite(adapter: LoraAdapter, what: str) -> None:
    """Refuse an adapter whose factors or scales are not all finite (``nonfinite`` AdapterProblem)."""
    for path, module in adapter.modules.items():
        if not math.isfinite(module.scale):
            raise AdapterProblem("nonfinite", f"{what}: module {path} has scale {module.scale}")
        bad = first_nonfinite({"lora_A": module.A, "lora_B": module.B})
        if bad is not None:
            raise AdapterProblem("nonfinite", f"{what}: module {path} has NaN or Inf in {bad}")


def require_finite_tensors(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse to write tensors with a NaN or Inf (e.g. a scale that overflowed the export dtype)."""
    bad = first_nonfinite(tensors)
    if bad is not None:
        raise AdapterProblem("nonfinite", f"{what}: tensor {bad} has NaN or Inf; nothing written")


def require_representable(adapter: LoraAdapter, dtype: torch.dtype, what: str) -> None:
    """Refuse to write an adapter whose update ``s B A`` would overflow ``dtype`` where it is served, though
    each factor fits (``||s B A||_F`` bounds every entry of the product)."""
    largest = torch.finfo(dtype).max
    for path, module in adapter.modules.items():
        norm = module.delta_norm()
        if not norm <= largest:
            raise AdapterProblem("nonfinite", f"{what}: module {path} has ||s B A||_F = {norm:.3g}, beyond "
                                 f"{str(dtype).removeprefix('torch.')}'s {largest:.3g}; nothing written")
