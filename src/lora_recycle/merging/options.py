"""The named options of a merge that the tensor maths and the merged layers share (plain Literals, no torch)."""

from __future__ import annotations

from typing import Literal, get_args

# How a layer computes the merged update (models/merged_linear.py); all are exact, they differ in cost.
Strategy = Literal["auto", "calibrate", "factored", "materialized", "hybrid"]
# ``delta``: sum of scaled products c_i s_i B_i A_i; ``lorahub``: (sum c_i s_i B_i)(sum c_i A_i), LoraHub's rule.
Composition = Literal["delta", "lorahub"]
# Which modules share one coefficient per adapter, and the activation applied to raw coefficients.
Granularity = Literal["model", "layer", "sublayer", "module"]
Activation = Literal["softmax", "leaky_relu", "linear"]
# Initial raw coefficients: zeros, 1/k, a constant, or ``first``: the first adapter at 1 and the rest at 0
# (with the target-task LoRA first, the merge starts as that LoRA).
InitName = Literal["zero", "uniform", "first"]
Init = InitName | float
INIT_NAMES: tuple[str, ...] = get_args(InitName)
# Random-init control: noise std per module pooled over the recycled adapters, or each adapter's own.
NoiseStd = Literal["pooled", "per_adapter"]
