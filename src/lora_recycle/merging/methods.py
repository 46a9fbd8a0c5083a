"""Merge methods as settings of one adaptive-merge configuration, plus the non-adaptive ones.

Presets are data, not classes (STYLE: variants are settings): ``ours`` is evaluation selection,
gradient tuning, module granularity, leaky-ReLU, zero init, 100 steps at lr 5e-2.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from lora_recycle.errors import UserError
from lora_recycle.merging.coefficients import Activation, Granularity
from lora_recycle.models.merged_linear import Composition, Strategy

Init = Literal["zero", "uniform"] | float
Tuning = Literal["none", "gradient", "gradient_free", "joint"]
Selection = Literal["all", "random", "evaluation", "cosine", "clamp", "abs", "quasi_fim"]


@dataclass(frozen=True)
class MergeSettings:
    """Every choice of one merge; ``adaptive=False`` means fixed coefficients (no tuning)."""

    method: str
    adaptive: bool
    selection: Selection = "all"
    tuning: Tuning = "gradient"
    k: int | None = None
    composition: Composition = "delta"
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
    # Paper Table 1 and appendix C.1; k defaults to 30 (20 for pi-Tuning) when selecting from a catalog.
    "ours": MergeSettings("ours", adaptive=True, selection="evaluation", tuning="gradient", granularity="module",
                          activation="leaky_relu", init="zero", steps=100, lr=5e-2),
    "adamerging": MergeSettings("adamerging", adaptive=True, selection="random", tuning="gradient",
                                granularity="module", activation="linear", init="uniform", steps=100, lr=5e-2),
    "pi_tuning": MergeSettings("pi_tuning", adaptive=True, selection="quasi_fim", tuning="joint", k=20,
                               granularity="module", activation="softmax", init="zero", steps=100, lr=1e-4),
    "lorahub": MergeSettings("lorahub", adaptive=True, selection="random", tuning="gradient_free",
                             granularity="model", activation="linear", init="zero", steps=100,
                             composition="lorahub"),
    "average": MergeSettings("average", adaptive=False, selection="all", tuning="none", granularity="model",
                             activation="linear", init="uniform"),
}


def preset(name: str) -> MergeSettings:
    """The settings of a named method; unknown names get a one-line error listing the known ones."""
    if name not in PRESETS:
        raise UserError(f"unknown merge method {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
