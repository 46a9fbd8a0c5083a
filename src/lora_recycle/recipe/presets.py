"""Merge methods as settings of one adaptive-merge configuration, plus the non-adaptive ones.

Presets are data, not classes (STYLE: variants are settings): ``ours`` is evaluation selection,
gradient tuning, module granularity, leaky-ReLU, zero init, 100 steps at lr 5e-2.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from lora_recycle.merging.coefficients import Activation, Granularity
from lora_recycle.merging.options import Composition, Strategy
from lora_recycle.registry import Registry

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
    prune: float = 0.6  # TIES/DARE: fraction of each task vector dropped (density = 1 - prune)
    coef: float | None = None  # non-adaptive per-adapter coefficient C; None means 1/k
    max_rank: int | None = None  # compress the export to this rank (dense methods default to 64)

    def with_overrides(self, **overrides) -> MergeSettings:
        """A copy with the non-None overrides applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


_PRESETS = {
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
    # Non-adaptive methods on per-module dense deltas (paper appendix D); C = 0.3 and p = 0.6 were
    # among the stable TIES settings of the paper's Table 4.
    "task_arithmetic": MergeSettings("task_arithmetic", adaptive=False, selection="random", tuning="none", coef=0.3),
    "ties": MergeSettings("ties", adaptive=False, selection="random", tuning="none", prune=0.6, coef=0.3),
    "tsv": MergeSettings("tsv", adaptive=False, selection="random", tuning="none"),
    "dare_linear": MergeSettings("dare_linear", adaptive=False, selection="random", tuning="none", prune=0.6,
                                 coef=0.3),
    "dare_ties": MergeSettings("dare_ties", adaptive=False, selection="random", tuning="none", prune=0.6, coef=0.3),
}


PRESETS: Registry[MergeSettings] = Registry("merge method")
for _name, _settings in _PRESETS.items():
    PRESETS.add(_name, _settings)


def preset(name: str) -> MergeSettings:
    """The settings of a named method; unknown names get a one-line error suggesting close ones."""
    return PRESETS.lookup(name)
