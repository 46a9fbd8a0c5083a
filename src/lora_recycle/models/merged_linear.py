"""``MergedLoraLinear``: a frozen linear layer plus k LoRA modules mixed by merging coefficients.

Three exact ways to compute ``y = x W^T + b + sum_i c_i s_i (x A_i^T) B_i^T`` (DESIGN section 8):
``factored`` never forms a dense update; ``materialized`` forms ``W + delta`` once per step;
``hybrid`` forwards through the merged weight but gets coefficient gradients from the factored
identity ``dL/dcol_r = sum_t (g B)_{t,r} (x A^T)_{t,r}``. ``auto`` picks per layer and call by a FLOP
model (deterministic: same shapes, same path, same numbers); ``calibrate`` behaves like ``auto`` until
``MergedModel.calibrate`` times the candidates on a real batch and fixes the fastest, trading
bit-for-bit reproducibility across machines for speed (all paths agree to float rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lora_recycle.adapters.lora import LoraModule
from lora_recycle.merging.options import Composition, Strategy
from lora_recycle.models.precision import storage_dtype


class _HybridMergedLinear(torch.autograd.Function):
    """Forward through ``W + B diag(col) A``; backward gives grads for ``x`` and ``col`` only."""

    @staticmethod
    def forward(ctx, x, col, weight, bias, A, B):  # noqa: D401 - autograd signature
        merged = torch.addmm(weight, B * col.to(B.dtype), A)
        ctx.save_for_backward(x, merged, A, B)
        return F.linear(x, merged, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, merged, A, B = ctx.saved_tensors
        dtype = grad_out.dtype  # bf16 when the forward ran under autocast, which backward does not re-enter
        grad_x = (grad_out @ merged.to(dtype)).to(x.dtype) if ctx.needs_input_grad[0] else None
        grad_col = None
        if ctx.needs_input_grad[1]:
            g = grad_out.reshape(-1, grad_out.shape[-1])
            xs = x.reshape(-1, x.shape[-1]).to(dtype)
            grad_col = ((g @ B.to(dtype)) * (xs @ A.to(dtype).T)).float().sum(0)
        return grad_x, grad_col, None, None, None, None


def strategy_costs(rank_sum: int, tokens: int, out_features: int, in_features: int) -> dict[str, float]:
    """Approximate extra FLOPs per training step of each strategy over the frozen layer alone."""
    R, T, n, m = rank_sum, tokens, out_features, in_features
    return {
        "factored": 4.0 * R * (n + m) * T,
        "materialized": 2.0 * n * m * (2 * R + T),
        "hybrid": 2.0 * n * m * R + 2.0 * R * (n + m) * T,
    }


class MergedLoraLinear(nn.Module):
    """A frozen ``nn.Linear`` plus k LoRA modules (None where an adapter lacks this module).

    The LoRA factors are stored concatenated: ``A_cat [R, in]``, ``B_cat [out, R]``, with each rank
    column's scale and adapter index. ``coefficients`` (shape ``[k]``, set by the owner before each
    forward, part of the autograd graph) weight the adapters; None means the bare base layer.
    """

    def __init__(
        self, base: nn.Linear, loras: list[LoraModule | None], strategy: Strategy = "auto",
        composition: Composition = "delta",
    ):
        super().__init__()
        self.base = base
        self.k = len(loras)
        self.strategy: Strategy = strategy
        self.composition: Composition = composition
        dtype, device = storage_dtype(base.weight), base.weight.device  # fp32 factors under a bf16 stand-in
        present = [(i, m) for i, m in enumerate(loras) if m is not None]
        if present:
            A = torch.cat([m.A for _, m in present]).to(device=device, dtype=dtype)
            B = torch.cat([m.B for _, m in present], dim=1).to(device=device, dtype=dtype)
        else:
            A = torch.zeros((0, base.in_features), dtype=dtype, device=device)
            B = torch.zeros((base.out_features, 0), dtype=dtype, device=device)
        for _, m in present:
            if (m.out_features, m.in_features) != (base.out_features, base.in_features):
                raise ValueError(
                    f"LoRA shape {(m.out_features, m.in_features)} does not fit linear "
                    f"{(base.out_features, base.in_features)}"
                )
        self.A_cat = nn.Parameter(A, requires_grad=False)
        self.B_cat = nn.Parameter(B, requires_grad=False)
        scales = [m.scale for _, m in present for _ in range(m.rank)]
        segment = [i for i, m in present for _ in range(m.rank)]
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32, device=device), persistent=False)
        self.register_buffer("segment", torch.tensor(segment, dtype=torch.long, device=device), persistent=False)
        # position of each rank column inside its own adapter: LoraHub's zero-padded sum of factors
        slot = [j for _, m in present for j in range(m.rank)]
        self.register_buffer("slot", torch.tensor(slot, dtype=torch.long, device=device), persistent=False)
        self.max_rank = max((m.rank for _, m in present), default=0)
        self.ranks = [m.rank if m is not None else 0 for m in loras]
        self.coefficients: torch.Tensor | None = None
        self._lowered: tuple[int, int, torch.Tensor, torch.Tensor] | None = None  # (versions, A, B) under autocast

    @property
    def rank_sum(self) -> int:
        return self.A_cat.shape[0]

    def column_weights(self) -> torch.Tensor:
        """Per rank column ``c_i * s_i`` (shape ``[R]``), float32."""
        return self.coefficients.float()[self.segment] * self.scales

    def choose_strategy(self, tokens: int) -> str:
        if self.strategy not in ("auto", "calibrate"):
            return self.strategy
        costs = strategy_costs(self.rank_sum, tokens, self.base.out_features, self.base.in_features)
        if self.A_cat.requires_grad or self.B_cat.requires_grad:
            costs.pop("hybrid")  # hybrid gives gradients for coefficients only
        return min(costs, key=costs.get)

    def matmul_factors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A_cat, B_cat)`` as this forward's matmuls read them: under autocast, frozen factors as cached copies
        in the autocast dtype (what autocast would cast them to on every call, cast once per change instead)."""
        device = x.device.type
        if self.A_cat.requires_grad or self.B_cat.requires_grad or not torch.is_autocast_enabled(device):
            return self.A_cat, self.B_cat
        dtype = torch.get_autocast_dtype(device)
        key = (self.A_cat._version, self.B_cat._version)
        if self._lowered is None or self._lowered[:2] != key or self._lowered[2].dtype != dtype:
            self._lowered = (*key, self.A_cat.detach().to(dtype), self.B_cat.detach().to(dtype))
        return self._lowered[2], self._lowered[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.coefficients is None or self.rank_sum == 0:
            return self.base(x)
        if self.composition == "lorahub":
            A_sum, B_sum = self.lorahub_factors()
            return self.base(x) + F.linear(F.linear(x, A_sum), B_sum)
        col = self.column_weights()
        strategy = self.choose_strategy(x.numel() // x.shape[-1])
        A, B = self.matmul_factors(x)
        if strategy == "factored":
            hidden = F.linear(x, A) * col.to(x.dtype)
            return self.base(x) + F.linear(hidden, B)
        if strategy == "materialized":  # B * col in B's own precision, as before the factors were cached
            weight = torch.addmm(self.base.weight, self.B_cat * col.to(self.B_cat.dtype), A)
            return F.linear(x, weight, self.base.bias)
        if strategy == "hybrid":
            if self.A_cat.requires_grad or self.B_cat.requires_grad:
                raise ValueError("the hybrid strategy cannot train LoRA factors; use factored or materialized")
            return _HybridMergedLinear.apply(x, col, self.base.weight, self.base.bias, self.A_cat, self.B_cat)
        raise ValueError(f"unknown strategy {strategy!r}")

    def lorahub_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """LoraHub's rule: ``(sum_i c_i s_i B_i, sum_i c_i A_i)`` with ranks zero-padded to the largest.

        Returns ``(A_sum [r_max, in], B_sum [out, r_max])``; cross terms ``c_i c_j s_i B_i A_j`` are kept.
        """
        c = self.coefficients.float()[self.segment]
        dtype = self.A_cat.dtype
        A_sum = torch.zeros((self.max_rank, self.A_cat.shape[1]), dtype=dtype, device=self.A_cat.device)
        A_sum = A_sum.index_add(0, self.slot, self.A_cat * c.to(dtype)[:, None])
        B_sum = torch.zeros((self.B_cat.shape[0], self.max_rank), dtype=dtype, device=self.B_cat.device)
        B_sum = B_sum.index_add(1, self.slot, self.B_cat * (c * self.scales).to(dtype)[None, :])
        return A_sum, B_sum

    def export_factors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Exact ``(A, B)`` (scale 1) of this layer's merged update at the current coefficients, float32.

        Rank columns whose weight is exactly zero are dropped; None when nothing remains.
        """
        with torch.no_grad():
            if self.composition == "lorahub":
                A, B = (t.float() for t in self.lorahub_factors())
                return (A, B) if bool(B.any()) and bool(A.any()) else None
            col = self.column_weights()
            keep = col != 0
            if not bool(keep.any()):
                return None
            return self.A_cat.float()[keep], self.B_cat.float()[:, keep] * col[keep]

    def merged_delta(self) -> torch.Tensor:
        """The dense update ``sum_i c_i s_i B_i A_i`` (``[out, in]``) at the current coefficients."""
        factors = self.export_factors()
        if factors is None:
            return torch.zeros_like(self.base.weight, dtype=torch.float32)
        A, B = factors
        return B @ A
