"""Merge methods as settings of one adaptive-merge configuration, plus the non-adaptive ones.

Presets are data, not classes (STYLE: variants are settings): ``ours`` is evaluation selection,
gradient tuning, module granularity, leaky-ReLU, zero init, 100 steps at lr 5e-2.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from lora_recycle.errors import UserError
from lora_recycle.merging.coefficients import Activation, Granularity
from lora_recycle.models.merged_linear import Strategy

Init = Literal["zero", "uniform"] | float


@dataclass(frozen=True)
class MergeSettings:
    """Every choice of one merge; ``adaptive=False`` means fixed coefficients (no tuning)."""

    method: str
    adaptive: bool
    granularity: Granularity = "module"
    activation: Activation = "leaky_relu"
    init: Init = "zero"
    steps: int = 100
    lr: float = 5e-2
    batch_size: int = 8
    eval_every: int = 10
    seed: int = 0
    strategy: Strategy = "auto"

    def with_overrides(self, **overrides) -> MergeSettings:
        """A copy with the non-None overrides applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


PRESETS: dict[str, MergeSettings] = {
    "ours": MergeSettings("ours", adaptive=True, granularity="module", activation="leaky_relu", init="zero"),
    "average": MergeSettings("average", adaptive=False, granularity="model", activation="linear", init="uniform"),
}


def preset(name: str) -> MergeSettings:
    """The settings of a named method; unknown names get a one-line error listing the known ones."""
    if name not in PRESETS:
        raise UserError(f"unknown merge method {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
