"""Merging coefficients: grouping by granularity and the activation applied to raw values (pure maths)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lora_recycle.adapters.paths import coordinates
from lora_recycle.merging.options import Activation, Granularity, Init

LEAKY_SLOPE = 0.01


def group_key(path: str, granularity: Granularity) -> tuple:
    """The coefficient group a module belongs to, e.g. ``(3, "q_proj")`` at module granularity."""
    c = coordinates(path)
    if granularity == "model":
        return ()
    if granularity == "layer":
        return (c.layer,)
    if granularity == "sublayer":
        return (c.layer, c.sublayer)
    if granularity == "module":
        return (c.layer, c.module_type)
    raise ValueError(f"unknown granularity {granularity!r}")


@dataclass(frozen=True)
class CoefficientGroups:
    """Which group each module uses, and which adapters are present in each group.

    ``presence[g, i]`` is True when adapter ``i`` has at least one module in group ``g``; softmax
    spreads mass only over present adapters, so an adapter absent from a group gets exactly zero.
    """

    granularity: Granularity
    keys: tuple[tuple, ...]
    module_group: dict[str, int]
    presence: torch.Tensor  # [groups, k] bool

    @property
    def num_groups(self) -> int:
        return len(self.keys)

    @property
    def k(self) -> int:
        return self.presence.shape[1]


def coefficient_groups(module_presence: dict[str, Sequence[bool]], granularity: Granularity) -> CoefficientGroups:
    """Build the groups for modules ``path -> [adapter i has this module]`` at a granularity."""
    if not module_presence:
        raise ValueError("no modules to merge")
    k = len(next(iter(module_presence.values())))
    keys: dict[tuple, int] = {}
    module_group: dict[str, int] = {}
    for path in sorted(module_presence, key=lambda p: (coordinates(p), p)):
        module_group[path] = keys.setdefault(group_key(path, granularity), len(keys))
    presence = torch.zeros((len(keys), k), dtype=torch.bool)
    for path, present in module_presence.items():
        presence[module_group[path]] |= torch.tensor(list(present), dtype=torch.bool)
    return CoefficientGroups(granularity, tuple(keys), module_group, presence)


def initial_coefficients(groups: CoefficientGroups, init: Init) -> torch.Tensor:
    """Raw coefficients ``[groups, k]``: zeros, ``1/k``, a constant value, or ``first`` (one-hot on adapter 0).

    ``first`` is a start for the linear and leaky-ReLU activations, where a raw 1 is a coefficient of 1.
    """
    if init == "first":
        raw = torch.zeros((groups.num_groups, groups.k), dtype=torch.float32)
        raw[:, 0] = 1.0
        return raw
    if init == "zero":
        value = 0.0
    elif init == "uniform":
        value = 1.0 / groups.k
    else:
        value = float(init)
    return torch.full((groups.num_groups, groups.k), value, dtype=torch.float32)


def activate(raw: torch.Tensor, activation: Activation, presence: torch.Tensor | None = None) -> torch.Tensor:
    """Apply the coefficient activation to raw ``[groups, k]`` values (softmax per group over k)."""
    if activation == "softmax":
        if presence is not None:
            raw = raw.masked_fill(~presence, float("-inf"))
        return torch.nan_to_num(torch.softmax(raw, dim=-1), nan=0.0)
    if activation == "leaky_relu":
        return F.leaky_relu(raw, LEAKY_SLOPE)
    if activation == "linear":
        return raw
    raise ValueError(f"unknown activation {activation!r}")
