"""Compute precision: bf16 autocast where the device computes bf16 fast, fp32 master weights always.

``auto`` picks ``bf16`` on CUDA GPUs with bf16 support, and on CPUs whose flags promise native bf16
(``avx512_bf16`` / AMX) *and* where a model-shaped bf16 matmul measures at least
``AUTO_BF16_MIN_SPEEDUP`` times faster than fp32 (bf16 emulated on AVX2 is slower than fp32; the flags
alone once decided). Trainable parameters (LoRA factors, merge coefficients) stay fp32: autocast only
lowers the matmul inputs, the optimiser updates fp32. ``computing_in`` also stores the frozen linear
weights in bf16 for the region, which is what autocast would cast them to on every call.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from lora_recycle.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
AUTO_BF16_MIN_SPEEDUP = 1.3  # below this a measured bf16 gain is within noise of fp32's exact numbers
LOWERED_FROM = "_lora_recycle_lowered_from"  # attribute on a bf16 stand-in weight: the fp32 weight it replaced


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


def cpu_kind() -> str:
    """``bf16`` (native bf16 matmuls: avx512_bf16 / AMX) or ``avx2`` (fp32 only, bf16 emulated), for timings."""
    flags = cpu_flags()
    if any(flag in flags for flag in BF16_CPU_FLAGS):
        return "bf16 (" + ", ".join(f for f in (*BF16_CPU_FLAGS, "amx_tile") if f in flags) + ")"
    return "avx2 (no native bf16)" if "avx2" in flags else "other"


def native_bf16(device: torch.device | str) -> bool:
    """True when ``device`` promises native bf16 matmuls (by its flags), not emulation."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)
    return False


def matmul_seconds(dtype: torch.dtype, device: torch.device | str = "cpu", tokens: int = 512, hidden: int = 576,
                   inter: int = 1536, budget: float = 0.15, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of one ``[tokens, hidden] @ [hidden, inter] @ [inter, hidden]`` (an MLP's matmuls), best of a
    ``budget``-second loop after a warm-up; the default shape is SmolLM2-135M's MLP on a training batch.
    ``clock`` times each call (a bench on a shared machine passes ``time.process_time``)."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    a, w1, w2 = (torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
                 for shape in ((tokens, hidden), (hidden, inter), (inter, hidden)))
    (a @ w1) @ w2
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < budget:
        tick = clock()
        (a @ w1) @ w2
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, clock() - tick)
    return best


@lru_cache(maxsize=8)
def measured_bf16_speedup(device: str) -> float:
    """fp32 time over bf16 time of a model-shaped matmul on ``device`` (measured once per process)."""
    return matmul_seconds(torch.float32, device) / matmul_seconds(torch.bfloat16, device)


def resolve_precision(name: str, device: torch.device | str = "cpu") -> str:
    """``auto`` | ``fp32`` | ``bf16`` to the precision actually used on ``device`` (``fp32`` or ``bf16``)."""
    if name not in PRECISIONS:
        raise UserError(f"unknown precision {name!r}: use one of {', '.join(PRECISIONS)}")
    if name != "auto":
        return name
    device = torch.device(device)
    if not native_bf16(device):
        return "fp32"
    if device.type == "cpu" and measured_bf16_speedup(str(device)) < AUTO_BF16_MIN_SPEEDUP:
        return "fp32"
    return "bf16"


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the enclosed forward passes in ``precision`` (a no-op for fp32).

    The cast cache is off: with it, a trainable fp32 leaf (a LoRA factor) is cast once and the bf16 copy is
    reused until the *outermost* autocast exits, so a training loop nested in another autocast region saw
    its factors frozen at their initial value and never trained. Off, each use casts the current value (the
    cache never held frozen weights: ``lowered_weights`` keeps those in bf16 instead).
    """
    device = torch.device(device)
    if precision != "bf16":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False):
        yield


@contextlib.contextmanager
def attention_for(model: nn.Module, precision: str) -> Iterator[None]:
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


def frozen_fp32_linears(model: nn.Module) -> list[nn.Linear]:
    """The model's ``nn.Linear`` layers whose weight is a frozen fp32 tensor (what autocast recasts per call)."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)
            and m.weight.dtype == torch.float32 and not m.weight.requires_grad]


@contextlib.contextmanager
def lowered_weights(model: nn.Module, precision: str) -> Iterator[None]:
    """Inside the block, frozen fp32 linear weights are bf16 stand-ins (under ``bf16``; a no-op otherwise).

    Autocast without a cache rounds every frozen fp32 weight to bf16 on each call, forward and backward:
    the same numbers, at the cost of reading 4 and writing 2 bytes per parameter per call. The stand-ins
    are new Parameters, so a weight tied to the input embedding (SmolLM2's head) is untied for the block
    and the embedding stays fp32; the originals are put back on exit. A stand-in carries the weight it
    replaced (``full_precision``), so adapters attached or folded in the block see the fp32 numbers.
    """
    if precision != "bf16":
        yield
        return
    swapped = [(linear, linear.weight) for linear in frozen_fp32_linears(model)]
    for linear, weight in swapped:
        stand_in = nn.Parameter(weight.detach().to(torch.bfloat16), requires_grad=False)
        setattr(stand_in, LOWERED_FROM, weight)
        linear.weight = stand_in
    try:
        yield
    finally:
        for linear, weight in swapped:
            linear.weight = weight


def full_precision(weight: torch.Tensor) -> torch.Tensor:
    """The weight a tensor stands for: itself, or the fp32 original a bf16 stand-in of ``lowered_weights`` replaced."""
    return getattr(weight, LOWERED_FROM, weight)


def storage_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype a weight stands for (fp32 for a bf16 stand-in), the dtype adapters attached to it keep."""
    return full_precision(weight).dtype


@contextlib.contextmanager
def unlowered(model: nn.Module) -> Iterator[None]:
    """Inside the block, the fp32 originals replace any bf16 stand-ins (e.g. while PEFT wraps the layers: it
    moves new LoRA factors to the base weight's dtype, which would round their fp32 initialisation)."""
    swapped = [(m, m.weight) for m in model.modules() if isinstance(m, nn.Linear) and hasattr(m.weight, LOWERED_FROM)]
    for linear, stand_in in swapped:
        linear.weight = full_precision(stand_in)
    try:
        yield
    finally:
        for linear, stand_in in swapped:
            linear.weight = stand_in


@contextlib.contextmanager
def computing_in(model: nn.Module, precision: str, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run ``model``'s passes in ``precision``: eager attention for bf16 on CPU, frozen weights stored in bf16,
    autocast. Enter it after anything that edits base weights in place (``folded``), so those edits are kept."""
    with attention_for(model, precision), lowered_weights(model, precision), autocast(precision, device):
        yield
