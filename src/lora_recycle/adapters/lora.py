"""The canonical LoRA representation every part of lora-recycle works on (DESIGN section 2)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import torch

from lora_recycle.adapters.paths import Coordinates, coordinates


@dataclass(frozen=True)
class LoraModule:
    """One LoRA module: ``A [r, in]``, ``B [out, r]`` and ``scale``; its task vector is ``scale * B @ A``."""

    A: torch.Tensor
    B: torch.Tensor
    scale: float

    def __post_init__(self) -> None:
        if self.A.dim() != 2 or self.B.dim() != 2 or self.A.shape[0] != self.B.shape[1]:
            raise ValueError(f"inconsistent LoRA factors: A {tuple(self.A.shape)}, B {tuple(self.B.shape)}")

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    @property
    def in_features(self) -> int:
        return self.A.shape[1]

    @property
    def out_features(self) -> int:
        return self.B.shape[0]

    def delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense task vector ``scale * B @ A`` of shape ``[out, in]``: build it one module at a time."""
        return self.scale * (self.B.to(dtype) @ self.A.to(dtype))

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> LoraModule:
        return replace(self, A=self.A.to(device=device, dtype=dtype), B=self.B.to(device=device, dtype=dtype))

    def delta_norm(self) -> float:
        """``||scale * B @ A||_F`` in float64 without building the product: ``sqrt(tr((B^T B)(A A^T)))``."""
        A, B = self.A.detach().double(), self.B.detach().double()
        return abs(self.scale) * float(((B.T @ B) * (A @ A.T)).sum().clamp(min=0)) ** 0.5


@dataclass
class LoraAdapter:
    """A LoRA adapter: canonical module path -> LoraModule, plus where it came from.

    ``metadata`` carries id, source, base model, license, alpha, rsLoRA flag and file hashes as read.
    """

    modules: dict[str, LoraModule]
    adapter_id: str = ""
    base_model: str | None = None
    metadata: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.modules)

    @property
    def ranks(self) -> dict[str, int]:
        return {path: module.rank for path, module in self.modules.items()}

    @property
    def module_types(self) -> list[str]:
        """Sorted module types (``q_proj`` ...) this adapter touches in at least one layer."""
        return sorted({coordinates(path).module_type for path in self.modules})

    def coordinates(self) -> dict[str, Coordinates]:
        return {path: coordinates(path) for path in self.modules}

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> LoraAdapter:
        modules = {path: module.to(dtype, device) for path, module in self.modules.items()}
        return replace(self, modules=modules)


def union_paths(adapters: Iterable[LoraAdapter]) -> list[str]:
    """Every module path any of the adapters touches, in a stable (layer, sublayer, type) order."""
    paths = {path for adapter in adapters for path in adapter.modules}
    return sorted(paths, key=lambda p: (coordinates(p), p))
