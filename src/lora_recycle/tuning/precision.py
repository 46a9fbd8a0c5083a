"""Training precision: bf16 autocast where the hardware computes bf16 natively, fp32 master weights always.

``auto`` picks ``bf16`` on CUDA GPUs with bf16 support and on CPUs with ``avx512_bf16`` or AMX (where
bf16 matmuls run about 2.5x faster than fp32), else ``fp32``. Trainable parameters (LoRA factors,
merge coefficients) stay fp32: autocast only lowers the matmul inputs, the optimiser updates fp32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import torch

from lora_recycle.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from ``/proc/cpuinfo`` (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16(device: torch.device | str) -> bool:
    """True when ``device`` computes bf16 matmuls natively (fast), not by emulation."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)
    return False


def resolve_precision(name: str, device: torch.device | str = "cpu") -> str:
    """``auto`` | ``fp32`` | ``bf16`` to the precision actually used on ``device`` (``fp32`` or ``bf16``)."""
    if name not in PRECISIONS:
        raise UserError(f"unknown precision {name!r}: use one of {', '.join(PRECISIONS)}")
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return name


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the enclosed forward passes in ``precision`` (a no-op for fp32).

    The cast cache is off: with it, a trainable fp32 leaf (a LoRA factor) is cast once and the bf16 copy is
    reused until the *outermost* autocast exits, so a training loop nested in another autocast region saw
    its factors frozen at their initial value and never trained. Off, each use casts the current value (the
    same numbers where nothing was nested; frozen base weights were never cached).
    """
    device = torch.device(device)
    if precision != "bf16":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False):
        yield


@contextlib.contextmanager
def attention_for(model: torch.nn.Module, precision: str) -> Iterator[None]:
    """Use eager attention while training in bf16 on CPU (PyTorch's CPU flash kernel is ~5x slower in bf16).

    Restores the model's attention implementation afterwards; models without the switch are left as they are.
    """
    setter = getattr(model, "set_attn_implementation", None)
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    device = next(model.parameters()).device
    if precision != "bf16" or device.type != "cpu" or setter is None or before in (None, "eager"):
        yield
        return
    setter("eager")
    try:
        yield
    finally:
        setter(before)
